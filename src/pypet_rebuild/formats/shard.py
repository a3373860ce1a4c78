"""Per-task shards: the append-only HDF5 file a task writes its finished runs into.

A shard lives as ``<task>.h5.partial`` while its task runs and is renamed to ``<task>.h5`` when
the task ends, so a file under its final name is always complete. Finished runs are buffered in
memory and appended at a short interval; a killed task loses at most that interval. Rows are
appended, never rewritten: when a run appears twice (a failed run retried) the last row wins.

Layout: root attributes (plan hash, task, shard id, complete), ``run_info/`` (the columns of
:data:`.schema.SHARD_RUN_COLUMNS`, one row per finished run), ``errors/``
(:data:`.schema.ERROR_COLUMNS`), ``columns/<branch>.<name>/`` (``idx``, ``values``) for values
that fit a column, ``items/run_set_X/run_Y/<branch>.<name>`` for the rest. Each item of a
multi-item result is a value of its own, named ``<name>:<item>``. Next to a
``.partial`` lies its ``.commit`` record: the row counts of its last durable flush.

:class:`ShardWriter` writes a task's shard, :class:`ShardReader` reads one (the last row of a
run wins), :class:`ShardBuilder` writes a complete shard in one go (combine). Nobody else
knows this layout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..codec import ColumnSpec, column_array, column_dtype, column_spec, new_dataset, write_value
from ..errors import StorageError, TaskBusyError
from ..naming import item_key, run_name, run_set_name
from .files import (
    LOCKING,
    atomic_write,
    damaged_datasets,
    get_attr,
    open_h5,
    os_reason,
    replace_durably,
    set_attrs,
    sync_h5,
)
from .schema import (
    ERROR_COLUMNS,
    SHARD_RUN_COLUMNS,
    SMALL_FILTERS,
    RunStatus,
    append,
    append_rows,
    chunk_rows,
    create_table,
    last_rows,
    read_table,
    write_table,
)

log = logging.getLogger(__name__)
SHARD_KIND = "pypet-hpc shard"
FLUSH_SECONDS = 1.0
FLUSH_RUNS = 5000
ROWS_PER_CHUNK = 1024  # small shards stay small on disk; big ones append in few chunks
ERROR_ROWS_PER_CHUNK = 64
OK, FAILED = RunStatus.OK, RunStatus.FAILED


def job_label() -> str:
    """The scheduler's id of this process: ``slurm:<array>_<index>``, ``slurm:<job>`` or ``pid:<pid>``."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"slurm:{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if env.get("SLURM_JOB_ID"):
        return f"slurm:{env['SLURM_JOB_ID']}"
    return f"pid:{os.getpid()}"
_PLAIN = frozenset({"bool", "int", "float", "complex"})  # str may hold NUL: checked per value


def shard_name(task: int) -> str:
    return f"task_{task:06d}.h5"


def shard_path(shards_dir: Path, task: int) -> Path:
    return shards_dir / shard_name(task)


def partial_path(final: Path) -> Path:
    return final.with_name(final.name + ".partial")


def commit_path(partial: Path) -> Path:
    """The commit record of a ``.partial`` shard: the row counts its last durable flush wrote."""
    return partial.with_name(partial.name + ".commit")


LABELLED = ("host", "job")  # run_info text columns a shard stores as codes into a "labels" attribute


def label_codes(ds: h5py.Dataset, values: np.ndarray) -> np.ndarray:
    """The codes of the words ``values`` in the labelled column ``ds`` (new words added to its
    labels attribute)."""
    labels: list[str] = json.loads(get_attr(ds, "labels", "[]"))
    words, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    codes = []
    for word in words.tolist():
        if word not in labels:
            labels.append(word)
        codes.append(labels.index(word))
    ds.attrs["labels"] = json.dumps(labels)
    return np.asarray(codes, dtype=np.int32)[inverse.reshape(-1)]


def _read_run_info(grp: h5py.Group, sel: Any) -> dict[str, np.ndarray]:
    """A shard's run table: labelled columns decoded (a shard from before labels holds the words)."""
    coded = [k for k in LABELLED if k in grp and h5py.check_vlen_dtype(grp[k].dtype) is None]
    table = read_table(grp, {k: c for k, c in SHARD_RUN_COLUMNS.items() if k not in coded}, sel)
    for name in coded:
        labels = np.array(json.loads(get_attr(grp[name], "labels", "[]")) or [""], dtype=object)
        table[name] = labels[np.asarray(grp[name][sel], dtype=np.int64)]
    return table


