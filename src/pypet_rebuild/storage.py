"""The trajectory file: its layout, the writer of a trajectory's skeleton, and the lazy loader.

Layout under ``/trajectories/<name>/`` (format version 1):

- ``config/``, ``parameters/``, ``derived_parameters/``, ``results/``: trajectory-level leaves as
  nested groups, one codec object per leaf (attributes ``leaf`` and ``comment``).
- ``explored/<name>``: one column per explored parameter, one row per run.
- ``run_info/``: ``status`` (0 missing, 1 ok, 2 failed), ``start``, ``end``, ``host``, ``task``.
- ``errors/``: ``idx``, ``type``, ``message``, ``traceback`` of failed runs.
- ``<branch>/runs/columns/<name>`` with ``<branch>/runs/masks/<name>``: values that recur across
  runs with one dtype and shape, one row per run; ``<branch>/runs/run_set_XXXXX/run_XXXXXXXX/<name>``:
  everything else, bucketed by 1000 runs.
- ``merge_log/``: which shards were merged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from ._version import __version__
from .codec import (
    STR_DTYPE,
    ColumnSpec,
    column_array,
    column_dtype,
    column_element,
    column_spec,
    read_value,
    write_value,
)
from .errors import StorageError
from .model import BRANCHES, RUN_BRANCHES, Parameter, Result, Trajectory, loaded_leaf
from .naming import run_name, run_set_name
from .runstore import TrajectoryState, masked_column

FORMAT_VERSION = 1
ROOT = "trajectories"
MISSING, OK, FAILED = 0, 1, 2
STATUS_NAMES = {MISSING: "missing", OK: "ok", FAILED: "failed"}
LOCKING: Any = "best-effort"


def open_h5(path: str | os.PathLike[str], mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning the usual failures into one clear StorageError."""
    p = Path(path)
    if mode == "r":
        if not p.exists():
            raise StorageError(f"{p}: no such file")
        if p.is_dir():
            raise StorageError(f"{p}: is a directory, not an HDF5 file")
    try:
        return h5py.File(p, mode, locking=LOCKING)
    except OSError as exc:
        if mode == "r" and not h5py.is_hdf5(p):
            raise StorageError(f"{p}: not an HDF5 file") from None
        raise StorageError(f"{p}: cannot open ({exc})") from None


def fsync_path(path: Path) -> None:
    """Make a file's (or a directory's, after a rename in it) content durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def set_attrs(obj: h5py.HLObject, **attrs: Any) -> None:
    for key, value in attrs.items():
        if isinstance(value, str):
            obj.attrs.create(key, value, dtype=STR_DTYPE)
        else:
            obj.attrs[key] = value


def get_attr(obj: h5py.HLObject, key: str, default: Any = None) -> Any:
    v = obj.attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


def trajectory_group(f: h5py.File, name: str | None = None) -> h5py.Group:
    """Find ``/trajectories/<name>``, checking the format version."""
    if ROOT not in f:
        raise StorageError(f"{f.filename}: HDF5 file without a trajectory (no /{ROOT} group)")
    names = list(f[ROOT])
    if name is None:
        if len(names) != 1:
            raise StorageError(f"{f.filename} holds {len(names)} trajectories ({', '.join(names)}); pass name=")
        name = names[0]
    if name not in f[ROOT]:
        raise StorageError(f"{f.filename}: no trajectory named {name!r} (found: {', '.join(names)})")
    grp = f[ROOT][name]
    version = get_attr(grp, "format_version")
    if version is None:
        raise StorageError(f"{f.filename}: trajectory {name!r} has no format version; not a pypet-hpc file")
    if int(version) > FORMAT_VERSION:
        raise StorageError(
            f"{f.filename}: format version {version} is newer than this pypet-hpc understands "
            f"({FORMAT_VERSION}); upgrade pypet-hpc"
        )
    return grp


# ---------------------------------------------------------------------------------------------
# Writing


def write_skeleton(
    f: h5py.File, traj: Trajectory, n_runs: int, plan_hash: str = "", **attrs: Any
) -> h5py.Group:
    """Write a trajectory without run data: its leaves, explored columns and an empty run table."""
    grp = f.require_group(ROOT).create_group(traj.name)
    set_attrs(grp, format_version=FORMAT_VERSION, kind="pypet-hpc trajectory", name=traj.name,
              comment=traj.comment, n_runs=n_runs, plan_hash=plan_hash, library_version=__version__,
              created=time.time(), **attrs)
    for branch in BRANCHES:
        bgrp = grp.create_group(branch)
        for name, leaf in traj.state.leaves[branch].items():
            write_leaf(bgrp, name, leaf)
    explored = grp.create_group("explored")
    set_attrs(explored, order=",".join(traj.state.explored))
    for name, values in traj.state.explored.items():
        write_column(explored, name, values)
    info = grp.create_group("run_info")
    info.create_dataset("status", data=np.zeros(n_runs, dtype=np.int8), maxshape=(None,))
    for col in ("start", "end"):
        info.create_dataset(col, data=np.full(n_runs, np.nan), maxshape=(None,))
    info.create_dataset("task", data=np.full(n_runs, -1, dtype=np.int32), maxshape=(None,))
    for col in ("host", "job"):
        info.create_dataset(col, shape=(n_runs,), dtype=STR_DTYPE, maxshape=(None,))
    errors = grp.create_group("errors")
    errors.create_dataset("idx", shape=(0,), dtype=np.int64, maxshape=(None,))
    for col in ("type", "message", "traceback"):
        errors.create_dataset(col, shape=(0,), dtype=STR_DTYPE, maxshape=(None,))
    return grp


def write_leaf(branch_group: h5py.Group, name: str, leaf: Parameter[Any] | Result[Any]) -> None:
    parts = name.split(".")
    parent = branch_group
    for part in parts[:-1]:
        parent = parent.require_group(part)
    write_value(parent, parts[-1], leaf.value)
    set_attrs(parent[parts[-1]], leaf=type(leaf).__name__, comment=leaf.comment)


def write_column(group: h5py.Group, name: str, values: Sequence[Any]) -> None:
    """A column of explored values, with the codec's kind so each element comes back typed."""
    specs = {column_spec(v) for v in values}
    if len(specs) != 1 or None in specs:
        raise StorageError(f"explored parameter {name!r}: values must be scalars or same-shaped arrays")
    spec: ColumnSpec = specs.pop()  # type: ignore[assignment]
    ds = group.create_dataset(name, data=column_array(spec, list(values)), dtype=column_dtype(spec))
    set_attrs(ds, kind=spec[0], dtype=spec[1])


