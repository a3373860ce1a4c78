"""The run table: one row per run, with the same columns in shards and in trajectory files.

This is the one place that says which columns a run has. To add a ``run_info`` column, add it
to :data:`RUN_COLUMNS` (shards and trajectory files then create, append, merge, combine, load
and show it) and give the worker a value for it in ``ShardWriter``; files written before it
existed read back with the column's fill value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from ..codec import STR_DTYPE, new_dataset
from ..runstore import (
    RunStatus as RunStatus,  # defined below the model and analysis, which report it
)

CHUNK_BYTES = 64 << 10  # target size of one HDF5 chunk, in shards and merged files alike


@dataclass(frozen=True)
class Column:
    """One column of a run table: its dtype, the value of a run that has none, and whether a
    file without it is damaged (False: the column is newer than some files; read as ``fill``)."""

    dtype: Any
    fill: Any
    required: bool = True

    @property
    def text(self) -> bool:
        return self.dtype is STR_DTYPE

    def full(self, n: int) -> np.ndarray:
        if self.text:
            return np.full(n, self.fill, dtype=object)
        return np.full(n, self.fill, dtype=self.dtype)


RUN_COLUMNS: dict[str, Column] = {
    "status": Column(np.dtype(np.int8), int(RunStatus.MISSING)),
    "start": Column(np.dtype(np.float64), np.nan),
    "end": Column(np.dtype(np.float64), np.nan),
    "host": Column(STR_DTYPE, "", required=False),  # where the run ran
    "job": Column(STR_DTYPE, "", required=False),   # the scheduler's id of its process
}
SHARD_RUN_COLUMNS: dict[str, Column] = {"idx": Column(np.dtype(np.int64), -1), **RUN_COLUMNS}
# a trajectory file's run table is indexed by run; it also records each run's task
FILE_RUN_COLUMNS: dict[str, Column] = {**RUN_COLUMNS, "task": Column(np.dtype(np.int32), -1, required=False)}
ERROR_COLUMNS: dict[str, Column] = {
    "idx": Column(np.dtype(np.int64), -1),
    "type": Column(STR_DTYPE, ""),
    "message": Column(STR_DTYPE, ""),
    "traceback": Column(STR_DTYPE, ""),
}


def chunk_rows(row_bytes: int, cap: int) -> int:
    """Rows per chunk: about :data:`CHUNK_BYTES` a chunk, at most ``cap`` rows; rows of
    ``CHUNK_BYTES`` or more get a chunk each (merge then copies them raw, without decoding)."""
    return int(max(1, min(cap, CHUNK_BYTES // max(1, row_bytes))))


SMALL_FILTERS: dict[str, Any] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
"""For columns of small numbers (run indices, statuses, times): shuffled and deflated, they take
a fraction of their raw bytes (a shard's run table and index columns would otherwise outweigh
its results)."""


def create_table(group: h5py.Group, columns: Mapping[str, Column], n: int = 0,
                 chunk_cap: int | None = None, compress: bool = False) -> None:
    """Create ``columns`` in ``group`` with ``n`` rows of fill values (resizable); ``compress``:
    numeric columns get :data:`SMALL_FILTERS`."""
    for name, col in columns.items():
        itemsize = 8 if col.text else col.dtype.itemsize
        chunks = (chunk_rows(itemsize, chunk_cap),) if chunk_cap else True
        if col.text:
            new_dataset(group, name, shape=(n,), dtype=STR_DTYPE, maxshape=(None,), chunks=chunks)
        else:
            new_dataset(group, name, data=col.full(n), maxshape=(None,), chunks=chunks,
                        **(SMALL_FILTERS if compress else {}))


def read_table(group: h5py.Group, columns: Mapping[str, Column], sel: Any = ()) -> dict[str, np.ndarray]:
    """``columns`` of ``group`` as arrays (text as object arrays); a non-required column the file
    lacks comes back as fill values."""
    out: dict[str, np.ndarray] = {}
    n: int | None = None
    for name, col in columns.items():
        ds = group.get(name)
        if ds is None:
            if col.required:
                raise KeyError(f"{group.name}/{name}")
            continue
        out[name] = np.asarray(ds.asstr()[sel], dtype=object) if col.text else np.asarray(ds[sel])
        n = len(out[name]) if n is None else min(n, len(out[name]))
    n = n or 0
    for name, col in columns.items():  # a live shard may be caught between two appends: cut to the shortest
        out[name] = out[name][:n] if name in out else col.full(n)
    return out


def append(ds: h5py.Dataset, data: np.ndarray) -> None:
    """Append rows to a resizable dataset."""
    n = ds.shape[0]
    ds.resize(n + len(data), axis=0)
    ds[n:] = data


def append_rows(group: h5py.Group, rows: Mapping[str, np.ndarray]) -> None:
    """Append the same number of rows to each named column of ``group``."""
    for name, data in rows.items():
        append(group[name], data)


def write_table(group: h5py.Group, data: Mapping[str, np.ndarray]) -> None:
    """Replace the content of each named column of ``group`` with ``data`` (resizing it)."""
    for name, values in data.items():
        ds = group[name]
        if ds.shape[0] != len(values):
            ds.resize((len(values), *ds.shape[1:]))
        if len(values):
            ds[...] = values


def last_rows(idx: np.ndarray) -> np.ndarray:
    """Row positions holding each run's last row, ordered by run index: when a run appears twice
    (a failed run retried in the same shard), the last row wins. The one implementation."""
    _, first_rev = np.unique(idx[::-1], return_index=True)
    return np.asarray(len(idx) - 1 - first_rev, dtype=np.int64)
