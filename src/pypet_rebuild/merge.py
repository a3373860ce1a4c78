"""Merge per-task shards into one trajectory file: locked, atomic, incremental, idempotent.

The merge copies the current target (or the workdir's skeleton when there is none yet) to a
temporary file beside it, adds every complete shard it has not merged before, and replaces the
target with ``os.replace``. A merge killed at any point leaves the previous target untouched.
Columns are copied row block by row block (bounded memory); per-run objects with H5Ocopy.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from filelock import FileLock, Timeout

from .codec import STR_DTYPE, column_element, read_value, write_value
from .errors import StorageError
from .naming import run_name, run_set_name
from .shards import SHARD_KIND
from .storage import FAILED, MISSING, OK, ROOT, get_attr, open_h5, set_attrs, trajectory_group

log = logging.getLogger(__name__)
BLOCK_BYTES = 32 << 20  # rows of a column copied per step: bounds merge memory


@dataclass
class MergeReport:
    """What a merge did and what is still missing."""

    target: Path
    n_runs: int
    merged_shards: list[str] = field(default_factory=list)
    skipped_shards: list[str] = field(default_factory=list)
    ok: int = 0
    failed: int = 0

    @property
    def missing(self) -> int:
        return self.n_runs - self.ok - self.failed

    def summary(self) -> str:
        return (f"{self.target}: {self.ok} ok, {self.failed} failed, {self.missing} missing of "
                f"{self.n_runs} runs ({len(self.merged_shards)} new shards merged)")


def merge(
    skeleton: Path,
    shards: Sequence[Path],
    target: Path,
    plan_hash: str,
    lock_timeout: float = 600.0,
    progress: Callable[[int], None] | None = None,
    provenance: str | None = None,
) -> MergeReport:
    """Merge ``shards`` into ``target``; ``skeleton`` is the file to start from when none exists."""
    target = Path(target)
    if target.is_dir():
        raise StorageError(f"{target}: the merge target is a directory; give a file name")
    if not target.parent.is_dir():
        raise StorageError(f"{target.parent}: no such directory for the merge target")
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=lock_timeout)
    except Timeout:
        raise StorageError(f"{target}: another merge holds {lock.lock_file} for over {lock_timeout:.0f} s") from None
    tmp = target.with_name(f".{target.name}.merging-{os.getpid()}")
    try:
        source = target if target.exists() else skeleton
        shutil.copyfile(source, tmp)
        with h5py.File(tmp, "a", locking="best-effort") as f:
            grp = _only_trajectory(f)
            if get_attr(grp, "plan_hash") != plan_hash:
                raise StorageError(f"{target} holds another sweep (plan hash differs); choose another -o")
            report = _Merger(grp, plan_hash, target).run(shards, progress)
            if provenance is not None:
                set_attrs(grp, provenance=provenance)
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return report
    finally:
        if tmp.exists():
            tmp.unlink()
        lock.release()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_rows(idx: np.ndarray) -> np.ndarray:
    """Row positions holding each run's last row, ordered by run index (the last row wins)."""
    runs, first_rev = np.unique(idx[::-1], return_index=True)
    return len(idx) - 1 - first_rev


def _scatter(ds: h5py.Dataset, runs: np.ndarray, values: Any) -> None:
    """``ds[runs] = values`` for sorted runs, as one read-modify-write of the covering block."""
    lo, hi = int(runs[0]), int(runs[-1]) + 1
    block = np.asarray(ds.asstr()[lo:hi], dtype=object) if ds.dtype == STR_DTYPE else ds[lo:hi]
    block[runs - lo] = values
    ds[lo:hi] = block


def _only_trajectory(f: h5py.File) -> h5py.Group:
    if ROOT not in f or len(f[ROOT]) != 1:
        raise StorageError(f"{f.filename}: expected exactly one trajectory")
    return trajectory_group(f)