def _encode(grp: h5py.Group, table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: label_codes(grp[k], v) if k in LABELLED and h5py.check_vlen_dtype(grp[k].dtype) is None else v
            for k, v in table.items()}


def rows_per_chunk(n_runs: int | None) -> int:
    """Rows per chunk of a shard of ``n_runs`` runs (None: not known): the next power of two, at
    least 16 and at most :data:`ROWS_PER_CHUNK`, so a 100-run shard does not carry chunks sized
    for a thousand (an uncompressed float column of 100 runs: 1 KB, not 8 KB)."""
    if n_runs is None:
        return ROWS_PER_CHUNK
    return min(ROWS_PER_CHUNK, max(16, 1 << max(0, n_runs - 1).bit_length()))


def create_shard(path: Path, plan_hash: str, task: int, n_runs: int | None = None) -> h5py.File:
    """A new, empty shard file for a task of ``n_runs`` runs (sizes its chunks)."""
    f = h5py.File(path, "w", locking=LOCKING, libver=("v108", "latest"))
    rows = rows_per_chunk(n_runs)
    set_attrs(f, kind=SHARD_KIND, plan_hash=plan_hash, task=task, shard_id=uuid.uuid4().hex,
              created=time.time(), complete=False, rows_per_chunk=rows)
    info = f.create_group("run_info")
    create_table(info, {k: c for k, c in SHARD_RUN_COLUMNS.items() if k not in LABELLED},
                 chunk_cap=rows, compress=True)
    for name in LABELLED:  # the same host and job on every row of a task: a code per row, the words once
        ds = new_dataset(info, name, shape=(0,), dtype=np.int32, maxshape=(None,), chunks=(rows,),
                         **SMALL_FILTERS)
        ds.attrs["labels"] = "[]"
    create_table(f.create_group("errors"), ERROR_COLUMNS, chunk_cap=ERROR_ROWS_PER_CHUNK)
    f.create_group("columns")
    f.create_group("items")
    f.flush()
    return f


@dataclass
class _Column:
    spec: ColumnSpec
    pytype: type
    plain: bool = False  # a Python number: its type alone fixes the spec
    rows: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)


