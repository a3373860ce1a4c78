"""Merge per-task shards into one trajectory file: locked, atomic, incremental, idempotent.

The merge copies the current target (or the workdir's skeleton when there is none yet) to a
temporary file beside it, adds every complete shard it has not merged before, and replaces the
target with ``os.replace``. A merge killed at any point leaves the previous target untouched.
Columns are copied row block by row block (bounded memory); per-run objects with H5Ocopy.
"""

from __future__ import annotations

import glob
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
from .model import RUN_BRANCHES
from .naming import run_name, run_set_name
from .shards import SHARD_KIND
from .storage import (
    FAILED,
    MISSING,
    OK,
    ROOT,
    fsync_path,
    get_attr,
    open_h5,
    read_column,
    set_attrs,
    trajectory_group,
)

log = logging.getLogger(__name__)
BLOCK_BYTES = 32 << 20  # rows of a column copied per step: bounds merge memory
SMALL_COLUMN_BYTES = 64 << 20  # columns up to this size are updated in memory, written once


@dataclass
class MergeReport:
    """What a merge did and what is still missing."""

    target: Path
    n_runs: int
    merged_shards: list[str] = field(default_factory=list)
    skipped_shards: list[str] = field(default_factory=list)
    damaged_shards: list[str] = field(default_factory=list)  # "name: what is wrong", not merged
    ok: int = 0
    failed: int = 0

    @property
    def missing(self) -> int:
        return self.n_runs - self.ok - self.failed

    def summary(self) -> str:
        new, bad = len(self.merged_shards), len(self.damaged_shards)
        return (f"{self.target}: {self.ok} ok, {self.failed} failed, {self.missing} missing of "
                f"{self.n_runs} runs ({new} new shard{'' if new == 1 else 's'} merged"
                f"{f', {bad} damaged shard(s) skipped' if bad else ''})")


def merge(
    skeleton: Path,
    shards: Sequence[Path],
    target: Path,
    plan_hash: str,
    lock_timeout: float = 600.0,
    progress: Callable[[int], None] | None = None,
    provenance: str | None = None,
    earlier_hashes: Sequence[str] = (),
) -> MergeReport:
    """Merge ``shards`` into ``target``; ``skeleton`` is the file to start from when none exists."""
    target = Path(target)
    if target.is_dir():
        raise StorageError(f"{target}: the merge target is a directory; give a file name")
    if not target.parent.is_dir():
        raise StorageError(f"{target.parent}: no such directory for the merge target")
    _target_hash(target, plan_hash, earlier_hashes)  # a wrong -o fails before the lock file is made
    lock = FileLock(target.with_name(f".{target.name}.lock"))  # hidden: it stays after the merge
    try:
        lock.acquire(timeout=lock_timeout)
    except Timeout:
        raise StorageError(f"{target}: another merge holds {lock.lock_file} for over {lock_timeout:.0f} s") from None
    tmp = target.with_name(f".{target.name}.merging-{os.getpid()}")
    try:
        for stale in target.parent.glob(f".{glob.escape(target.name)}.merging-*"):
            stale.unlink()  # left by a killed merge (we hold the lock: no other merge is running)
        target_hash = _target_hash(target, plan_hash, earlier_hashes)
        # a target of an earlier, smaller plan (expand) is rebuilt from the skeleton and all shards
        shutil.copyfile(target if target_hash == plan_hash else skeleton, tmp)
        with h5py.File(tmp, "a", locking="best-effort") as f:
            grp = _only_trajectory(f)
            if get_attr(grp, "plan_hash") != plan_hash:
                raise StorageError(f"{target} holds another sweep (plan hash differs); choose another -o")
            report = _Merger(grp, plan_hash, target, frozenset(earlier_hashes)).run(shards, progress)
            if provenance is not None:
                set_attrs(grp, provenance=provenance)
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        os.replace(tmp, target)
        fsync_path(target.parent)
        return report
    finally:
        if tmp.exists():
            tmp.unlink()
        lock.release()


def _last_rows(idx: np.ndarray) -> np.ndarray:
    """Row positions holding each run's last row, ordered by run index (the last row wins)."""
    runs, first_rev = np.unique(idx[::-1], return_index=True)
    return len(idx) - 1 - first_rev


def _one_row_chunks(ds: h5py.Dataset) -> bool:
    return ds.chunks == (1, *ds.shape[1:]) and ds.compression is None


def _target_hash(target: Path, plan_hash: str, earlier_hashes: Sequence[str]) -> str | None:
    """The plan hash of an existing merge target, or None; refuses a file of another sweep or kind."""
    if not target.exists():
        return None
    target_hash = _plan_hash_of(target)
    if target_hash is None:
        raise StorageError(f"{target} exists and is not a pypet-hpc trajectory file; choose another -o")
    if target_hash != plan_hash and target_hash not in earlier_hashes:
        raise StorageError(f"{target} holds another sweep (plan hash differs); choose another -o")
    return target_hash