class _Merger:
    def __init__(self, grp: h5py.Group, plan_hash: str, target: Path) -> None:
        self.grp = grp
        self.plan_hash = plan_hash
        self.n = int(get_attr(grp, "n_runs"))
        self.report = MergeReport(target=target, n_runs=self.n)
        log_grp = grp.require_group("merge_log")
        self.merged_ids = set(json.loads(get_attr(log_grp, "shard_ids", "[]")))
        self.log_grp = log_grp
        self.item_counts: dict[str, dict[str, int]] = {
            b: json.loads(get_attr(grp[b].require_group("runs"), "item_counts", "{}"))
            for b in ("results", "derived_parameters")
        }
        err = grp["errors"]
        self.errors: dict[int, tuple[str, str, str]] = {
            int(i): (t, m, tb) for i, t, m, tb in zip(
                err["idx"][()], err["type"].asstr()[()], err["message"].asstr()[()],
                err["traceback"].asstr()[()], strict=True)
        }

    def run(self, shards: Sequence[Path], progress: Callable[[int], None] | None) -> MergeReport:
        opened: list[tuple[Path, h5py.File]] = []
        try:
            for path in sorted(shards):
                f = open_h5(path)
                opened.append((path, f))
                if get_attr(f, "kind") != SHARD_KIND:
                    raise StorageError(f"{path}: not a pypet-hpc shard")
                if get_attr(f, "plan_hash") != self.plan_hash:
                    raise StorageError(f"{path}: shard of another sweep (plan hash differs); refusing to merge it")
                if not f.attrs.get("complete", False):
                    raise StorageError(f"{path}: shard is not complete")
            fresh = [(p, f) for p, f in opened if get_attr(f, "shard_id") not in self.merged_ids]
            self.report.skipped_shards = [p.name for p, f in opened if get_attr(f, "shard_id") in self.merged_ids]
            counts = self._value_counts(fresh)
            for path, f in fresh:
                self._merge_one(f, counts)
                self.merged_ids.add(get_attr(f, "shard_id"))
                self.report.merged_shards.append(path.name)
                if progress is not None:
                    progress(1)
        finally:
            for _, f in opened:
                f.close()
        self._write_errors()
        set_attrs(self.log_grp, shard_ids=json.dumps(sorted(self.merged_ids)))
        for branch, counts_b in self.item_counts.items():
            set_attrs(self.grp[branch]["runs"], item_counts=json.dumps(counts_b))
        status = self.grp["run_info/status"][()]
        self.report.ok = int(np.count_nonzero(status == OK))
        self.report.failed = int(np.count_nonzero(status == FAILED))
        return self.report

    def _value_counts(self, fresh: list[tuple[Path, h5py.File]]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, f in fresh:
            for key, cgrp in f["columns"].items():
                counts[key] = counts.get(key, 0) + cgrp["idx"].shape[0]
        for branch, names in self.item_counts.items():
            for name, c in names.items():
                counts[f"{branch}.{name}"] = counts.get(f"{branch}.{name}", 0) + c
        return counts

    def _merge_one(self, f: h5py.File, counts: dict[str, int]) -> None:
        idx = f["run_info/idx"][()]
        if not len(idx):
            return
        if idx.min() < 0 or idx.max() >= self.n:
            raise StorageError(f"{f.filename}: run index out of range for a {self.n}-run sweep")
        keep = _last_rows(idx)
        runs = idx[keep]
        info = self.grp["run_info"]
        lo, hi = int(runs.min()), int(runs.max()) + 1
        if np.any(info["status"][lo:hi][runs - lo] != MISSING):
            self._clear_runs(runs)
        src = f["run_info"]
        for col in ("status", "start", "end"):
            _scatter(info[col], runs, src[col][()][keep])
        _scatter(info["host"], runs, np.asarray(src["host"].asstr()[()], dtype=object)[keep])
        _scatter(info["task"], runs, np.full(len(runs), int(get_attr(f, "task")), dtype=np.int32))
        for r in runs.tolist():
            self.errors.pop(r, None)
        err = f["errors"]
        if len(err["idx"]):
            for i, t, m, tb in zip(err["idx"][()], err["type"].asstr()[()], err["message"].asstr()[()],
                                   err["traceback"].asstr()[()], strict=True):
                self.errors[int(i)] = (t, m, tb)
        ok_runs = set(runs[f["run_info/status"][()][keep] == OK].tolist())
        for r in ok_runs & self.errors.keys():
            del self.errors[r]
        for key, cgrp in f["columns"].items():
            self._merge_column(key, cgrp, counts.get(key, 0))
        for run_set in f["items"].values():
            for rname, rgrp in run_set.items():
                for key in rgrp:
                    branch, name = key.split(".", 1)
                    self._put_item(branch, name, int(rname[4:]), rgrp[key], copy=True)

    def _clear_runs(self, runs: np.ndarray) -> None:
        """Drop what earlier merges stored for ``runs`` (a task that was run again)."""
        for branch in ("results", "derived_parameters"):
            base = self.grp[branch]["runs"]
            masks = base.get("masks")
            if masks is not None:
                for name in masks:
                    _scatter(masks[name], runs, False)
            for r in runs.tolist():
                path = f"{run_set_name(r)}/{run_name(r)}"
                if path in base:
                    for name in base[path]:
                        self._count_item(branch, name, -1)
                    del base[path]

    def _merge_column(self, key: str, cgrp: h5py.Group, count: int) -> None:
        branch, name = key.split(".", 1)
        kind, dtype = get_attr(cgrp, "kind"), get_attr(cgrp, "dtype")
        shape = tuple(int(x) for x in cgrp.attrs["shape"])
        runs_grp = self.grp[branch]["runs"]
        cols = runs_grp.require_group("columns")
        masks = runs_grp.require_group("masks")
        if name not in cols and count >= 2:
            self._new_column(cols, masks, name, kind, dtype, shape, cgrp["values"])
            self._fold_items_into_column(branch, name)
        col = cols.get(name)
        idx = cgrp["idx"][()]
        values = cgrp["values"]
        same = col is not None and (get_attr(col, "kind"), get_attr(col, "dtype")) == (kind, dtype) \
            and col.shape[1:] == shape
        if not same:
            for pos, r in enumerate(idx.tolist()):
                self._put_value_item(branch, name, r, kind, values, pos)
            return
        assert col is not None
        row_bytes = max(1, values.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        step = max(1, BLOCK_BYTES // row_bytes)
        keep = _last_rows(idx)
        for start in range(0, len(keep), step):
            sel = keep[start:start + step]
            rows = idx[sel]
            a, b = int(sel.min()), int(sel.max()) + 1
            if kind == "str":
                data = np.asarray(values.asstr()[a:b], dtype=object)[sel - a]
            else:
                data = values[a:b][sel - a]
            lo, hi = int(rows[0]), int(rows[-1]) + 1
            if hi - lo == len(rows):
                col[lo:hi] = data
            else:
                col[rows] = data
            _scatter(masks[name], rows, True)

    def _new_column(self, cols: h5py.Group, masks: h5py.Group, name: str, kind: str, dtype: str,
                    shape: tuple[int, ...], like: h5py.Dataset) -> None:
        row_bytes = max(1, like.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        chunk_rows = int(max(1, min(self.n, 8192, (1 << 20) // row_bytes)))
        dt = STR_DTYPE if kind == "str" else np.dtype(dtype)
        ds = cols.create_dataset(name, shape=(self.n, *shape), dtype=dt, chunks=(chunk_rows, *shape))
        set_attrs(ds, kind=kind, dtype=dtype)
        masks.create_dataset(name, shape=(self.n,), dtype=bool, chunks=(min(self.n, 65536),))

    def _fold_items_into_column(self, branch: str, name: str) -> None:
        """Earlier merges kept ``name`` per run (it was rare); now it recurs: move it to the column."""
        if not self.item_counts[branch].get(name):
            return
        base = self.grp[branch]["runs"]
        col, mask = base["columns"][name], base["masks"][name]
        for set_name, run_set in list(base.items()):
            if not set_name.startswith("run_set_"):
                continue
            for rname, rgrp in run_set.items():
                if name in rgrp:
                    r = int(rname[4:])
                    value = read_value(rgrp[name], allow_pickle=False)
                    try:
                        col[r] = value
                    except (TypeError, ValueError):
                        continue
                    mask[r] = True
                    del rgrp[name]
                    self._count_item(branch, name, -1)

    def _put_value_item(self, branch: str, name: str, run: int, kind: str, values: h5py.Dataset,
                        pos: int) -> None:
        raw = values.asstr()[pos] if kind == "str" else values[pos]
        value = column_element(kind, raw)
        self._put_item(branch, name, run, value, copy=False)

    def _put_item(self, branch: str, name: str, run: int, obj: Any, copy: bool) -> None:
        base = self.grp[branch].require_group("runs")
        rgrp = base.require_group(f"{run_set_name(run)}/{run_name(run)}")
        if name in rgrp:
            del rgrp[name]
        else:
            self._count_item(branch, name, +1)
        if copy:
            rgrp.copy(obj, name)
        else:
            write_value(rgrp, name, obj)
        masks = base.get("masks")
        if masks is not None and name in masks and masks[name][run]:
            masks[name][run] = False

    def _count_item(self, branch: str, name: str, delta: int) -> None:
        counts = self.item_counts[branch]
        counts[name] = counts.get(name, 0) + delta
        if counts[name] <= 0:
            del counts[name]

    def _write_errors(self) -> None:
        err = self.grp["errors"]
        runs = sorted(self.errors)
        err["idx"].resize((len(runs),))
        err["idx"][:] = np.array(runs, dtype=np.int64)
        for i, col in enumerate(("type", "message", "traceback")):
            err[col].resize((len(runs),))
            if runs:
                err[col][:] = np.array([self.errors[r][i] for r in runs], dtype=object)