class ShardWriter:
    """Buffers finished runs and appends them to the task's ``.partial`` shard."""

    def __init__(self, final: Path, plan_hash: str, task: int, retry_failed: bool = False,
                 earlier_hashes: frozenset[str] = frozenset(), n_runs: int | None = None) -> None:
        self.final = final
        self.n_runs = n_runs  # the task's runs: sizes a new shard's chunks
        self.earlier = earlier_hashes  # plans this sweep grew from (expand): their shards still count
        self.partial = partial_path(final)
        self.host = socket.gethostname()
        self.job = job_label()
        self.done: set[int] = set()
        self.broken = False  # a write failed (disk full...): only the committed rows count
        self._last_flush = time.monotonic()
        self._reset_buffer()
        self.f = self._open(plan_hash, task, retry_failed)

    def _reset_buffer(self) -> None:
        self._info: list[tuple[int, RunStatus, float, float]] = []
        self._errors: list[tuple[int, str, str, str]] = []
        self._cols: dict[tuple[str, str], _Column] = {}
        self._items: list[tuple[int, str, str, Any, str]] = []  # (run, branch, name, value, comment)

    def _open(self, plan_hash: str, task: int, retry_failed: bool) -> h5py.File:
        if self.partial.exists():
            try:
                f = self._resume(plan_hash, task)
                last = last_status(f)
                # a resubmit (retry_failed) runs the failed runs again; a plain restart does not
                self.done = {i for i, s in last.items() if s == OK or not retry_failed}
                log.info("resuming %s: %d runs already done", self.partial.name, len(self.done))
                return f
            except (OSError, StorageError, KeyError, ValueError, RuntimeError) as exc:  # RuntimeError: a torn link table
                if _locked_by_another(exc):
                    raise TaskBusyError(f"task {task}: {self.partial.name} is open in another worker, which "
                                        "is still running this task; not running it twice") from None
                self._set_aside(self.partial, exc)
        elif retry_failed and self.final.exists():
            try:
                with ShardReader(self.final) as reader:
                    reader.last_status()
            except StorageError as exc:  # a damaged final shard: its task is computed again
                self._set_aside(self.final, exc)
            else:
                shutil.copyfile(self.final, self.partial)
                f = h5py.File(self.partial, "a", locking=LOCKING)
                # new content: merge it again; it now belongs to the current (maybe expanded) plan
                set_attrs(f, complete=False, shard_id=uuid.uuid4().hex, plan_hash=plan_hash)
                self.done = {i for i, s in last_status(f).items() if s == OK}
                self._commit(f)
                log.info("running %s again: %d finished runs kept, the others run", self.final.name, len(self.done))
                return f
        return create_shard(self.partial, plan_hash, task, self.n_runs)

    def _set_aside(self, path: Path, exc: BaseException) -> None:
        aside = set_aside(path)
        commit_path(self.partial).unlink(missing_ok=True)
        log.warning("%s is unreadable (%s: %s); kept as %s, starting over", path.name, type(exc).__name__,
                    exc, aside.name)

    def _resume(self, plan_hash: str, task: int) -> h5py.File:
        """Copy what the last commit made durable into a fresh ``.partial`` and reopen it.

        A task killed in the middle of a flush can leave the HDF5 file torn (datasets of unequal
        lengths, string heaps that do not match): nothing past the commit record is trusted.
        """
        record = commit_path(self.partial)
        committed = json.loads(record.read_text()) if record.exists() else None
        fresh_path = self.partial.with_name(self.partial.name + ".rebuilding")
        with _open_cut_short(self.partial, committed["size"] if committed else None) as old:
            if get_attr(old, "plan_hash") not in {plan_hash, *self.earlier}:
                raise StorageError("belongs to another sweep")
            # no record: the task died before its first flush was durable, nothing to keep
            commit = committed or {
                "shard_id": get_attr(old, "shard_id"), "run_info": 0, "errors": 0, "columns": {}}
            if get_attr(old, "shard_id") != commit["shard_id"]:
                raise StorageError("its commit record belongs to another file")
            fresh = create_shard(fresh_path, plan_hash, task, self.n_runs)
            set_attrs(fresh, shard_id=commit["shard_id"])  # same rows as committed: the record stays true
            try:
                for group in ("run_info", "errors"):
                    for name, ds in old[group].items():
                        dst = fresh[group][name]
                        if group == "run_info" and name in LABELLED:
                            if h5py.check_vlen_dtype(ds.dtype) is not None:  # a shard from before labels
                                append(dst, label_codes(dst, ds.asstr()[:commit[group]]))
                                continue
                            dst.attrs["labels"] = get_attr(ds, "labels", "[]")
                        _copy_rows(ds, dst, commit[group])
                for key, n in commit["columns"].items():
                    src, dst = old["columns"][key], fresh["columns"].create_group(key)
                    for attr, value in src.attrs.items():
                        dst.attrs[attr] = value
                    for name in ("idx", "values"):
                        ds = src[name]
                        _copy_rows(ds, new_dataset(dst, name, shape=(0, *ds.shape[1:]), dtype=ds.dtype,
                                                          maxshape=ds.maxshape, chunks=ds.chunks), n)
                for run, status in last_status(fresh).items():
                    where = f"{run_set_name(run)}/{run_name(run)}"
                    if status == OK and where in old["items"]:
                        fresh["items"].require_group(run_set_name(run)).copy(old["items"][where], run_name(run))
                sync_h5(fresh)
            finally:
                fresh.close()
        replace_durably(fresh_path, self.partial)
        return h5py.File(self.partial, "a", locking=LOCKING)

    def _commit(self, f: h5py.File) -> None:
        """Record how many rows of each dataset are durable (written and fsynced) in the shard."""
        record = {"shard_id": get_attr(f, "shard_id"), "run_info": f["run_info/idx"].shape[0],
                  "errors": f["errors/idx"].shape[0],
                  "columns": {key: grp["idx"].shape[0] for key, grp in f["columns"].items()},
                  "size": self.partial.stat().st_size}
        atomic_write(commit_path(self.partial), json.dumps(record), durable=False)  # the shard is fsynced

    # -- buffering ----------------------------------------------------------------------------
    def add(self, idx: int, ok: bool, start: float, end: float, leaves: dict[tuple[str, str], Any],
            error: tuple[str, str, str] | None = None) -> None:
        """Record one finished run: its leaves, or its error when it failed."""
        self._info.append((idx, OK if ok else FAILED, start, end))
        if error is not None:
            self._errors.append((idx, *error))
        cols = self._cols
        for key, leaf in leaves.items():
            value = leaf.value
            col = cols.get(key)
            if col is not None and col.plain and type(value) is col.pytype:
                col.rows.append(idx)
                col.values.append(value)
                continue
            if "_items" in leaf.__dict__:  # a multi-item result: each item is a value of its own
                for item, item_value in value.items():
                    self._add_value(idx, (key[0], item_key(key[1], item)), item_value, leaf.comment)
            else:
                self._add_value(idx, key, value, leaf.comment)
        if len(self._info) >= FLUSH_RUNS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def _add_value(self, idx: int, key: tuple[str, str], value: Any, comment: str) -> None:
        col = self._cols.get(key)
        if col is not None and col.plain and type(value) is col.pytype:
            col.rows.append(idx)
            col.values.append(value)
            return
        spec = column_spec(value)
        if spec is not None and (col is None or col.spec == spec):
            if col is None:
                col = self._cols[key] = _Column(spec, type(value), spec[0] in _PLAIN)
            col.rows.append(idx)
            col.values.append(value)
        else:
            self._items.append((idx, key[0], key[1], value, comment))

    def flush(self) -> None:
        """Append the buffered runs to the ``.partial`` file and make them durable."""
        try:
            self._flush()
        except (OSError, RuntimeError) as exc:  # h5py raises both when a write fails
            raise self._cannot_write(exc) from exc

    def _cannot_write(self, exc: BaseException) -> StorageError:
        self.broken = True
        return StorageError(f"{self.partial.name} cannot be written: {os_reason(exc)} (is the disk, "
                            "a quota or a file size limit full?); the runs of its last commit are kept")

    def _flush(self) -> None:
        if self._info:
            f = self.f
            rows = self._info
            table: dict[str, np.ndarray] = {
                "idx": np.array([r[0] for r in rows], dtype=np.int64),
                "status": np.array([r[1] for r in rows], dtype=np.int8),
                "start": np.array([r[2] for r in rows]),
                "end": np.array([r[3] for r in rows]),
                "host": np.array([self.host] * len(rows), dtype=object),
                "job": np.array([self.job] * len(rows), dtype=object),
            }
            for name, column in SHARD_RUN_COLUMNS.items():  # a schema column given no value here: its fill
                if name not in table:
                    table[name] = column.full(len(rows))
            append_rows(f["run_info"], _encode(f["run_info"], table))
            if self._errors:
                e = self._errors
                append_rows(f["errors"], {"idx": np.array([x[0] for x in e], dtype=np.int64),
                                          **{name: np.array([x[i] for x in e], dtype=object)
                                             for i, name in enumerate(("type", "message", "traceback"), start=1)}})
            for (branch, name), col in self._cols.items():
                self._append_column(f, f"{branch}.{name}", col)
            for idx, branch, name, value, comment in self._items:
                grp = f["items"].require_group(f"{run_set_name(idx)}/{run_name(idx)}")
                write_value(grp, f"{branch}.{name}", value)
                set_attrs(grp[f"{branch}.{name}"], comment=comment)
            sync_h5(f)
            self._commit(f)
            self.done.update(r[0] for r in rows)
            self._reset_buffer()
        self._last_flush = time.monotonic()

    def _append_column(self, f: h5py.File, key: str, col: _Column) -> None:
        values = column_array(col.spec, col.values)
        grp = f["columns"].get(key)
        if grp is None:
            grp = f["columns"].create_group(key)
            set_attrs(grp, kind=col.spec[0], dtype=col.spec[1])
            grp.attrs["shape"] = np.array(col.spec[2], dtype=np.int64)
            _create_column(grp, col.spec, values[0].nbytes if values.ndim > 1 else 8)
        elif (get_attr(grp, "kind"), get_attr(grp, "dtype"), tuple(grp.attrs["shape"])) != col.spec:
            for idx, value in zip(col.rows, col.values, strict=True):  # kind changed since resume
                write_value(f["items"].require_group(f"{run_set_name(idx)}/{run_name(idx)}"), key, value)
            return
        append_rows(grp, {"idx": np.array(col.rows, dtype=np.int64), "values": values})

    def finish(self) -> Path:
        """Flush, mark complete and atomically rename the shard to its final name."""
        self.flush()
        try:
            self.f.attrs["complete"] = True
            self.f.attrs["finished"] = time.time()
            values = np.fromiter(last_status(self.f, ()).values(), dtype=np.int8)
            sync_h5(self.f)
            self.f.close()
        except (OSError, RuntimeError) as exc:
            raise self._cannot_write(exc) from exc
        replace_durably(self.partial, self.final)
        commit_path(self.partial).unlink(missing_ok=True)
        CountsCache.record_done(self.final, int(np.count_nonzero(values == OK)),
                                int(np.count_nonzero(values == FAILED)))
        return self.final

    def close(self) -> None:
        """Flush what is buffered and leave the shard as ``.partial`` (for a later resume)."""
        if self.f.id.valid:
            try:
                if not self.broken:
                    self.flush()
            finally:
                with contextlib.suppress(OSError, RuntimeError):  # a shard that cannot be written
                    self.f.close()