def read_column(ds: h5py.Dataset, sel: Any = ()) -> np.ndarray:
    data = ds.asstr()[sel] if get_attr(ds, "kind") == "str" else ds[sel]
    return np.asarray(data)


def column_values(ds: h5py.Dataset) -> list[Any]:
    """A column as a list of its original element type (Python scalars stay Python scalars)."""
    kind = get_attr(ds, "kind")
    data = read_column(ds)
    if kind in ("int", "float", "bool", "complex", "str"):
        return data.tolist()
    return [column_element(kind, x) for x in data]


# ---------------------------------------------------------------------------------------------
# Reading


class FileRunStore:
    """Run data of a trajectory file, read only when asked for."""

    def __init__(self, path: Path, name: str, allow_pickle: bool) -> None:
        self.path = path
        self.name = name
        self.allow_pickle = allow_pickle
        with self._group() as grp:
            self._columns = {b: _names(grp, f"{b}/runs/columns") for b in RUN_BRANCHES}
            self._item_index: dict[str, dict[str, list[int]]] | None = None

    @contextmanager
    def _group(self) -> Iterator[h5py.Group]:
        with open_h5(self.path) as f:
            yield f[ROOT][self.name]

    def _items(self) -> dict[str, dict[str, list[int]]]:
        """branch -> name -> runs holding it as a per-run object (built once, on first need)."""
        if self._item_index is None:
            index: dict[str, dict[str, list[int]]] = {b: {} for b in RUN_BRANCHES}
            with self._group() as grp:
                for branch in RUN_BRANCHES:
                    runs = grp.get(f"{branch}/runs")
                    if runs is None:
                        continue
                    for set_name, run_set in runs.items():
                        if not set_name.startswith("run_set_"):
                            continue
                        for rname, rgrp in run_set.items():
                            for leaf in rgrp:
                                index[branch].setdefault(leaf, []).append(int(rname[4:]))
            self._item_index = index
        return self._item_index

    def add(self, run: int, branch: str, leaf: Any) -> None:
        raise StorageError("a loaded trajectory is read-only; run a sweep to add results")

    def get(self, run: int, branch: str, name: str) -> Any:
        cls = Result if branch == "results" else Parameter
        with self._group() as grp:
            if name in self._columns[branch]:
                base = f"{branch}/runs"
                if grp[f"{base}/masks/{name}"][run]:
                    ds = grp[f"{base}/columns/{name}"]
                    value = column_element(get_attr(ds, "kind"), read_column(ds, run))
                    return loaded_leaf(cls, name, value, get_attr(ds, "comment", ""))
            obj = grp.get(f"{branch}/runs/{run_set_name(run)}/{run_name(run)}/{name}")
            if obj is None:
                return None
            value = read_value(obj, self.allow_pickle, f"{branch}.{name} of {run_name(run)}")
            return loaded_leaf(cls, name, value, get_attr(obj, "comment", ""))

    def names_in_run(self, run: int, branch: str) -> list[str]:
        with self._group() as grp:
            names = [n for n in self._columns[branch] if grp[f"{branch}/runs/masks/{n}"][run]]
            rgrp = grp.get(f"{branch}/runs/{run_set_name(run)}/{run_name(run)}")
            return names + (list(rgrp) if rgrp is not None else [])

    def names(self, branch: str) -> list[str]:
        return list(dict.fromkeys(self._columns[branch] + list(self._items()[branch])))

    def runs_with(self, branch: str, name: str) -> list[int]:
        if name in self._columns[branch]:
            with self._group() as grp:
                return np.flatnonzero(grp[f"{branch}/runs/masks/{name}"][()]).tolist()
        return self._items()[branch].get(name, [])

    def column(self, branch: str, name: str, n_runs: int) -> np.ma.MaskedArray:
        with self._group() as grp:
            if name in self._columns[branch]:
                ds = grp[f"{branch}/runs/columns/{name}"]
                data = read_column(ds)
                mask = ~grp[f"{branch}/runs/masks/{name}"][()]
                if data.ndim > 1:
                    mask = np.broadcast_to(mask.reshape(-1, *[1] * (data.ndim - 1)), data.shape)
                return np.ma.MaskedArray(data, mask=mask)
        runs = self._items()[branch].get(name)
        if not runs:
            raise KeyError(f"no run has {branch}.{name}")
        return masked_column([(r, self.get(r, branch, name).value) for r in runs], n_runs)

    def run_info(self, n_runs: int = 0) -> dict[str, np.ndarray]:
        with self._group() as grp:
            info = {k: read_run_info(grp["run_info"], k) for k in grp["run_info"]}
            info["idx"] = np.arange(len(info["status"]), dtype=np.int64)
            err = grp["errors"]
            errors = np.full(len(info["status"]), "", dtype=object)
            if len(err["idx"]):
                idx = err["idx"][()]
                errors[idx] = [f"{t}: {m}" for t, m in zip(err["type"].asstr()[()], err["message"].asstr()[()], strict=True)]
            info["error"] = errors
        return info

    def traceback(self, run: int) -> str | None:
        with self._group() as grp:
            err = grp["errors"]
            hits = np.flatnonzero(err["idx"][()] == run)
            return None if not len(hits) else str(err["traceback"].asstr()[int(hits[-1])])


