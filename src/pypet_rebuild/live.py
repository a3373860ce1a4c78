"""The live view of a sweep: its runs read straight from the shards, without a merge.

``load_trajectory(WORKDIR)`` gives the sweep's trajectory (parameters and explored points from
the skeleton) whose run data comes from the finished shards and from the committed runs of the
tasks still running (their ``.partial`` shards, up to their last commit record), so a user looks
at results while the sweep runs. It is a snapshot: the runs it holds are those committed when it
was loaded; load it again to see more. Shards are read through :class:`.formats.shard.ShardReader`
only, a column at a time when asked for (memory grows with one column, not with the sweep). A
shard that cannot be read is named in one WARNING line and left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .codec import column_dtype, column_element, read_value
from .errors import StorageError
from .formats.files import get_attr
from .formats.schema import FILE_RUN_COLUMNS, RunStatus, last_rows
from .formats.shard import ShardColumn, ShardReader
from .formats.trajfile import RunDataSummary, TrajectorySummary, load_trajectory, summarize
from .model import Parameter, Result, Trajectory, loaded_leaf
from .runstore import RUN_BRANCHES, masked_column
from .workdir import Workdir

log = logging.getLogger(__name__)
T = TypeVar("T")
READ_ATTEMPTS = 5  # a .partial is read again when its writer was caught in the middle of a flush
RETRY_SECONDS = 0.05
READ_ERRORS = (StorageError, OSError, KeyError, ValueError, RuntimeError)


@dataclass
class _Shard:
    """One shard as the snapshot saw it: where, which rows, which columns."""

    path: Path
    partial: bool
    limits: dict[str, Any] | None  # row counts of a .partial's last commit (None: a final shard, all rows)
    columns: dict[str, int] = field(default_factory=dict)  # branch.name -> rows

    def open(self) -> ShardReader:
        """Open it again, reading the same rows; a ``.partial`` renamed since to its final name
        holds the same rows first (rows are only appended), so it is read there."""
        path = self.path
        if self.partial and not path.exists():
            path = path.with_name(path.name.removesuffix(".partial"))
        return ShardReader(path, live=self.partial, limits=self.limits)


class LiveRunStore:
    """Run data of a sweep read from its shards when asked for (see the module docstring)."""

    def __init__(self, wd: Workdir, n_runs: int, plan_hashes: set[str], allow_pickle: bool) -> None:
        self.allow_pickle = allow_pickle
        self.shards: list[_Shard] = []
        self.warned: set[Path] = set()
        self.where = np.full(n_runs, -1, dtype=np.int64)  # run -> position in self.shards
        self.info: dict[str, np.ndarray] = {name: col.full(n_runs) for name, col in FILE_RUN_COLUMNS.items()}
        self.errors: dict[int, tuple[str, str, str]] = {}
        self._item_index: dict[str, dict[str, list[int]]] | None = None
        finals = {p.name for p in wd.shard_files()}
        paths = [(p, False) for p in wd.shard_files()]
        paths += [(p, True) for p in sorted(wd.shards.glob("task_*.h5.partial"))
                  if p.name.removesuffix(".partial") not in finals]
        for path, partial in sorted(paths):
            self._add_shard(path, partial, plan_hashes, n_runs)

    def _add_shard(self, path: Path, partial: bool, plan_hashes: set[str], n_runs: int) -> None:
        for attempt in range(READ_ATTEMPTS if partial else 1):
            try:
                self._read_shard(path, partial, plan_hashes, n_runs)
                return
            except READ_ERRORS as exc:
                final = path.with_name(path.name.removesuffix(".partial"))
                if partial and not path.exists() and final.exists():  # its task ended meanwhile
                    path, partial = final, False
                elif attempt == READ_ATTEMPTS - 1 or not partial:
                    self._warn(path, exc)
                    return
                time.sleep(RETRY_SECONDS)  # its writer was caught in the middle of a flush: read again
        try:
            self._read_shard(path, partial, plan_hashes, n_runs)
        except READ_ERRORS as exc:
            self._warn(path, exc)

    def _read_shard(self, path: Path, partial: bool, plan_hashes: set[str], n_runs: int) -> None:
        with ShardReader(path, live=partial, committed=partial) as reader:
            if reader.plan_hash not in plan_hashes:
                raise StorageError(f"{path.name}: shard of another sweep (plan hash differs)")
            problem = reader.problem()
            if problem is not None:
                raise StorageError(f"{path.name}: {problem}")
            runs, table = reader.run_table()
            if len(runs) and (runs.min() < 0 or runs.max() >= n_runs):
                raise StorageError(f"{path.name}: run index out of range for a {n_runs}-run sweep")
            failed = reader.failed_runs()
            shard = _Shard(path, partial, reader.limits, reader.column_rows())
            task = reader.task
        self.where[runs] = len(self.shards)
        self.shards.append(shard)
        for name, values in table.items():
            self.info[name][runs] = values
        self.info["task"][runs] = task
        for f in failed:
            self.errors[f.run] = (f.type, f.message, f.traceback)

    def _warn(self, path: Path, exc: BaseException) -> None:
        if path not in self.warned:
            self.warned.add(path)
            why = str(exc).removeprefix(f"{path.name}: ")
            log.warning("%s: %s; left out of the live view", path.name, why)

    def _read(self, shard: _Shard, fn: Callable[[ShardReader], T], default: T) -> T:
        """``fn`` of the shard opened again (same rows); a ``.partial`` caught in the middle of a
        flush is read again; a shard that cannot be read is named once and gives ``default``."""
        attempts = READ_ATTEMPTS if shard.partial else 1
        for attempt in range(attempts):
            try:
                with shard.open() as reader:
                    return fn(reader)
            except READ_ERRORS as exc:
                if attempt == attempts - 1:
                    self._warn(shard.path, exc)
                else:
                    time.sleep(RETRY_SECONDS)
        return default

    # -- the RunStore protocol ---------------------------------------------------------------
    def add(self, run: int, branch: str, leaf: Any) -> None:
        raise StorageError("the live view of a sweep is read-only")

    def _items(self) -> dict[str, dict[str, list[int]]]:
        """branch -> name -> runs holding it as a per-run object (read once, on first need)."""
        if self._item_index is None:
            index: dict[str, dict[str, list[int]]] = {b: {} for b in RUN_BRANCHES}
            for k, shard in enumerate(self.shards):
                mine = set(np.flatnonzero(self.where == k).tolist())

                def read(reader: ShardReader, mine: set[int] = mine) -> list[tuple[int, str, str]]:
                    return [(run, b, n) for run, b, n, _ in reader.items(mine)]

                found: list[tuple[int, str, str]] = self._read(shard, read, [])
                for run, branch, name in found:
                    if branch in index:
                        index[branch].setdefault(name, []).append(run)
            self._item_index = index
        return self._item_index

    def get(self, run: int, branch: str, name: str) -> Any:
        k = int(self.where[run])
        if k < 0:
            return None
        shard = self.shards[k]
        key = f"{branch}.{name}"
        cls = Result if branch == "results" else Parameter

        def read(reader: ShardReader) -> Any:
            col = reader.column(key) if key in shard.columns else None
            if col is not None:
                hits = np.flatnonzero(col.idx == run)
                if len(hits):
                    pos = int(hits[-1])
                    raw = col.values.asstr()[pos] if col.spec[0] == "str" else col.values[pos]
                    return loaded_leaf(cls, name, column_element(col.spec[0], raw))
            obj = reader.item(run, key)
            if obj is None:
                return None
            value = read_value(obj, self.allow_pickle, f"{key} of run {run}")
            return loaded_leaf(cls, name, value, get_attr(obj, "comment", ""))

        return self._read(shard, read, None)

    def names_in_run(self, run: int, branch: str) -> list[str]:
        k = int(self.where[run])
        if k < 0:
            return []
        shard = self.shards[k]

        def read(reader: ShardReader) -> list[str]:
            names = []
            for key in shard.columns:
                b, name = key.split(".", 1)
                col = reader.column(key) if b == branch else None
                if col is not None and np.any(col.idx == run):
                    names.append(name)
            return names + [key.split(".", 1)[1] for key in reader.item_names(run) if key.startswith(f"{branch}.")]

        return self._read(shard, read, [])

    def names(self, branch: str) -> list[str]:
        cols = [key.split(".", 1)[1] for s in self.shards for key in s.columns if key.startswith(f"{branch}.")]
        return list(dict.fromkeys(cols + list(self._items()[branch])))

    def runs_with(self, branch: str, name: str) -> list[int]:
        try:
            return np.flatnonzero(~np.ma.getmaskarray(self.column(branch, name, len(self.where)))).tolist()
        except KeyError:
            return []

    def column(self, branch: str, name: str, n_runs: int) -> np.ma.MaskedArray:
        key = f"{branch}.{name}"
        parts: list[tuple[np.ndarray, np.ndarray, ShardColumn]] = []
        for k, shard in enumerate(self.shards):
            if key not in shard.columns:
                continue

            def read(reader: ShardReader, k: int = k) -> tuple[np.ndarray, np.ndarray, ShardColumn] | None:
                col = reader.column(key)
                if col is None:
                    return None
                keep = last_rows(col.idx)
                rows = col.idx[keep]
                mine = self.where[rows] == k  # the runs the snapshot took from this shard
                return rows[mine], col.read()[keep][mine], col

            part = self._read(shard, read, None)
            if part is not None:
                parts.append(part)
        items = self._items()[branch].get(name, [])
        specs = {col.spec for _, _, col in parts}
        if not parts and not items:
            raise KeyError(f"no run has {branch}.{name}")
        if len(specs) == 1 and not items:  # one kind of column everywhere: typed, at numpy speed
            spec = specs.pop()
            kind, _, shape = spec
            dtype = object if kind == "str" else column_dtype(spec)
            data = np.zeros((n_runs, *shape), dtype=dtype)
            if kind == "str":
                data[:] = ""
            mask = np.ones(n_runs, dtype=bool)
            for rows, values, _ in parts:
                data[rows] = values
                mask[rows] = False
            if data.ndim > 1:
                return np.ma.MaskedArray(data, mask=np.broadcast_to(mask.reshape(-1, *[1] * (data.ndim - 1)),
                                                                    data.shape))
            return np.ma.MaskedArray(data, mask=mask)
        found = [(int(r), column_element(col.spec[0], v)) for rows, values, col in parts
                 for r, v in zip(rows.tolist(), values, strict=True)]
        found += [(r, leaf.value) for r in items if (leaf := self.get(r, branch, name)) is not None]
        return masked_column(found, n_runs)

    def column_spec(self, branch: str, name: str) -> tuple[str, str, tuple[int, ...]] | None:
        """(kind, dtype, shape) when every shard holds ``name`` as one kind of column, else None."""
        key = f"{branch}.{name}"

        def read(reader: ShardReader) -> tuple[str, str, tuple[int, ...]] | None:
            col = reader.column(key)
            return None if col is None else col.spec

        specs = {self._read(shard, read, None) for shard in self.shards if key in shard.columns}
        specs.discard(None)
        if len(specs) != 1 or name in self._items()[branch]:
            return None
        return specs.pop()

    def run_info(self, n_runs: int = 0) -> dict[str, np.ndarray]:
        info = {name: values.copy() for name, values in self.info.items()}
        info["idx"] = np.arange(len(self.where), dtype=np.int64)
        errors = np.full(len(self.where), "", dtype=object)
        for run, (typ, msg, _) in self.errors.items():
            errors[run] = f"{typ}: {msg}"
        info["error"] = errors
        return info

    def traceback(self, run: int) -> str | None:
        hit = self.errors.get(run)
        return None if hit is None else hit[2]


def load_live(path: Path, allow_pickle: bool = False) -> Trajectory:
    """The live view of the sweep in the workdir ``path`` (see the module docstring)."""
    wd = Workdir(path)
    manifest = wd.manifest()
    cleaned = _cleaned_target(wd)
    if cleaned is not None:
        return load_trajectory(cleaned, allow_pickle=allow_pickle or manifest.allow_pickle)
    traj = wd.load_skeleton(manifest)
    hashes = {manifest.plan_hash, *manifest.earlier_hashes}
    traj.state.run_store = LiveRunStore(wd, len(traj), hashes, allow_pickle or manifest.allow_pickle)
    traj.file_path = str(wd.path)
    return traj


def _cleaned_target(wd: Workdir) -> Path | None:
    """The merged file holding the runs when ``clean`` removed the shards and none came since."""
    cleaned = wd.cleaned()
    if cleaned is None or wd.shard_files() or any(wd.shards.glob("task_*.h5.partial")):
        return None
    log.info("%s: shards removed by clean; reading the merged file %s", wd.path, cleaned.target)
    return Path(cleaned.target)


def summarize_live(path: Path) -> TrajectorySummary:
    """What ``pypet-hpc show WORKDIR`` prints: the skeleton's tree and the live view's runs."""
    wd = Workdir(path)
    cleaned = _cleaned_target(wd)
    if cleaned is not None:
        return summarize(cleaned)
    traj = load_live(path)
    store = traj.state.run_store
    assert isinstance(store, LiveRunStore)
    base = summarize(wd.skeleton)
    info = store.run_info()
    status = info["status"]
    done = status != RunStatus.MISSING
    run_data: dict[str, list[RunDataSummary]] = {}
    for branch in RUN_BRANCHES:
        entries = [RunDataSummary(name, len(store.runs_with(branch, name)), store.column_spec(branch, name))
                   for name in store.names(branch)]
        if entries:
            run_data[branch] = entries
    prov = wd.path / "provenance.json"
    return TrajectorySummary(
        name=base.name, n_runs=base.n_runs, format_version=base.format_version,
        library_version=base.library_version, comment=base.comment,
        counts={str(s): int(np.count_nonzero(status == s)) for s in RunStatus},
        durations=(info["end"] - info["start"])[done],
        where={c: sorted(set(info[c][done].tolist())) for c, col in FILE_RUN_COLUMNS.items() if col.text},
        leaves=base.leaves, run_data=run_data, provenance=prov.read_text() if prov.exists() else None,
        merged_shards=len(store.shards))