def set_aside(path: Path) -> Path:
    """Rename a damaged shard to ``<name>.broken-<ns>`` (kept for a look, never read again);
    its task then counts as not run, so resubmit computes it again."""
    aside = path.with_name(f"{path.name}.broken-{time.time_ns()}")
    os.replace(path, aside)
    return aside


def _locked_by_another(exc: BaseException) -> bool:
    """HDF5 refused the file lock: another process has the shard open for writing."""
    return isinstance(exc, BlockingIOError) or "unable to lock file" in str(exc)


def _create_column(grp: h5py.Group, spec: ColumnSpec, row_bytes: int) -> None:
    """The ``idx`` and ``values`` datasets of a shard column, chunked by the one rule."""
    shape = spec[2]
    rows = int(grp.file.attrs.get("rows_per_chunk", ROWS_PER_CHUNK))  # create_shard's choice
    new_dataset(grp, "idx", shape=(0,), dtype=np.int64, maxshape=(None,), chunks=(rows,), **SMALL_FILTERS)
    new_dataset(grp, "values", shape=(0, *shape), dtype=column_dtype(spec), maxshape=(None, *shape),
                chunks=(chunk_rows(row_bytes, rows), *shape))


def _open_cut_short(path: Path, committed_size: int | None) -> h5py.File:
    """Open a ``.partial`` to read; one cut short by a full disk (still holding all it had at its
    last commit) is first padded, sparsely with zeros, to the size its superblock records."""
    try:
        return h5py.File(path, "r", locking=LOCKING)
    except OSError as exc:
        m = re.search(r"truncated file: eof = (\d+),.* stored_eof = (\d+)", str(exc))
        size = path.stat().st_size
        if m is None or int(m.group(1)) != size or committed_size is None or size < committed_size:
            raise
        os.truncate(path, int(m.group(2)))
        return h5py.File(path, "r", locking=LOCKING)