def read_run_info(group: h5py.Group, key: str) -> np.ndarray:
    ds = group[key]
    return np.asarray(ds.asstr()[()] if ds.dtype == STR_DTYPE else ds[()])


def _names(grp: h5py.Group, path: str) -> list[str]:
    sub = grp.get(path)
    return list(sub) if sub is not None else []


def load_trajectory(
    path: str | os.PathLike[str], name: str | None = None, allow_pickle: bool = False
) -> Trajectory:
    """Load a trajectory file (merged or written by HDF5StorageService) with natural naming.

    Parameters and explored values are read at once; run data is read when touched.
    Pickled values are only unpickled when ``allow_pickle=True``.
    """
    p = Path(path)
    with open_h5(p) as f:
        grp = trajectory_group(f, name)
        state = TrajectoryState()
        for branch in BRANCHES:
            for leaf_name, obj in _iter_leaves(grp[branch]):
                value = read_value(obj, allow_pickle, f"{branch}.{leaf_name}")
                cls = Result if get_attr(obj, "leaf") == "Result" else Parameter
                state.leaves[branch][leaf_name] = loaded_leaf(cls, leaf_name, value, get_attr(obj, "comment", ""))
        order = [n for n in get_attr(grp["explored"], "order", "").split(",") if n]
        state.explored = {n: column_values(grp["explored"][n]) for n in order}
        state.defaults = {n: state.leaves["parameters"][n].value for n in order}
        state.n_runs = int(get_attr(grp, "n_runs"))
        name = get_attr(grp, "name")
        state.run_store = FileRunStore(p, name, allow_pickle)
        return Trajectory.restore(name, get_attr(grp, "comment", ""), state, file_path=str(p))


def _iter_leaves(group: h5py.Group, prefix: str = "") -> Iterator[tuple[str, h5py.HLObject]]:
    for key, obj in group.items():
        if key == "runs" and not prefix:
            continue
        if "leaf" in obj.attrs:
            yield prefix + key, obj
        elif isinstance(obj, h5py.Group):
            yield from _iter_leaves(obj, f"{prefix}{key}.")


class StorageService(Protocol):
    """Where an Environment puts the trajectory file."""

    file_path: Path


class HDF5StorageService:
    """Store the trajectory in one HDF5 file at ``file_path`` (written atomically by merge)."""

    def __init__(self, file_path: str | os.PathLike[str]) -> None:
        self.file_path = Path(file_path)

    def load(self, name: str | None = None, allow_pickle: bool = False) -> Trajectory:
        return load_trajectory(self.file_path, name, allow_pickle)

    def __repr__(self) -> str:
        return f"HDF5StorageService(file_path={str(self.file_path)!r})"
