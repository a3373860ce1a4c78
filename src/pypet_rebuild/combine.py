"""Join two trajectory files of the same parameter set into one (pypet's ``f_merge``).

Each input file is rewritten as a shard of a new, combined sweep (its runs renumbered after the
runs before it) and the shards go through the ordinary :func:`merge`: there is one merge path.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from .errors import ExplorationError, StorageError
from .exploration import Plan
from .merge import MergeReport, merge
from .model import RUN_BRANCHES, Trajectory
from .naming import run_name, run_set_name
from .shards import create_shard
from .storage import get_attr, load_trajectory, open_h5, set_attrs, trajectory_group, write_skeleton
from .workdir import plan_hash

SMALL_BYTES = 64 << 20


def combine(a: str | Path, b: str | Path, output: str | Path, remove_duplicates: bool = False,
            trial_parameter: str | None = None, name: str | None = None) -> MergeReport:
    """Write ``output`` holding the runs of ``a`` followed by the runs of ``b``.

    ``remove_duplicates`` drops runs of ``b`` whose explored point already is in ``a``;
    ``trial_parameter`` names an integer parameter counting repetitions: ``b``'s trials are
    renumbered to follow ``a``'s. A parameter that is explored in one file, or whose default
    differs, is explored in the result. Different parameter sets are refused.
    """
    ta, tb = load_trajectory(a), load_trajectory(b)
    pa, pb = set(ta.state.leaves["parameters"]), set(tb.state.leaves["parameters"])
    if pa != pb:
        raise ExplorationError(
            f"{a} and {b} have different parameters (only in the first: {sorted(pa - pb) or 'none'}; "
            f"only in the second: {sorted(pb - pa) or 'none'})")
    points_a, points_b = ta.state.points(), tb.state.points()
    if trial_parameter is not None:
        if trial_parameter not in pa:
            raise ExplorationError(f"trial parameter {trial_parameter!r} is not a parameter of {a}")
        shift = max(int(v) for v in points_a[trial_parameter]) + 1 - min(int(v) for v in points_b[trial_parameter])
        points_b[trial_parameter] = [int(v) + shift for v in points_b[trial_parameter]]
    varying = [n for n in sorted(pa) if len({repr(v) for v in points_a[n] + points_b[n]}) > 1
               or n in ta.state.explored or n in tb.state.explored]
    keep_b = list(range(len(tb)))
    if remove_duplicates:
        seen = {tuple(repr(points_a[n][i]) for n in varying) for i in range(len(ta))}
        keep_b = [i for i in keep_b if tuple(repr(points_b[n][i]) for n in varying) not in seen]
    combined = Trajectory(name or ta.name, comment=ta.comment)
    for branch, leaves in ta.state.leaves.items():
        for leaf in leaves.values():
            combined.add_leaf(branch, leaf)
    combined.explore({n: points_a[n] + [points_b[n][i] for i in keep_b] for n in varying} or
                     {sorted(pa)[0]: points_a[sorted(pa)[0]] + [points_b[sorted(pa)[0]][i] for i in keep_b]})
    plan = Plan.make(len(combined), runs_per_task=max(1, len(combined)))
    digest = plan_hash(combined, plan)
    record = [{"file": str(Path(a).resolve()), "name": ta.name, "runs": len(ta), "kept": len(ta), "offset": 0},
              {"file": str(Path(b).resolve()), "name": tb.name, "runs": len(tb), "kept": len(keep_b),
               "offset": len(ta), "remove_duplicates": remove_duplicates, "trial_parameter": trial_parameter}]
    with tempfile.TemporaryDirectory(prefix=".pypet-combine-", dir=Path(output).parent) as tmp_s:
        tmp = Path(tmp_s)
        skeleton = tmp / "skeleton.h5"
        with h5py.File(skeleton, "w") as f:
            write_skeleton(f, combined, len(combined), digest, merged_from=json.dumps(record), combined=time.time())
        shards = [tmp / "a.h5", tmp / "b.h5"]
        file_as_shard(Path(a), shards[0], list(range(len(ta))), 0, digest, 0)
        file_as_shard(Path(b), shards[1], keep_b, len(ta), digest, 1)
        out = Path(output)
        if out.exists():
            raise StorageError(f"{out} exists; combine writes a new file")
        return merge(skeleton, shards, out, digest)


def file_as_shard(path: Path, shard: Path, runs: list[int], offset: int, digest: str, task: int) -> None:
    """Rewrite the given runs of a trajectory file as a complete shard, run i becoming offset + k."""
    new_index = {r: offset + k for k, r in enumerate(runs)}
    sel = np.array(runs, dtype=np.int64)
    with open_h5(path) as src_f:
        src = trajectory_group(src_f)
        f = create_shard(shard, digest, task)
        try:
            info = src["run_info"]
            status = info["status"][()][sel]
            done = status > 0
            rows = sel[done]
            new = np.array([new_index[r] for r in rows.tolist()], dtype=np.int64)
            _fill(f["run_info/idx"], new)
            for col in ("status", "start", "end"):
                _fill(f["run_info"][col], info[col][()][rows])
            for col in ("host", "job"):
                _fill(f["run_info"][col], np.asarray(info[col].asstr()[()], dtype=object)[rows])
            err = src["errors"]
            eidx = err["idx"][()]
            ekeep = np.isin(eidx, rows)
            _fill(f["errors/idx"], np.array([new_index[int(r)] for r in eidx[ekeep]], dtype=np.int64))
            for col in ("type", "message", "traceback"):
                _fill(f["errors"][col], np.asarray(err[col].asstr()[()], dtype=object)[ekeep])
            for branch in RUN_BRANCHES:
                _copy_run_data(src[branch].get("runs"), f, branch, rows, new_index)
            set_attrs(f, complete=True, source=str(path))
        finally:
            f.close()


def _fill(ds: h5py.Dataset, data: np.ndarray) -> None:
    ds.resize((len(data), *ds.shape[1:]))
    if len(data):
        ds[...] = data


def _copy_run_data(runs_grp: h5py.Group | None, f: h5py.File, branch: str, rows: np.ndarray,
                   new_index: dict[int, int]) -> None:
    if runs_grp is None:
        return
    cols = runs_grp.get("columns")
    for name, col in (cols.items() if cols is not None else []):
        mask = runs_grp["masks"][name][()]
        have = rows[mask[rows]]
        grp = f["columns"].create_group(f"{branch}.{name}")
        set_attrs(grp, kind=get_attr(col, "kind"), dtype=get_attr(col, "dtype"))
        grp.attrs["shape"] = np.array(col.shape[1:], dtype=np.int64)
        grp.create_dataset("idx", data=np.array([new_index[int(r)] for r in have], dtype=np.int64))
        values = grp.create_dataset("values", shape=(len(have), *col.shape[1:]), dtype=col.dtype,
                                    chunks=(1, *col.shape[1:]) if col.chunks and col.chunks[0] == 1 else None)
        if col.size * col.dtype.itemsize <= SMALL_BYTES:
            if len(have):
                values[...] = col[()][have]
        else:
            for k, r in enumerate(have.tolist()):  # row by row: bounded memory for big rows
                values[k] = col[r]
    wanted = set(rows.tolist())
    for set_name, run_set in runs_grp.items():
        if not set_name.startswith("run_set_"):
            continue
        for rname, rgrp in run_set.items():
            r = int(rname[4:])
            if r not in wanted:
                continue
            target = f["items"].require_group(f"{run_set_name(new_index[r])}/{run_name(new_index[r])}")
            for leaf in rgrp:
                rgrp.copy(leaf, target, name=f"{branch}.{leaf}")