def _copy_rows(src: h5py.Dataset, dst: h5py.Dataset, n: int) -> None:
    """Append the first ``n`` rows of ``src`` to ``dst``, a block at a time (bounded memory)."""
    if n > src.shape[0]:
        raise StorageError(f"{src.name} has {src.shape[0]} rows, fewer than the {n} committed")
    row_bytes = max(1, src.dtype.itemsize * int(np.prod(src.shape[1:], dtype=np.int64)))
    step = max(1, (32 << 20) // row_bytes)
    for a in range(0, n, step):
        append(dst, src[a:min(n, a + step)])


def last_status(f: h5py.File, sel: Any = ()) -> dict[int, int]:
    """run index -> status of its last row in an open shard (``sel``: only these rows)."""
    table = read_table(f["run_info"], {k: SHARD_RUN_COLUMNS[k] for k in ("idx", "status")}, sel)
    return dict(zip(table["idx"].tolist(), table["status"].tolist(), strict=True))


@dataclass(frozen=True)
class ShardColumn:
    """One column of a shard: a result (or derived parameter) name and its rows."""

    branch: str
    name: str
    spec: ColumnSpec  # (kind, dtype.str, shape of one value)
    idx: np.ndarray   # the run of each row
    values: h5py.Dataset

    def read(self) -> np.ndarray:
        """The values of the rows in ``idx`` (text as an object array of str)."""
        n = len(self.idx)
        if self.spec[0] == "str":
            return np.asarray(self.values.asstr()[:n], dtype=object)
        return np.asarray(self.values[:n])


@dataclass(frozen=True)
class FailedRun:
    run: int
    type: str
    message: str
    traceback: str


class ShardReader:
    """A shard opened to read. ``live``: its writer may hold it (open without locking, and
    tolerate a table caught between two appends). Raises StorageError for anything that is not
    a readable pypet-hpc shard."""

    def __init__(self, path: Path, live: bool = False, committed: bool = False,
                 limits: dict[str, Any] | None = None) -> None:
        """``committed``: ``path`` is a ``.partial``; read only the rows its commit record says are
        durable (the runs a running task has committed). ``limits``: read only these row counts
        (``run_info``, ``errors``, ``columns``: key -> rows), as :attr:`limits` gave them before."""
        self.path = path
        self.limits = limits
        try:
            self.f = open_h5(path, locking=False if live else LOCKING)
        except StorageError as exc:
            raise StorageError(f"{path.name}: {str(exc).removeprefix(f'{path}: ')}") from None
        try:
            kind = get_attr(self.f, "kind")
        except (OSError, KeyError, ValueError) as exc:  # a torn file (its writer killed mid-flush, or live)
            self.f.close()
            raise self._guard(exc) from None
        if kind != SHARD_KIND:
            self.f.close()
            raise StorageError(f"{path.name}: not a pypet-hpc shard")
        if committed and limits is None:
            try:
                self.limits = self._committed()
            except StorageError:
                self.f.close()
                raise

    def _committed(self) -> dict[str, Any]:
        """The row counts of the last durable flush of this ``.partial`` (none: nothing is)."""
        try:
            record = json.loads(commit_path(self.path).read_text())
        except FileNotFoundError:
            return {"run_info": 0, "errors": 0, "columns": {}}
        except (OSError, ValueError) as exc:
            raise StorageError(f"{self.path.name}: unreadable commit record ({exc})") from None
        if record.get("shard_id") != self.shard_id:
            raise StorageError(f"{self.path.name}: its commit record belongs to another file (being rebuilt?)")
        return {"run_info": int(record["run_info"]), "errors": int(record["errors"]),
                "columns": {str(k): int(v) for k, v in record["columns"].items()}}

    def _sel(self, group: str) -> Any:
        return () if self.limits is None else slice(0, self.limits[group])

    def _column_limit(self, key: str) -> int | None:
        """Rows of column ``key`` to read (None: all); 0 for a column with no committed row."""
        return None if self.limits is None else self.limits["columns"].get(key, 0)

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()

    @property
    def plan_hash(self) -> str:
        return str(get_attr(self.f, "plan_hash"))

    @property
    def shard_id(self) -> str:
        return str(get_attr(self.f, "shard_id"))

    @property
    def task(self) -> int:
        return int(get_attr(self.f, "task"))

    @property
    def complete(self) -> bool:
        return bool(self.f.attrs.get("complete", False))

    def problem(self) -> str | None:
        """What makes this shard unfit to merge (a group or dataset it lacks), or None."""
        lost = [f"{group}/{name}" for group, table in (("run_info", SHARD_RUN_COLUMNS), ("errors", ERROR_COLUMNS))
                for name, column in table.items() if column.required and f"{group}/{name}" not in self.f]
        lost += [group for group in ("columns", "items") if group not in self.f]
        return f"damaged shard: no {', '.join(lost)}" if lost else None

    def checksum_problem(self) -> str | None:
        """The datasets whose data fails its checksum or cannot be decoded (reads all), or None."""
        bad = damaged_datasets(self.f)
        return f"damaged data (checksum): {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}" if bad else None

    def _guard(self, exc: BaseException) -> StorageError:
        return StorageError(f"{self.path.name}: unreadable shard ({type(exc).__name__}: {exc})")

    def last_status(self) -> dict[int, int]:
        """run index -> status (1 ok, 2 failed) of every run the shard holds (last row wins)."""
        try:
            return last_status(self.f, self._sel("run_info"))
        except (OSError, KeyError, ValueError) as exc:
            raise self._guard(exc) from None

    def counts(self) -> tuple[int, int]:
        """(ok, failed) runs in the shard."""
        values = np.fromiter(self.last_status().values(), dtype=np.int8)
        return int(np.count_nonzero(values == OK)), int(np.count_nonzero(values == FAILED))

    def run_table(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(runs, columns): each run's last row, ordered by run index."""
        try:
            table = _read_run_info(self.f["run_info"], self._sel("run_info"))
        except (OSError, KeyError, ValueError) as exc:
            raise self._guard(exc) from None
        if self.limits is not None and len(table["idx"]) < self.limits["run_info"]:
            raise StorageError(f"{self.path.name}: caught in the middle of a write (fewer rows than committed)")
        keep = last_rows(table["idx"])
        return table["idx"][keep], {k: v[keep] for k, v in table.items() if k != "idx"}

    def failed_runs(self) -> list[FailedRun]:
        """The runs whose last row failed, with their exception and traceback."""
        try:
            last = last_status(self.f, self._sel("run_info"))
            err = read_table(self.f["errors"], ERROR_COLUMNS, self._sel("errors"))
        except (OSError, KeyError, ValueError) as exc:
            raise self._guard(exc) from None
        seen: dict[int, FailedRun] = {}
        for run, typ, msg, tb in zip(err["idx"].tolist(), err["type"], err["message"], err["traceback"],
                                     strict=True):
            if last.get(run) == FAILED:
                seen[run] = FailedRun(run, typ, msg, tb)
        return list(seen.values())

    def column_rows(self) -> dict[str, int]:
        """``branch.name`` -> rows of each column (counting a retried run twice)."""
        out = {}
        for key, grp in self.f["columns"].items():
            limit = self._column_limit(key)
            n = grp["idx"].shape[0] if limit is None else min(limit, grp["idx"].shape[0])
            if n:
                out[key] = n
        return out

    def columns(self) -> list[ShardColumn]:
        return [col for key in self.f["columns"] if (col := self.column(key)) is not None]

    def column(self, key: str) -> ShardColumn | None:
        """The column ``branch.name``, its values read only when asked; None when the shard has
        no (committed) row of it."""
        grp = self.f["columns"].get(key)
        limit = self._column_limit(key)
        if grp is None or limit == 0:
            return None
        try:
            branch, name = key.split(".", 1)
            spec = (get_attr(grp, "kind"), get_attr(grp, "dtype"), tuple(int(x) for x in grp.attrs["shape"]))
            idx = grp["idx"][()] if limit is None else grp["idx"][:limit]
            return ShardColumn(branch, name, spec, idx, grp["values"])
        except (OSError, KeyError, ValueError) as exc:
            raise self._guard(exc) from None

    def items(self, runs: set[int] | None = None) -> list[tuple[int, str, str, h5py.HLObject]]:
        """(run, branch, name, stored object) of everything kept per run (``runs``: of these only)."""
        out = []
        for run_set in self.f["items"].values():
            for rname, rgrp in run_set.items():
                run = int(rname[4:])
                if runs is not None and run not in runs:
                    continue
                for key in rgrp:
                    branch, name = key.split(".", 1)
                    out.append((run, branch, name, rgrp[key]))
        return out

    def item(self, run: int, key: str) -> h5py.HLObject | None:
        """What run ``run`` kept per run under ``branch.name``, or None."""
        return self.f["items"].get(f"{run_set_name(run)}/{run_name(run)}/{key}")

    def item_names(self, run: int) -> list[str]:
        """``branch.name`` of everything run ``run`` kept per run."""
        grp = self.f["items"].get(f"{run_set_name(run)}/{run_name(run)}")
        return list(grp) if grp is not None else []


class CountsCache:
    """The (ok, failed) runs of shard files, remembered in ``shards/.counts.json`` by file name,
    size and modification time, so that status reads a shard once, not on every call (10,000
    shards cost seconds to open). A file rewritten since (a retried task, a flushed ``.partial``)
    has another size or time and is read again. A cache only: losing it costs time, never truth."""

    NAME = ".counts.json"
    DONE = ".done.jsonl"  # a line appended by each task as it finishes its shard: status opens none of them

    def __init__(self, shards_dir: Path) -> None:
        self.path = shards_dir / self.NAME
        self.done = shards_dir / self.DONE
        self.changed = False
        try:
            data = json.loads(self.path.read_text())
            self.entries: dict[str, list[int]] = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            self.entries = {}
        try:
            lines = self.done.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:  # a torn or garbled line is skipped: its shard is read instead
            try:
                name, *entry = json.loads(line)
            except (ValueError, TypeError):
                continue
            if isinstance(name, str) and len(entry) == 4 and all(isinstance(v, int) for v in entry):
                self.entries[name] = entry
                self.changed = True

    @classmethod
    def record_done(cls, final: Path, ok: int, failed: int) -> None:
        """Append the counts of the shard just finished at ``final`` (one short ``O_APPEND``
        write, so concurrent tasks do not interleave); a cache only, so a failure is ignored."""
        try:
            st = final.stat()
            line = json.dumps([final.name, st.st_size, st.st_mtime_ns, ok, failed]) + "\n"
            fd = os.open(final.parent / cls.DONE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("cannot record the counts of %s: %s", final, exc)

    def counts(self, name: str, stat: os.stat_result, live: bool = False) -> tuple[int, int]:
        """(ok, failed) of the shard file ``name`` whose ``os.stat`` is ``stat``; StorageError
        when it cannot be read (not remembered: it is read again next time)."""
        key = [stat.st_size, stat.st_mtime_ns]
        hit = self.entries.get(name)
        if isinstance(hit, list) and len(hit) == 4 and hit[:2] == key:
            return int(hit[2]), int(hit[3])
        with ShardReader(self.path.parent / name, live=live) as reader:
            ok, failed = reader.counts()
        self.entries[name] = [*key, ok, failed]
        self.changed = True
        return ok, failed

    def save(self, keep: set[str] | None = None) -> None:
        """Write the cache when it changed (``keep``: forget the names not in it); a workdir this
        process cannot write keeps its old cache."""
        if keep is not None and set(self.entries) - keep:
            self.entries = {k: v for k, v in self.entries.items() if k in keep}
            self.changed = True
        if not self.changed:
            return
        try:
            atomic_write(self.path, json.dumps(self.entries, separators=(",", ":")), durable=False)
            self.done.unlink(missing_ok=True)  # folded in (a line appended meanwhile is lost: a cache miss)
        except OSError as exc:
            log.debug("cannot write %s: %s", self.path, exc)
        self.changed = False


class ShardBuilder:
    """Writes a complete shard in one go from data at hand (combine turns a trajectory file into
    one this way); the shard is marked complete by :meth:`close`."""

    def __init__(self, path: Path, plan_hash: str, task: int, **attrs: Any) -> None:
        self.f = create_shard(path, plan_hash, task)
        set_attrs(self.f, **attrs)

    def run_table(self, idx: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        write_table(self.f["run_info"], _encode(self.f["run_info"], {"idx": idx, **columns}))

    def errors(self, columns: dict[str, np.ndarray]) -> None:
        write_table(self.f["errors"], columns)

    def column(self, branch: str, name: str, spec: ColumnSpec, idx: np.ndarray, rows: Any,
               row_bytes: int) -> None:
        """A column of ``len(idx)`` rows; ``rows(k0, k1)`` gives rows k0..k1 (read in blocks)."""
        grp = self.f["columns"].create_group(f"{branch}.{name}")
        set_attrs(grp, kind=spec[0], dtype=spec[1])
        grp.attrs["shape"] = np.array(spec[2], dtype=np.int64)
        _create_column(grp, spec, row_bytes)
        step = max(1, (32 << 20) // max(1, row_bytes))
        append_rows(grp, {"idx": idx})
        for a in range(0, len(idx), step):
            append_rows(grp, {"values": rows(a, min(len(idx), a + step))})

    def copy_item(self, run: int, branch: str, name: str, obj: h5py.HLObject) -> None:
        target = self.f["items"].require_group(f"{run_set_name(run)}/{run_name(run)}")
        obj.parent.copy(obj, target, name=f"{branch}.{name}")

    def __enter__(self) -> ShardBuilder:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        """Mark the shard complete, unless the block raised."""
        try:
            if exc_type is None:
                set_attrs(self.f, complete=True)
        finally:
            self.f.close()
