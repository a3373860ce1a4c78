"""Join trajectory files of the same parameter set into one (pypet's ``f_merge`` and
``merge_all_in_folder``).

Each input file is rewritten as a shard of a new, combined sweep (its runs renumbered after the
runs of the files before it) and the shards go through the ordinary :func:`merge`: there is one
merge path.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ExplorationError, StorageError, check_type
from .exploration import Plan
from .formats.trajfile import export_runs, load_trajectory, write_skeleton
from .merge import MergeReport, merge
from .model import Trajectory
from .workdir import plan_hash


def combine(inputs: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str],
            remove_duplicates: bool = False, trial_parameter: str | None = None,
            name: str | None = None) -> MergeReport:
    """Write ``output`` holding the runs of every file of ``inputs``, one after the other.

    ``remove_duplicates`` drops runs whose explored point an earlier file already has; ``trial_parameter`` names an integer parameter counting
    repetitions: each file's trials are renumbered to follow those before. A parameter that is
    explored in one file, or whose default differs, is explored in the result. Different
    parameter sets are refused; nothing is written then.
    """
    check_type(inputs, (list, tuple), "combine(inputs=...)", "a list of trajectory files")
    if len(inputs) < 2:
        raise ExplorationError(f"combine needs at least two trajectory files, got {len(inputs)}")
    out = Path(output)
    if out.exists():
        raise StorageError(f"{out} exists; combine writes a new file")
    paths = [Path(p) for p in inputs]
    trajs = [load_trajectory(p) for p in paths]
    first, params = trajs[0], set(trajs[0].state.leaves["parameters"])
    for path, traj in zip(paths[1:], trajs[1:], strict=True):
        other = set(traj.state.leaves["parameters"])
        if other != params:
            raise ExplorationError(
                f"{paths[0]} and {path} have different parameters (only in the first: "
                f"{sorted(params - other) or 'none'}; only in the second: {sorted(other - params) or 'none'})")
    if trial_parameter is not None and trial_parameter not in params:
        raise ExplorationError(f"trial parameter {trial_parameter!r} is not a parameter of {paths[0]}")
    points = [t.state.points() for t in trajs]
    if trial_parameter is not None:
        top = max(int(v) for v in points[0][trial_parameter])
        for p in points[1:]:
            shift = top + 1 - min(int(v) for v in p[trial_parameter])
            p[trial_parameter] = [int(v) + shift for v in p[trial_parameter]]
            top = max(p[trial_parameter])
    varying = [n for n in sorted(params)
               if len({repr(v) for p in points for v in p[n]}) > 1 or any(n in t.state.explored for t in trajs)]
    varying = varying or sorted(params)[:1]
    keep: list[list[int]] = []
    seen: set[tuple[str, ...]] = set()
    for traj, p in zip(trajs, points, strict=True):
        keys = [tuple(repr(p[n][i]) for n in varying) for i in range(len(traj))]
        keep.append([i for i, key in enumerate(keys) if not remove_duplicates or key not in seen])
        seen.update(keys)
    combined = Trajectory(name or first.name, comment=first.comment)
    for branch, leaves in first.state.leaves.items():
        for leaf in leaves.values():
            combined.add_leaf(branch, leaf)
    combined.explore({n: [p[n][i] for p, kept in zip(points, keep, strict=True) for i in kept] for n in varying})
    plan = Plan.make(len(combined), runs_per_task=max(1, len(combined)))
    digest = plan_hash(combined, plan)
    record: list[dict[str, Any]] = []
    offset = 0
    for path, traj, kept in zip(paths, trajs, keep, strict=True):
        record.append({"file": str(path.resolve()), "name": traj.name, "runs": len(traj), "kept": len(kept),
                       "offset": offset, "remove_duplicates": remove_duplicates,
                       "trial_parameter": trial_parameter})
        offset += len(kept)
    with tempfile.TemporaryDirectory(prefix=".pypet-combine-", dir=out.parent) as tmp_s:
        tmp = Path(tmp_s)
        skeleton = tmp / "skeleton.h5"
        write_skeleton(skeleton, combined, len(combined), digest, merged_from=json.dumps(record), combined=time.time())
        shards = []
        for k, (path, kept, entry) in enumerate(zip(paths, keep, record, strict=True)):
            shards.append(tmp / f"input_{k:06d}.h5")
            export_runs(path, shards[-1], kept, entry["offset"], digest, k)
        return merge(skeleton, shards, out, digest)


def merge_all_in_folder(folder: str | os.PathLike[str], output: str | os.PathLike[str] | None = None,
                        remove_duplicates: bool = False, trial_parameter: str | None = None) -> MergeReport:
    """Combine every trajectory file (``*.h5``, sorted by name) of ``folder`` into ``output``
    (default: ``<folder>/merged.h5``), as pypet's ``merge_all_in_folder``."""
    check_type(folder, (str, os.PathLike), "merge_all_in_folder(folder)", "a path")
    base = Path(folder)
    if not base.is_dir():
        raise StorageError(f"{base}: no such folder")
    target = Path(output) if output is not None else base / "merged.h5"
    files = sorted(p for p in base.glob("*.h5") if p.resolve() != target.resolve() and not p.name.startswith("."))
    return combine(files, target, remove_duplicates, trial_parameter)