def _plan_hash_of(path: Path) -> str | None:
    try:
        with open_h5(path) as f:
            return str(get_attr(_only_trajectory(f), "plan_hash"))
    except StorageError:
        return None


def _only_trajectory(f: h5py.File) -> h5py.Group:
    if ROOT not in f or len(f[ROOT]) != 1:
        raise StorageError(f"{f.filename}: expected exactly one trajectory")
    return trajectory_group(f)


class _Merger:
    """One merge: the run table, masks and small columns are held in memory and written once at
    the end; big columns are written shard by shard (bounded memory)."""

    def __init__(self, grp: h5py.Group, plan_hash: str, target: Path, earlier: frozenset[str]) -> None:
        self.grp = grp
        self.plan_hash = plan_hash
        self.earlier = earlier
        self.n = int(get_attr(grp, "n_runs"))
        self.report = MergeReport(target=target, n_runs=self.n)
        self.log_grp = grp.require_group("merge_log")
        self.merged_ids = set(json.loads(get_attr(self.log_grp, "shard_ids", "[]")))
        self.item_counts: dict[str, dict[str, int]] = {
            b: json.loads(get_attr(grp[b].require_group("runs"), "item_counts", "{}")) for b in RUN_BRANCHES
        }
        err = grp["errors"]
        self.errors: dict[int, tuple[str, str, str]] = {
            int(i): (t, m, tb) for i, t, m, tb in zip(
                err["idx"][()], err["type"].asstr()[()], err["message"].asstr()[()],
                err["traceback"].asstr()[()], strict=True)
        }
        info = grp["run_info"]
        self.info = {c: info[c][()] for c in ("status", "start", "end", "task")}
        for col in ("host", "job"):
            self.info[col] = np.asarray(info[col].asstr()[()], dtype=object)
        self.masks: dict[tuple[str, str], np.ndarray] = {}
        self.small: dict[tuple[str, str], np.ndarray] = {}  # columns small enough to hold in memory
        self._col_cache: dict[tuple[str, str], tuple[Any, tuple[Any, ...]]] = {}

    def run(self, shards: Sequence[Path], progress: Callable[[int], None] | None) -> MergeReport:
        fresh: list[Path] = []
        counts: dict[str, int] = {}
        for path in sorted(shards):
            try:
                f = open_h5(path)
            except StorageError as exc:  # not HDF5, truncated...: merge the others, name this one
                self._damaged(path, str(exc).removeprefix(f"{path}: "))
                continue
            with f:
                problem = self._check(path, f)
                if problem is not None:
                    self._damaged(path, problem)
                    continue
                if get_attr(f, "shard_id") in self.merged_ids:
                    self.report.skipped_shards.append(path.name)
                    continue
                for key, cgrp in f["columns"].items():
                    counts[key] = counts.get(key, 0) + cgrp["idx"].shape[0]
            fresh.append(path)
        for branch, names in self.item_counts.items():
            for name, c in names.items():
                counts[f"{branch}.{name}"] = counts.get(f"{branch}.{name}", 0) + c
        for path in fresh:
            with open_h5(path) as f:
                try:
                    self._merge_one(f, counts)
                except (OSError, KeyError, ValueError) as exc:
                    if isinstance(exc, StorageError):
                        raise
                    raise StorageError(f"{path}: cannot be merged ({type(exc).__name__}: {exc}); "
                                       f"{self.report.target} is left as it was; move the shard aside "
                                       "and resubmit") from None
                self.merged_ids.add(get_attr(f, "shard_id"))
            self.report.merged_shards.append(path.name)
            if progress is not None:
                progress(1)
        self._write_back()
        self.report.ok = int(np.count_nonzero(self.info["status"] == OK))
        self.report.failed = int(np.count_nonzero(self.info["status"] == FAILED))
        return self.report

    def _damaged(self, path: Path, problem: str) -> None:
        log.warning("%s: %s; not merged", path.name, problem)
        self.report.damaged_shards.append(f"{path.name}: {problem}")

    def _check(self, path: Path, f: h5py.File) -> str | None:
        """What makes a shard unfit to merge, or None; a shard of another sweep is refused outright."""
        if get_attr(f, "kind") != SHARD_KIND:
            return "not a pypet-hpc shard"
        if get_attr(f, "plan_hash") not in {self.plan_hash, *self.earlier}:
            raise StorageError(f"{path}: shard of another sweep (plan hash differs); refusing to merge it")
        if not f.attrs.get("complete", False):
            return "not marked complete"
        lost = [k for k in ("run_info/idx", "run_info/status", "run_info/start", "run_info/end", "run_info/host",
                            "errors/idx", "errors/type", "errors/message", "errors/traceback", "columns", "items")
                if k not in f]
        return f"damaged shard: no {', '.join(lost)}" if lost else None

    def _mask(self, branch: str, name: str) -> np.ndarray:
        key = (branch, name)
        mask = self.masks.get(key)
        if mask is None:
            ds = self.grp[branch].get(f"runs/masks/{name}")
            mask = self.masks[key] = ds[()] if ds is not None else np.zeros(self.n, dtype=bool)
        return mask

    def _all_masks(self, branch: str) -> list[np.ndarray]:
        masks = self.grp[branch]["runs"].get("masks")
        return [self._mask(branch, name) for name in (masks or [])]

    def _merge_one(self, f: h5py.File, counts: dict[str, int]) -> None:
        src = f["run_info"]
        idx = src["idx"][()]
        if not len(idx):
            return
        if idx.min() < 0 or idx.max() >= self.n:
            raise StorageError(f"{f.filename}: run index out of range for a {self.n}-run sweep")
        keep = _last_rows(idx)
        runs = idx[keep]
        info = self.info
        if np.any(info["status"][runs] != MISSING):
            self._clear_runs(runs)
        for col in ("status", "start", "end"):
            info[col][runs] = src[col][()][keep]
        for col in ("host", "job"):
            values = np.asarray(src[col].asstr()[()], dtype=object) if col in src else np.array([], dtype=object)
            info[col][runs] = values[keep] if len(values) == len(idx) else ""
        info["task"][runs] = int(get_attr(f, "task"))
        for r in runs.tolist():
            self.errors.pop(r, None)
        err = f["errors"]
        if err["idx"].shape[0]:
            last_status = dict(zip(runs.tolist(), info["status"][runs].tolist(), strict=True))
            for i, t, m, tb in zip(err["idx"][()].tolist(), err["type"].asstr()[()], err["message"].asstr()[()],
                                   err["traceback"].asstr()[()], strict=True):
                if last_status.get(i) == FAILED:
                    self.errors[i] = (t, m, tb)
        for key, cgrp in f["columns"].items():
            self._merge_column(key, cgrp, counts.get(key, 0))
        for run_set in f["items"].values():
            for rname, rgrp in run_set.items():
                for key in rgrp:
                    branch, name = key.split(".", 1)
                    self._put_item(branch, name, int(rname[4:]), rgrp[key], copy=True)

    def _clear_runs(self, runs: np.ndarray) -> None:
        """Drop what earlier merges stored for ``runs`` (a task that was run again)."""
        for branch in RUN_BRANCHES:
            for mask in self._all_masks(branch):
                mask[runs] = False
            base = self.grp[branch]["runs"]
            for r in runs.tolist():
                path = f"{run_set_name(r)}/{run_name(r)}"
                if path in base:
                    for name in base[path]:
                        self._count_item(branch, name, -1)
                    del base[path]

    def _merged_column(self, branch: str, name: str, count: int, like: h5py.Group) -> tuple[Any, tuple[Any, ...]]:
        """The merged file's column for ``name`` (created when it recurs) and its (kind, dtype, shape)."""
        key = (branch, name)
        hit = self._col_cache.get(key)
        if hit is not None:
            return hit
        cols = self.grp[branch]["runs"].require_group("columns")
        if name not in cols and count >= 2:
            self._new_column(cols, name, get_attr(like, "kind"), get_attr(like, "dtype"),
                             tuple(int(x) for x in like.attrs["shape"]), like["values"])
            self._fold_items_into_column(branch, name)
        col = cols.get(name)
        if col is None:
            return None, ()
        hit = self._col_cache[key] = (col, (get_attr(col, "kind"), get_attr(col, "dtype"), col.shape[1:]))
        return hit

    def _merge_column(self, key: str, cgrp: h5py.Group, count: int) -> None:
        branch, name = key.split(".", 1)
        attrs = cgrp.attrs
        kind, dtype = get_attr(cgrp, "kind"), get_attr(cgrp, "dtype")
        shape = tuple(int(x) for x in attrs["shape"])
        col, meta = self._merged_column(branch, name, count, cgrp)
        idx = cgrp["idx"][()]
        values = cgrp["values"]
        if meta != (kind, dtype, shape):
            for pos, r in enumerate(idx.tolist()):
                self._put_value_item(branch, name, r, kind, values, pos)
            return
        keep = _last_rows(idx)
        rows = idx[keep]
        self._mask(branch, name)[rows] = True
        small = self.small.get((branch, name))
        if small is None and col.size * max(col.dtype.itemsize, 8) <= SMALL_COLUMN_BYTES:
            small = self.small[(branch, name)] = read_column(col) if kind == "str" else col[()]
        if small is not None:
            small[rows] = (np.asarray(values.asstr()[()], dtype=object) if kind == "str" else values[()])[keep]
            return
        if _one_row_chunks(values) and _one_row_chunks(col) and values.dtype == col.dtype:
            # big rows (>= 1 MiB): copy the stored chunks as they are, no decoding
            zeros = (0,) * len(shape)
            buffer = np.empty(values.id.get_chunk_info(0).size, dtype=np.uint8)  # reused: no allocation per row
            for pos, run in zip(keep.tolist(), rows.tolist(), strict=True):
                size = values.id.get_chunk_info_by_coord((pos, *zeros)).size
                if size > buffer.size:
                    buffer = np.empty(size, dtype=np.uint8)
                filter_mask, raw = values.id.read_direct_chunk((pos, *zeros), out=buffer)
                col.id.write_direct_chunk((run, *zeros), raw, filter_mask)
            return
        row_bytes = max(1, values.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        step = max(1, BLOCK_BYTES // row_bytes)
        for start in range(0, len(keep), step):
            sel = keep[start:start + step]
            a, b = int(sel.min()), int(sel.max()) + 1
            data = values[a:b][sel - a]
            block = idx[sel]
            lo, hi = int(block[0]), int(block[-1]) + 1
            if hi - lo == len(block):
                col[lo:hi] = data
            else:
                col[block] = data

    def _new_column(self, cols: h5py.Group, name: str, kind: str, dtype: str, shape: tuple[int, ...],
                    like: h5py.Dataset) -> None:
        row_bytes = max(1, like.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        chunk_rows = int(max(1, min(self.n, 8192, (64 << 10) // row_bytes)))  # as in shards: big rows alone
        dt = STR_DTYPE if kind == "str" else np.dtype(dtype)
        ds = cols.create_dataset(name, shape=(self.n, *shape), dtype=dt, chunks=(chunk_rows, *shape))
        set_attrs(ds, kind=kind, dtype=dtype)

    def _fold_items_into_column(self, branch: str, name: str) -> None:
        """Earlier merges kept ``name`` per run (it was rare); now it recurs: move it to the column."""
        if not self.item_counts[branch].get(name):
            return
        base = self.grp[branch]["runs"]
        col, mask = base["columns"][name], self._mask(branch, name)
        for set_name, run_set in list(base.items()):
            if not set_name.startswith("run_set_"):
                continue
            for rname, rgrp in run_set.items():
                if name in rgrp:
                    r = int(rname[4:])
                    try:
                        col[r] = read_value(rgrp[name], allow_pickle=False)
                    except (TypeError, ValueError, StorageError):  # not a column value (pickled...)
                        continue
                    mask[r] = True
                    del rgrp[name]
                    self._count_item(branch, name, -1)

    def _put_value_item(self, branch: str, name: str, run: int, kind: str, values: h5py.Dataset,
                        pos: int) -> None:
        raw = values.asstr()[pos] if kind == "str" else values[pos]
        self._put_item(branch, name, run, column_element(kind, raw), copy=False)

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
        if (branch, name) in self.masks or name in base.get("masks", {}):
            self._mask(branch, name)[run] = False

    def _count_item(self, branch: str, name: str, delta: int) -> None:
        counts = self.item_counts[branch]
        counts[name] = counts.get(name, 0) + delta
        if counts[name] <= 0:
            del counts[name]

    def _write_back(self) -> None:
        info = self.grp["run_info"]
        for col, values in self.info.items():
            info[col][...] = values
        for (branch, name), mask in self.masks.items():
            masks = self.grp[branch]["runs"].require_group("masks")
            if name in masks:
                masks[name][...] = mask
            else:
                masks.create_dataset(name, data=mask, chunks=(min(self.n, 65536),))
        for (branch, name), values in self.small.items():
            self.grp[branch]["runs/columns"][name][...] = values
        err = self.grp["errors"]
        runs = sorted(self.errors)
        err["idx"].resize((len(runs),))
        err["idx"][:] = np.array(runs, dtype=np.int64)
        for i, col in enumerate(("type", "message", "traceback")):
            err[col].resize((len(runs),))
            if runs:
                err[col][:] = np.array([self.errors[r][i] for r in runs], dtype=object)
        set_attrs(self.log_grp, shard_ids=json.dumps(sorted(self.merged_ids)))
        for branch, counts_b in self.item_counts.items():
            set_attrs(self.grp[branch]["runs"], item_counts=json.dumps(counts_b))
