"""The trajectory file: its layout, the skeleton writer, the shard merger and the lazy loader.

Layout under ``/trajectories/<name>/`` (format version 1):

- ``config/``, ``parameters/``, ``derived_parameters/``, ``results/``: trajectory-level leaves as
  nested groups, one codec object per leaf (attributes ``leaf`` and ``comment``; ``leaf_class``
  ``module:qualname`` and ``field.<name>`` for a subclass and its extra fields). A multi-item
  result is a group with attribute ``items`` (JSON list of names) holding one codec object per
  item. Group nodes are HDF5 groups (attribute ``comment``); a link is an HDF5 soft link to the
  node's path, in its group or, at the trajectory's top, in ``links/``. Annotations of any node
  (the trajectory's group too) are attributes ``annotation.<key>`` (str, bool, int, float).
- ``explored/<name>``: one column per explored parameter, one row per run.
- ``run_info/``: the run table, one row per run (:data:`.schema.FILE_RUN_COLUMNS`: status, start,
  end, host, job, task).
- ``errors/``: :data:`.schema.ERROR_COLUMNS` (idx, type, message, traceback) of failed runs.
- ``<branch>/runs/columns/<name>`` with ``<branch>/runs/masks/<name>``: values that recur across
  runs with one dtype and shape, one row per run; ``<branch>/runs/run_set_XXXXX/run_XXXXXXXX/<name>``:
  everything else, bucketed by 1000 runs. Item ``amount`` of a per-run multi-item result
  ``money`` is stored as the name ``money:amount`` (a column when it recurs, like any value).
- ``merge_log/``: which shards were merged.

Only this module knows this layout: the merge (:class:`ShardMerger`), combine
(:func:`export_runs`), ``show`` (:func:`summarize`) and loading all go through it.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .._version import __version__
from ..codec import (
    ColumnSpec,
    PickleRefusedError,
    column_array,
    column_dtype,
    column_element,
    column_spec,
    new_dataset,
    read_value,
    scalar_column,
    write_value,
)
from ..errors import DamagedFileError, PypetError, StorageError, UnsupportedValueError, check_type
from ..model import Parameter, Result, Trajectory, class_path, extra_fields, leaf_class, loaded_leaf
from ..naming import ITEM_SEP, run_name, run_set_name, split_item
from ..runstore import (
    ANNOTATION_TYPES,
    BRANCHES,
    RUN_BRANCHES,
    Annotations,
    GroupInfo,
    TrajectoryState,
    is_multi,
    masked_column,
)
from .files import (
    LOCKING,
    abandon_h5,
    discard_writes,
    disk_full,
    get_attr,
    open_h5,
    os_reason,
    replace_durably,
    set_attrs,
    sync_h5,
)
from .journal import JournaledFile, kill_point
from .schema import (
    ERROR_COLUMNS,
    FILE_RUN_COLUMNS,
    RUN_COLUMNS,
    RunStatus,
    chunk_rows,
    create_table,
    last_rows,
    read_table,
    write_table,
)
from .shard import ShardBuilder, ShardColumn, ShardReader, set_aside

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
ROOT = "trajectories"
MAX_CHUNK_ROWS = 8192  # rows per chunk of a merged column, at most
BLOCK_BYTES = 32 << 20  # rows of a column copied per step: bounds merge memory
SMALL_COLUMN_BYTES = 64 << 20  # columns up to this size are updated in memory, written once


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


def write_skeleton(path: Path, traj: Trajectory, n_runs: int, plan_hash: str = "", **attrs: Any) -> None:
    """Write (atomically and durably) a trajectory file without run data: its leaves, explored
    columns and an empty run table."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", locking=LOCKING) as f:
            _write_skeleton(f, traj, n_runs, plan_hash, **attrs)
            sync_h5(f)
        replace_durably(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_skeleton(f: h5py.File, traj: Trajectory, n_runs: int, plan_hash: str, **attrs: Any) -> None:
    grp = f.require_group(ROOT).create_group(traj.name)
    set_attrs(grp, format_version=FORMAT_VERSION, kind="pypet-hpc trajectory", name=traj.name,
              comment=traj.comment, n_runs=n_runs, plan_hash=plan_hash, library_version=__version__,
              created=time.time(), **attrs)
    state = traj.state
    _put_attrs(grp, ANNOTATION, state.annotations)
    for branch in BRANCHES:
        bgrp = grp.create_group(branch)
        for name, leaf in state.leaves[branch].items():
            write_leaf(bgrp, name, leaf)
        for path, info in state.groups[branch].items():
            ggrp = bgrp.require_group(path.replace(".", "/")) if path else bgrp
            if info.comment:
                set_attrs(ggrp, comment=info.comment)
            _put_attrs(ggrp, ANNOTATION, info.annotations)
    for path, dest in state.links.items():
        branch, _, rest = path.partition(".")
        parent, _, last = (rest if branch in BRANCHES else path).rpartition(".")
        holder = grp[branch] if branch in BRANCHES else grp.require_group("links")
        if parent:
            holder = holder.require_group(parent.replace(".", "/"))
        holder[last] = h5py.SoftLink(f"{grp.name}/{dest.replace('.', '/')}")
    explored = grp.create_group("explored")
    set_attrs(explored, order=",".join(traj.state.explored))
    for name, values in traj.state.explored.items():
        write_column(explored, name, values)
    create_table(grp.create_group("run_info"), FILE_RUN_COLUMNS, n_runs)
    create_table(grp.create_group("errors"), ERROR_COLUMNS)


ANNOTATION = "annotation."  # attribute prefix of a node's annotations
FIELD = "field."  # attribute prefix of the extra dataclass fields of a custom leaf class


def write_leaf(branch_group: h5py.Group, name: str, leaf: Parameter[Any] | Result[Any]) -> None:
    parts = name.split(".")
    parent = branch_group
    for part in parts[:-1]:
        parent = parent.require_group(part)
    if is_multi(leaf):
        obj = parent.create_group(parts[-1])
        for key, item in leaf.value.items():
            write_value(obj, key, item)
        set_attrs(obj, items=json.dumps(list(leaf.value)))
    else:
        write_value(parent, parts[-1], leaf.value)
        obj = parent[parts[-1]]
    base = "Result" if isinstance(leaf, Result) else "Parameter"
    set_attrs(obj, leaf=base, comment=leaf.comment)
    if type(leaf) not in (Parameter, Result):
        set_attrs(obj, leaf_class=class_path(type(leaf)))
        try:
            _put_attrs(obj, FIELD, extra_fields(leaf))
        except UnsupportedValueError as exc:
            raise StorageError(f"{name}: a field of {type(leaf).__name__} cannot be stored ({exc})") from None
    _put_attrs(obj, ANNOTATION, leaf.__dict__.get("_annotations") or {})


def _put_attrs(obj: h5py.HLObject, prefix: str, values: dict[str, Any]) -> None:
    """Annotations (or custom fields) as attributes ``<prefix><key>``: str, bool, int, float."""
    for key, value in values.items():
        if type(value) not in ANNOTATION_TYPES:
            raise UnsupportedValueError(f"{key!r}: {type(value).__name__} (str, bool, int and float can be stored)")
        set_attrs(obj, **{prefix + key: value})


def _get_attrs(obj: h5py.HLObject, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in obj.attrs:
        if key.startswith(prefix):
            v = get_attr(obj, key)
            out[key[len(prefix):]] = (bool(v) if isinstance(v, np.bool_) else int(v) if isinstance(v, np.integer)
                                      else float(v) if isinstance(v, np.floating) else v)
    return out


def write_column(group: h5py.Group, name: str, values: Sequence[Any]) -> None:
    """A column of explored values, with the codec's kind so each element comes back typed."""
    fast = scalar_column(values)
    if fast is not None:
        spec, data = fast
    else:
        specs = {column_spec(v) for v in values}
        if len(specs) != 1 or None in specs:
            raise StorageError(f"explored parameter {name!r}: values must be scalars or same-shaped arrays")
        spec = specs.pop()  # type: ignore[assignment]
        data = column_array(spec, list(values))
    ds = new_dataset(group, name, data=data, dtype=column_dtype(spec), maxshape=(None, *np.shape(data)[1:]))
    set_attrs(ds, kind=spec[0], dtype=spec[1])


def read_column(ds: h5py.Dataset, sel: Any = ()) -> np.ndarray:
    data = ds.asstr()[sel] if get_attr(ds, "kind") == "str" else ds[sel]
    return np.asarray(data)


def column_values(ds: h5py.Dataset) -> list[Any]:
    """A column as a list of its original element type (Python scalars stay Python scalars)."""
    kind = get_attr(ds, "kind")
    data = read_column(ds)
    if kind in ("int", "float", "bool", "complex", "str"):
        values: list[Any] = data.tolist()
        return values
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
        node = self._get(run, branch, name)
        if node is None and ITEM_SEP not in name:
            items = {item: leaf.value for item, leaf in
                     ((split_item(key)[1], self._get(run, branch, key)) for key in self._item_names(branch, name))
                     if leaf is not None}
            if items:
                cls = Result if branch == "results" else Parameter
                return loaded_leaf(cls, name, items, "", items=True)
        return node

    def _item_names(self, branch: str, name: str) -> list[str]:
        """The stored names of the items of multi-item result ``name`` (``money:amount``, ...)."""
        head = name + ITEM_SEP
        return [n for n in dict.fromkeys(self._columns[branch] + list(self._items()[branch])) if n.startswith(head)]

    def _get(self, run: int, branch: str, name: str) -> Any:
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
        """The names run ``run`` added (a multi-item result once, not per item)."""
        with self._group() as grp:
            names = [n for n in self._columns[branch] if grp[f"{branch}/runs/masks/{n}"][run]]
            rgrp = grp.get(f"{branch}/runs/{run_set_name(run)}/{run_name(run)}")
            names += list(rgrp) if rgrp is not None else []
        return list(dict.fromkeys(split_item(n)[0] for n in names))

    def names(self, branch: str) -> list[str]:
        return list(dict.fromkeys(split_item(n)[0] for n in self._columns[branch] + list(self._items()[branch])))

    def runs_with(self, branch: str, name: str) -> list[int]:
        items = self._items()[branch].get(name, [])
        if name in self._columns[branch]:
            with self._group() as grp:
                in_column = np.flatnonzero(grp[f"{branch}/runs/masks/{name}"][()]).tolist()
            return sorted({*in_column, *items}) if items else in_column
        if ITEM_SEP not in name and not items:
            keys = self._item_names(branch, name)
            if keys:
                return sorted(set().union(*(self.runs_with(branch, k) for k in keys)))
        return items

    def column(self, branch: str, name: str, n_runs: int) -> np.ma.MaskedArray:
        # a name may be a column for some runs and per-run objects for others (values that do not
        # fit the column, e.g. of another type): then both, placed by run
        items = self._items()[branch].get(name)
        if name in self._columns[branch]:
            with self._group() as grp:
                ds = grp[f"{branch}/runs/columns/{name}"]
                kind = get_attr(ds, "kind")
                data = read_column(ds)
                has = grp[f"{branch}/runs/masks/{name}"][()]
            if items:
                found = [(int(r), column_element(kind, data[r])) for r in np.flatnonzero(has)]
                for r in items:
                    try:
                        found.append((r, self.get(r, branch, name).value))
                    except PickleRefusedError:  # stays masked here; touching the run itself says why
                        continue
                return masked_column(sorted(found, key=lambda pair: pair[0]), n_runs)
            mask = ~has
            if data.ndim > 1:
                mask = np.broadcast_to(mask.reshape(-1, *[1] * (data.ndim - 1)), data.shape)
            return np.ma.MaskedArray(data, mask=mask)
        if not items:
            raise KeyError(f"no run has {branch}.{name}")
        return masked_column([(r, self.get(r, branch, name).value) for r in items], n_runs)

    def run_info(self, n_runs: int = 0) -> dict[str, np.ndarray]:
        with self._group() as grp:
            info = read_table(grp["run_info"], FILE_RUN_COLUMNS)
            info["idx"] = np.arange(len(info["status"]), dtype=np.int64)
            err = read_table(grp["errors"], ERROR_COLUMNS)
            errors = np.full(len(info["status"]), "", dtype=object)
            if len(err["idx"]):
                errors[err["idx"]] = [f"{t}: {m}" for t, m in zip(err["type"], err["message"], strict=True)]
            info["error"] = errors
        return info

    def traceback(self, run: int) -> str | None:
        with self._group() as grp:
            err = grp["errors"]
            hits = np.flatnonzero(err["idx"][()] == run)
            return None if not len(hits) else str(err["traceback"].asstr()[int(hits[-1])])


def _names(grp: h5py.Group, path: str) -> list[str]:
    sub = grp.get(path)
    return list(sub) if sub is not None else []


def load_trajectory(
    path: str | os.PathLike[str], name: str | None = None, allow_pickle: bool = False, load_data: bool = True,
    classes: Sequence[type[Any]] = (), allow_import: Sequence[str] = (),
) -> Trajectory:
    """Load a trajectory file (merged or written by HDF5StorageService) with natural naming.

    Parameters and explored values are read at once; run data is read when touched.
    ``load_data=False`` loads the skeleton: the tree, comments and run table, with every
    trajectory-level result empty until ``traj.load_item(name)`` reads it.
    Pickled values are only unpickled when ``allow_pickle=True``. A leaf stored as a subclass of
    Parameter or Result comes back as that class when it is among ``classes``, registered
    (``register_leaf_class``) or in a module under an ``allow_import`` prefix (``["mypkg."]``);
    otherwise as the base class, with one warning per class.
    """
    check_type(path, (str, os.PathLike), "load_trajectory(path)", "a path")
    check_type(classes, (list, tuple), "load_trajectory(classes=...)", "a list of classes")
    check_type(allow_import, (list, tuple), "load_trajectory(allow_import=...)", "a list of module prefixes")
    p = Path(path)
    warned: set[str] = set()
    with open_h5(p) as f:
        grp = trajectory_group(f, name)
        state = TrajectoryState()
        state.annotations = Annotations(_get_attrs(grp, ANNOTATION))
        top = len(grp.name) + 1
        for branch in BRANCHES:
            for kind, node_name, obj in _walk(grp[branch]):
                if kind == "link":
                    state.links[f"{branch}.{node_name}"] = obj[top:].replace("/", ".")
                elif kind == "group":
                    state.groups[branch][node_name] = GroupInfo(get_attr(obj, "comment", ""),
                                                                Annotations(_get_attrs(obj, ANNOTATION)))
                else:
                    state.leaves[branch][node_name] = _load_leaf(obj, f"{branch}.{node_name}", allow_pickle,
                                                                 classes, allow_import, warned, load_data)
            annotated = _get_attrs(grp[branch], ANNOTATION)
            if annotated:
                state.groups[branch][""] = GroupInfo(annotations=Annotations(annotated))
        for kind, link_name, target in _walk(grp["links"]) if "links" in grp else ():
            if kind == "link":
                state.links[link_name] = target[top:].replace("/", ".")
        order = [n for n in get_attr(grp["explored"], "order", "").split(",") if n]
        state.explored = {n: column_values(grp["explored"][n]) for n in order}
        state.defaults = {n: state.leaves["parameters"][n].value for n in order}
        state.n_runs = int(get_attr(grp, "n_runs"))
        name = get_attr(grp, "name")
        state.run_store = FileRunStore(p, name, allow_pickle)
        return Trajectory.restore(name, get_attr(grp, "comment", ""), state, file_path=str(p))


def read_leaf_value(path: Path, traj_name: str, branch: str, name: str, allow_pickle: bool = False,
                    load_only: Sequence[str] | None = None) -> tuple[Any, bool]:
    """The stored value of one trajectory-level leaf, and whether it is the dict of a multi-item
    result's items; ``load_only`` reads only those keys of a dict value (or items)."""
    with open_h5(path) as f:
        grp = trajectory_group(f, traj_name)
        obj = grp[branch].get(name.replace(".", "/"))
        if obj is None or "leaf" not in obj.attrs:
            raise KeyError(f"{path}: no {branch}.{name} stored")
        where = f"{branch}.{name}"
        if load_only is None or "items" in obj.attrs:
            return _read_leaf(obj, allow_pickle, where, load_only), "items" in obj.attrs
        if not isinstance(obj, h5py.Group) or get_attr(obj, "kind") != "dict":
            raise StorageError(f"{path}: {where} is not a dict of items; load it without load_only")
        keys = json.loads(get_attr(obj, "keys"))
        unknown = [k for k in load_only if k not in keys]
        if unknown:
            raise KeyError(f"{where} has no item {unknown[0]!r} (items: {', '.join(keys)})")
        return {k: read_value(obj[str(keys.index(k))], allow_pickle, where) for k in load_only}, False


def stored_leaves(path: Path, traj_name: str) -> set[tuple[str, str]]:
    """(branch, name) of every trajectory-level leaf a file holds."""
    with open_h5(path) as f:
        grp = trajectory_group(f, traj_name)
        return {(b, n) for b in BRANCHES for n, _ in _iter_leaves(grp[b])}


def file_identity(path: Path, traj_name: str) -> tuple[int, list[str]]:
    """(runs, explored parameters) of a trajectory in a file: what a store into it must match."""
    with open_h5(path) as f:
        grp = trajectory_group(f, traj_name)
        return int(get_attr(grp, "n_runs")), [n for n in get_attr(grp["explored"], "order", "").split(",") if n]


def write_leaves(working_copy: Path, traj_name: str, leaves: Sequence[tuple[str, Parameter[Any] | Result[Any]]],
                 overwrite: bool) -> None:
    """Write trajectory-level leaves (branch, leaf) into a working copy of a trajectory file
    (see :func:`.files.rewrite_locked`); one that exists is replaced only when ``overwrite``."""
    f = h5py.File(working_copy, "a", locking=LOCKING)
    try:
        grp = trajectory_group(f, traj_name)
        for branch, leaf in leaves:
            path = leaf.name.replace(".", "/")
            if path in grp[branch]:
                if not overwrite:
                    raise StorageError(f"{branch}.{leaf.name} is stored already; pass overwrite=True to replace it")
                del grp[branch][path]
            write_leaf(grp[branch], leaf.name, leaf)
        sync_h5(f)
    except BaseException as exc:
        if not isinstance(exc, OSError) or isinstance(exc, StorageError):
            f.close()
            raise
        abandon_h5(f, exc)  # a write failed (disk full...): close in the order that cannot crash
        raise
    f.close()


def _load_leaf(obj: h5py.HLObject, where: str, allow_pickle: bool, classes: Sequence[type[Any]],
               allow_import: Sequence[str], warned: set[str], load_data: bool = True) -> Any:
    base: type[Any] = Result if get_attr(obj, "leaf") == "Result" else Parameter
    items = get_attr(obj, "items")
    empty = base is Result and not load_data
    value: Any = None if empty else _read_leaf(obj, allow_pickle, where)
    stored = get_attr(obj, "leaf_class")
    cls = base
    if stored is not None:
        try:
            found = leaf_class(stored, base, classes, allow_import)
        except PypetError as exc:
            raise StorageError(f"{where}: {exc}") from None
        if found is not None:
            cls = found
        elif stored not in warned:
            warned.add(stored)
            module = stored.partition(":")[0]
            log.warning("%s is a %s, loaded as %s: pass classes=[%s] or allow_import=[%r] to load_trajectory "
                        "(or register_leaf_class it) to get the class back", where, stored, base.__name__,
                        stored.partition(":")[2], module.partition(".")[0] + ".")
    leaf = loaded_leaf(cls, where.partition(".")[2], value, get_attr(obj, "comment", ""), items is not None and not empty)
    if empty:
        leaf.empty()
    if cls is not base:
        for key, field_value in _get_attrs(obj, FIELD).items():
            object.__setattr__(leaf, key, field_value)
    annotations = _get_attrs(obj, ANNOTATION)
    if annotations:
        leaf.__dict__["_annotations"] = Annotations(annotations)
    return leaf


def _read_leaf(obj: h5py.HLObject, allow_pickle: bool, where: str, load_only: Sequence[str] | None = None) -> Any:
    """A stored leaf's value: the dict of a multi-item result's items (only ``load_only``'s)."""
    items = get_attr(obj, "items")
    if items is None:
        return read_value(obj, allow_pickle, where)
    names = json.loads(items)
    unknown = [k for k in load_only or () if k not in names]
    if unknown:
        raise KeyError(f"{where} has no item {unknown[0]!r} (items: {', '.join(names)})")
    return {k: read_value(obj[k], allow_pickle, f"{where} item {k!r}") for k in (load_only or names)}


def _walk(group: h5py.Group, prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(kind, dotted name, object) of what a branch group holds: ``leaf`` and ``group`` with their
    HDF5 object, ``link`` with its target path (a soft link is not followed)."""
    for key in group:
        link = group.get(key, getlink=True)
        if isinstance(link, h5py.SoftLink):
            yield "link", prefix + key, link.path
            continue
        if key == "runs" and not prefix:
            continue
        obj = group[key]
        if "leaf" in obj.attrs:
            yield "leaf", prefix + key, obj
        elif isinstance(obj, h5py.Group):
            yield "group", prefix + key, obj
            yield from _walk(obj, f"{prefix}{key}.")


def _iter_leaves(group: h5py.Group) -> Iterator[tuple[str, h5py.HLObject]]:
    for kind, name, obj in _walk(group):
        if kind == "leaf":
            yield name, obj


def only_trajectory(f: h5py.File) -> h5py.Group:
    """The one trajectory of a merge target (or a skeleton)."""
    if ROOT not in f or len(f[ROOT]) != 1:
        raise StorageError(f"{f.filename}: expected exactly one trajectory")
    return trajectory_group(f)


def plan_hash_of(path: Path) -> str | None:
    """The plan hash of a trajectory file, or None if it is not one."""
    try:
        with open_h5(path) as f:
            return str(get_attr(only_trajectory(f), "plan_hash"))
    except StorageError:
        return None


def merged_runs(path: Path) -> tuple[str, set[str], np.ndarray]:
    """What a merged file holds, for ``clean``: its plan hash, the ids of the shards merged into
    it and the status of every run."""
    with open_h5(path) as f:
        grp = only_trajectory(f)
        ids = set(json.loads(get_attr(grp["merge_log"], "shard_ids", "[]"))) if "merge_log" in grp else set()
        status = read_table(grp["run_info"], {"status": FILE_RUN_COLUMNS["status"]})["status"]
        return str(get_attr(grp, "plan_hash")), ids, status


def _file_key(path: Path) -> list[int]:
    """What identifies a shard file's bytes without reading them: a complete shard is never
    rewritten in place (a retry replaces it, with a new size or modification time)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def nothing_new(target: Path, shards: Sequence[Path]) -> tuple[int, int, int] | None:
    """(runs, ok, failed) of ``target`` when every shard is one a merge into it has seen (same
    name, size and modification time), read without writing anything; None when there may be
    something to merge. Costs a stat per shard and one read of the status column."""
    try:
        with open_h5(target) as f:
            grp = only_trajectory(f)
            if "merge_log" not in grp:
                return None
            seen = json.loads(get_attr(grp["merge_log"], "seen_files", "{}"))
            if any(seen.get(path.name) != _file_key(path) for path in shards):
                return None
            status = grp["run_info/status"][...]
            return (int(get_attr(grp, "n_runs")), int(np.count_nonzero(status == RunStatus.OK)),
                    int(np.count_nonzero(status == RunStatus.FAILED)))
    except (StorageError, OSError, ValueError):
        return None


def damaged_target(target: Path, what: str) -> DamagedFileError:
    """The one message for a merge target that cannot be trusted."""
    return DamagedFileError(f"{target} is damaged: {what}; merge into a new file with -o, "
                            "or `pypet-hpc merge --rebuild` from the shards")


def can_grow_in_place(target: Path) -> bool:
    """Whether the run-indexed datasets of ``target`` are resizable, so that an expanded sweep's
    merge grows it in place (files written before this was so are rebuilt from the skeleton)."""
    try:
        with open_h5(target) as f:
            grp = only_trajectory(f)
            sets = [grp["run_info"]] + [grp[b][f"runs/{k}"] for b in RUN_BRANCHES for k in ("columns", "masks")
                                        if f"runs/{k}" in grp[b]]
            return all(ds.maxshape[0] is None for g in sets for ds in g.values())
    except (StorageError, OSError, KeyError):
        return False


def quick_check(grp: h5py.Group) -> str | None:
    """The cheap check of a merge target before a merge writes into it, or None when it passes:
    the group structure opens, and the status column, the masks and the explored columns read
    back with their checksums (bytes per run, not the results). Chunks the merge rewrites are
    checked as HDF5 reads them; ``pypet-hpc verify`` reads everything."""
    bad: list[str] = []
    sets = [grp["run_info"], grp["explored"]] + [grp[b]["runs/masks"] for b in RUN_BRANCHES
                                                 if "runs/masks" in grp[b]]
    for g in sets:
        for ds in g.values():
            if ds.name.endswith(("/host", "/job")):
                continue  # text (variable length) carries no checksum
            try:
                ds[()]
            except (OSError, ValueError, KeyError, RuntimeError):
                bad.append(ds.name)
    try:
        for b in RUN_BRANCHES:
            list(grp[b]["runs"].get("columns", {}))
        grp["errors/idx"][()]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        bad.append(f"(the group structure: {type(exc).__name__}: {exc})")
    return ", ".join(bad[:3]) if bad else None


def merge_shards(working_copy: Path, shards: Sequence[Path], plan_hash: str, target: Path,
                 earlier_hashes: Sequence[str] = (), provenance: str | None = None,
                 progress: Callable[[int], None] | None = None, *, skeleton: Path | None = None,
                 reserve: int = 0) -> tuple[ShardMerger, int, int]:
    """Add ``shards`` to ``working_copy`` and make it durable; returns the merger (what it merged,
    skipped, found damaged) and the (ok, failed) runs of the result.

    ``working_copy`` is a fresh copy of the skeleton, or ``target`` itself: then the merge
    writes in place through a rollback journal (:mod:`.journal`), after a cheap check of the
    target (:func:`quick_check`), reserving ``reserve`` bytes first; a target of an earlier,
    smaller plan (expand) grows to ``skeleton``'s runs. Any failure leaves the target as it was."""
    journaled = JournaledFile(Path(target)) if Path(working_copy) == Path(target) else None
    try:
        if journaled is not None:
            kill_point("journal-open")
            journaled.reserve(reserve)
        f = (h5py.File(journaled, "r+") if journaled is not None
             else h5py.File(working_copy, "a", locking=LOCKING))
    except BaseException:
        if journaled is not None:
            journaled.rollback()
        raise
    grp: h5py.Group | None = None
    merger: ShardMerger | None = None
    try:
        grp = only_trajectory(f)
        if journaled is not None:
            problem = quick_check(grp)
            if problem is not None:
                raise damaged_target(target, problem)
        if get_attr(grp, "plan_hash") != plan_hash:
            if journaled is None or skeleton is None or get_attr(grp, "plan_hash") not in earlier_hashes:
                raise StorageError(f"{target} holds another sweep (plan hash differs); choose another -o")
            _grow(grp, skeleton, plan_hash)
        merger = ShardMerger(grp, plan_hash, target, frozenset(earlier_hashes))
        ok, failed = merger.run(shards, progress)
        if provenance is not None:
            set_attrs(grp, provenance=provenance)
        if journaled is None:
            sync_h5(f)
    except BaseException as exc:
        if journaled is not None:
            journaled.discard = True  # whatever HDF5 still holds goes nowhere: the journal undoes it all
            grp = merger = None
            traceback.clear_frames(exc.__traceback__)  # drop every handle into the file, then close it
            gc.collect()
            try:
                f.close()
            except (OSError, RuntimeError, ValueError) as again:
                log.debug("closing %s after %s: %s", target, type(exc).__name__, again)
            journaled.rollback()
            raise
        if not isinstance(exc, OSError) or isinstance(exc, StorageError):
            f.close()  # nothing failed to write: close as usual
            raise
        discard_writes(f)  # a write failed (disk full...): before any handle is dropped, see abandon_h5
        grp = merger = None
        abandon_h5(f, exc)
        raise
    try:
        f.close()
        if journaled is not None:
            kill_point("closed")
            journaled.commit()
    except BaseException:
        if journaled is not None and journaled.fd >= 0:
            journaled.rollback()
        raise
    return merger, ok, failed


def _grow(grp: h5py.Group, skeleton: Path, plan_hash: str) -> None:
    """Grow a merged file of an earlier plan to the expanded plan of ``skeleton`` (whose first
    runs are the file's runs, unchanged: expand checks that): explored columns, run table, masks
    and result columns get the new rows; nothing already stored is rewritten."""
    with open_h5(skeleton) as s:
        sk = only_trajectory(s)
        n_old, n_new = int(get_attr(grp, "n_runs")), int(get_attr(sk, "n_runs"))
        explored, src = grp["explored"], sk["explored"]
        for name, ds in src.items():
            mine = explored.get(name)
            if mine is not None and mine.maxshape[0] is None and mine.dtype == ds.dtype and mine.shape[0] == n_old:
                mine.resize(n_new, axis=0)
                for a in range(n_old, n_new, MAX_CHUNK_ROWS * 16):
                    mine[a:min(n_new, a + MAX_CHUNK_ROWS * 16)] = ds[a:min(n_new, a + MAX_CHUNK_ROWS * 16)]
            else:  # a parameter explored now for the first time, or an old file's fixed-size column
                if mine is not None:
                    del explored[name]
                s.copy(ds, explored, name)
        set_attrs(explored, order=get_attr(src, "order", ""))
        info = grp["run_info"]
        for name, col in FILE_RUN_COLUMNS.items():
            if name in info:
                info[name].resize(n_new, axis=0)
                if not col.text:
                    info[name][n_old:] = col.full(n_new - n_old)
        for branch in RUN_BRANCHES:
            for key in ("columns", "masks"):
                for ds in grp[branch].get(f"runs/{key}", {}).values():
                    ds.resize(n_new, axis=0)  # new rows read as the fill value: masks False
        set_attrs(grp, n_runs=n_new, plan_hash=plan_hash)


def _one_row_chunks(ds: h5py.Dataset) -> bool:
    return bool(ds.chunks == (1, *ds.shape[1:]) and ds.compression is None)


ROW_BUFFER_BYTES = 4 << 20  # adjacent rows of a column gathered before one HDF5 write


class _Rows:
    """Rows written into one run-indexed dataset of the target. Adjacent writes (the runs of
    shards in task order) are gathered and written at once, up to :data:`ROW_BUFFER_BYTES`:
    few HDF5 calls, memory bounded, and only the rows merged are ever written."""

    def __init__(self, ds: h5py.Dataset, target: Path, text: bool = False) -> None:
        self.ds = ds
        self.target = target
        self.text = text
        self.lo = 0
        self.parts: list[np.ndarray] = []
        self.n = 0
        self.nbytes = 0

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A chunk of the target that fails its checksum when HDF5 reads it back: a damaged target."""
        try:
            yield
        except OSError as exc:
            if isinstance(exc, StorageError) or disk_full(exc):
                raise
            raise damaged_target(self.target, f"{self.ds.name} ({os_reason(exc)})") from None

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The stored values of ``rows`` (sorted, unique)."""
        with self._guard():
            return self._read(rows)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if self.parts and rows[0] < self.lo + self.n and rows[-1] >= self.lo:
            self.flush()
        view = self.ds.asstr() if self.text else self.ds
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo <= 4 * len(rows) + 65536:
            block: np.ndarray = np.asarray(view[lo:hi])
            return np.asarray(block[rows - lo])
        return np.asarray(view[rows])

    def write(self, rows: np.ndarray, values: Any) -> None:
        """Store ``values`` (an array, or one value for every row) at ``rows`` (sorted, unique)."""
        if not len(rows):
            return
        if np.ndim(values) == 0 or (self.ds.ndim > 1 and np.ndim(values) == self.ds.ndim - 1):
            values = np.broadcast_to(np.asarray(values, dtype=object if self.text else self.ds.dtype),
                                     (len(rows), *self.ds.shape[1:]))
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        if hi - lo == len(rows):
            if not (self.parts and lo == self.lo + self.n and self.nbytes < ROW_BUFFER_BYTES):
                self.flush()
                self.lo = lo
            self.parts.append(np.array(values))
            self.n += len(rows)
            self.nbytes += self.parts[-1].nbytes * (8 if self.text else 1)  # a text row: a Python str
            return
        self.flush()
        with self._guard():
            if hi - lo <= 4 * len(rows) + 65536:  # a few gaps: read the span, patch it, write it back
                block = np.asarray((self.ds.asstr() if self.text else self.ds)[lo:hi])
                block[rows - lo] = values
                self.ds[lo:hi] = block
            else:
                self.ds[rows] = values

    def flush(self) -> None:
        if self.parts:
            data = self.parts[0] if len(self.parts) == 1 else np.concatenate(self.parts)
            with self._guard():
                self.ds[self.lo:self.lo + self.n] = data
            self.parts, self.n, self.nbytes = [], 0, 0


class ShardMerger:
    """Adds shards to an open trajectory file (in place, or merge's working copy). Only the rows
    of the runs merged are read and written, a shard at a time and a block of a column at a time
    (bounded memory, cost in the new runs); the errors table is held in memory. The last row of
    a run wins, across shards too."""

    def __init__(self, grp: h5py.Group, plan_hash: str, target: Path, earlier: frozenset[str]) -> None:
        self.grp = grp
        self.plan_hash = plan_hash
        self.earlier = earlier
        self.target = target
        self.n = int(get_attr(grp, "n_runs"))
        self.merged_shards: list[str] = []
        self.skipped_shards: list[str] = []
        self.damaged_shards: list[str] = []  # "name: what is wrong", not merged
        self.log_grp = grp.require_group("merge_log")
        self.merged_ids = set(json.loads(get_attr(self.log_grp, "shard_ids", "[]")))
        self.seen_files: dict[str, list[int]] = json.loads(get_attr(self.log_grp, "seen_files", "{}"))
        self.item_counts: dict[str, dict[str, int]] = {
            b: json.loads(get_attr(grp[b].require_group("runs"), "item_counts", "{}")) for b in RUN_BRANCHES
        }
        err = read_table(grp["errors"], ERROR_COLUMNS)
        self.errors: dict[int, tuple[str, str, str]] = {
            int(i): (t, m, tb) for i, t, m, tb in zip(err["idx"], err["type"], err["message"], err["traceback"],
                                                      strict=True)
        }
        self.errors_changed = False
        info = grp["run_info"]
        # a file older than a run_info column gets it now, filled for the runs it has
        create_table(info, {k: c for k, c in FILE_RUN_COLUMNS.items() if k not in info}, self.n)
        self.info = {k: _Rows(info[k], target, c.text) for k, c in FILE_RUN_COLUMNS.items()}
        self.masks: dict[tuple[str, str], _Rows] = {}
        self.cols: dict[tuple[str, str], _Rows] = {}
        self._col_cache: dict[tuple[str, str], tuple[Any, tuple[Any, ...]]] = {}

    def run(self, shards: Sequence[Path], progress: Callable[[int], None] | None) -> tuple[int, int]:
        """Merge the shards not merged before; returns the (ok, failed) runs of the result."""
        fresh: list[Path] = []
        counts: dict[str, int] = {}
        for path in sorted(shards):
            if self.seen_files.get(path.name) == _file_key(path):  # merged or seen before: not opened
                self.skipped_shards.append(path.name)
                continue
            try:
                reader = ShardReader(path)
            except StorageError as exc:  # not HDF5, truncated...: merge the others, name this one
                self._damaged(path, str(exc).removeprefix(f"{path.name}: "))
                continue
            with reader:
                problem = self._check(path, reader)
                if problem is not None:
                    self._damaged(path, problem)
                    continue
                if reader.shard_id in self.merged_ids:
                    self.skipped_shards.append(path.name)
                    self.seen_files[path.name] = _file_key(path)
                    continue
                problem = reader.checksum_problem()  # new shards only: cost grows with new work
                if problem is not None:
                    reader.close()
                    self._damaged(path, f"{problem}; set aside as {set_aside(path).name}")
                    continue
                for key, n in reader.column_rows().items():
                    counts[key] = counts.get(key, 0) + n
            fresh.append(path)
        for branch, names in self.item_counts.items():
            for name, c in names.items():
                counts[f"{branch}.{name}"] = counts.get(f"{branch}.{name}", 0) + c
        for path in fresh:
            with ShardReader(path) as reader:
                try:
                    self._merge_one(reader, counts)
                except (OSError, KeyError, ValueError) as exc:
                    if isinstance(exc, StorageError) or disk_full(exc):
                        raise
                    raise StorageError(f"{path}: cannot be merged ({type(exc).__name__}: {exc}); "
                                       f"{self.target} is left as it was; move the shard aside "
                                       "and resubmit") from None
                self.merged_ids.add(reader.shard_id)
            self.merged_shards.append(path.name)
            self.seen_files[path.name] = _file_key(path)
            kill_point("shard-merged")
            if progress is not None:
                progress(1)
        self._write_back()
        status = self.grp["run_info/status"][()]
        return int(np.count_nonzero(status == RunStatus.OK)), int(np.count_nonzero(status == RunStatus.FAILED))

    def _damaged(self, path: Path, problem: str) -> None:
        log.warning("%s: %s; not merged", path.name, problem)
        self.damaged_shards.append(f"{path.name}: {problem}")

    def _check(self, path: Path, reader: ShardReader) -> str | None:
        """What makes a shard unfit to merge, or None; a shard of another sweep is refused outright."""
        if reader.plan_hash not in {self.plan_hash, *self.earlier}:
            raise StorageError(f"{path}: shard of another sweep (plan hash differs); refusing to merge it")
        if not reader.complete:
            return "not marked complete"
        return reader.problem()

    def _mask(self, branch: str, name: str) -> _Rows:
        key = (branch, name)
        rows = self.masks.get(key)
        if rows is None:
            masks = self.grp[branch]["runs"].require_group("masks")
            ds = masks.get(name)
            if ds is None:
                ds = new_dataset(masks, name, shape=(self.n,), dtype=bool, maxshape=(None,),
                                 chunks=(min(max(self.n, 1024), 65536),))
            rows = self.masks[key] = _Rows(ds, self.target)
        return rows

    def _all_masks(self, branch: str) -> list[_Rows]:
        masks = self.grp[branch]["runs"].get("masks")
        return [self._mask(branch, name) for name in (masks or [])]

    def _merge_one(self, reader: ShardReader, counts: dict[str, int]) -> None:
        runs, table = reader.run_table()
        if not len(runs):
            return
        if runs.min() < 0 or runs.max() >= self.n:
            raise StorageError(f"{reader.path}: run index out of range for a {self.n}-run sweep")
        old = self.info["status"].read(runs)
        if np.any(old != RunStatus.MISSING):
            self._clear_runs(runs[old != RunStatus.MISSING])
        for col, values in table.items():
            self.info[col].write(runs, values)
        self.info["task"].write(runs, reader.task)
        for r in runs[old != RunStatus.MISSING].tolist():
            if self.errors.pop(r, None) is not None:
                self.errors_changed = True
        for failed in reader.failed_runs():
            self.errors[failed.run] = (failed.type, failed.message, failed.traceback)
            self.errors_changed = True
        for column in reader.columns():
            try:
                self._merge_column(column, counts.get(f"{column.branch}.{column.name}", 0))
            except OSError as exc:  # a chunk of the target that fails its checksum when read back
                if isinstance(exc, StorageError) or disk_full(exc):
                    raise
                raise damaged_target(self.target, f"{self.grp.name}/{column.branch}/runs/columns/{column.name} "
                                     f"({os_reason(exc)})") from None
        for run, branch, name, obj in reader.items():
            self._put_item(branch, name, run, obj, copy=True)

    def _clear_runs(self, runs: np.ndarray) -> None:
        """Drop what earlier merges stored for ``runs`` (a task that was run again)."""
        for branch in RUN_BRANCHES:
            for mask in self._all_masks(branch):
                mask.write(runs, False)
            base = self.grp[branch]["runs"]
            for r in runs.tolist():
                path = f"{run_set_name(r)}/{run_name(r)}"
                if path in base:
                    for name in base[path]:
                        self._count_item(branch, name, -1)
                    del base[path]

    def _merged_column(self, branch: str, name: str, count: int, like: ShardColumn) -> tuple[Any, tuple[Any, ...]]:
        """The merged file's column for ``name`` (created when it recurs) and its (kind, dtype, shape)."""
        key = (branch, name)
        hit = self._col_cache.get(key)
        if hit is not None:
            return hit
        cols = self.grp[branch]["runs"].require_group("columns")
        if name not in cols and count >= 2:
            self._new_column(cols, name, like.spec, like.values)
            self._fold_items_into_column(branch, name)
        col = cols.get(name)
        if col is None:
            return None, ()
        hit = self._col_cache[key] = (col, (get_attr(col, "kind"), get_attr(col, "dtype"), col.shape[1:]))
        return hit

    def _merge_column(self, column: ShardColumn, count: int) -> None:
        branch, name = column.branch, column.name
        kind, _, shape = column.spec
        col, meta = self._merged_column(branch, name, count, column)
        idx, values = column.idx, column.values
        if meta != column.spec:
            for pos, r in enumerate(idx.tolist()):
                self._put_value_item(branch, name, r, kind, values, pos)
            return
        keep = last_rows(idx)
        rows = idx[keep]
        self._mask(branch, name).write(rows, True)
        if (_one_row_chunks(values) and _one_row_chunks(col) and values.dtype == col.dtype
                and values.fletcher32 == col.fletcher32):
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
        key = (branch, name)
        out = self.cols.get(key)
        if out is None:
            out = self.cols[key] = _Rows(col, self.target, kind == "str")
        row_bytes = max(1, values.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        step = max(1, BLOCK_BYTES // row_bytes)
        for start in range(0, len(keep), step):
            sel = keep[start:start + step]
            a, b = int(sel.min()), int(sel.max()) + 1
            data = (values.asstr() if kind == "str" else values)[a:b][sel - a]
            out.write(idx[sel], data)
        if row_bytes * len(keep) >= ROW_BUFFER_BYTES:
            out.flush()

    def _new_column(self, cols: h5py.Group, name: str, spec: ColumnSpec, like: h5py.Dataset) -> None:
        kind, dtype, shape = spec
        row_bytes = max(1, like.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        rows = chunk_rows(row_bytes, min(max(self.n, 1024), MAX_CHUNK_ROWS))  # the shards' rule: big rows alone
        ds = new_dataset(cols, name, shape=(self.n, *shape), dtype=column_dtype(spec), chunks=(rows, *shape),
                         maxshape=(None, *shape))
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
                    mask.write(np.array([r]), True)
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
            self._mask(branch, name).write(np.array([run]), False)

    def _count_item(self, branch: str, name: str, delta: int) -> None:
        counts = self.item_counts[branch]
        counts[name] = counts.get(name, 0) + delta
        if counts[name] <= 0:
            del counts[name]

    def _write_back(self) -> None:
        for rows in (*self.info.values(), *self.masks.values(), *self.cols.values()):
            rows.flush()
        if self.errors_changed:
            runs = sorted(self.errors)
            write_table(self.grp["errors"], {
                "idx": np.array(runs, dtype=np.int64),
                **{col: np.array([self.errors[r][i] for r in runs], dtype=object)
                   for i, col in enumerate(("type", "message", "traceback"))}})
        set_attrs(self.log_grp, shard_ids=json.dumps(sorted(self.merged_ids)),
                  seen_files=json.dumps(self.seen_files))  # lets a merge with nothing new skip the copy
        for branch, counts_b in self.item_counts.items():
            set_attrs(self.grp[branch]["runs"], item_counts=json.dumps(counts_b))


# ---------------------------------------------------------------------------------------------
# A file's runs as a shard (combine)


def export_runs(path: Path, shard: Path, runs: list[int], offset: int, digest: str, task: int) -> None:
    """Rewrite the given runs of a trajectory file as a complete shard of the sweep ``digest``,
    run ``runs[k]`` becoming ``offset + k``."""
    new_index = {r: offset + k for k, r in enumerate(runs)}
    sel = np.array(runs, dtype=np.int64)
    with open_h5(path) as src_f:
        src = trajectory_group(src_f)
        with ShardBuilder(shard, digest, task, source=str(path)) as out:
            info = read_table(src["run_info"], FILE_RUN_COLUMNS)
            rows = sel[info["status"][sel] != RunStatus.MISSING]
            new = np.array([new_index[r] for r in rows.tolist()], dtype=np.int64)
            out.run_table(new, {k: info[k][rows] for k in RUN_COLUMNS})
            err = read_table(src["errors"], ERROR_COLUMNS)
            keep = np.isin(err["idx"], rows)
            out.errors({"idx": np.array([new_index[int(r)] for r in err["idx"][keep]], dtype=np.int64),
                        **{k: err[k][keep] for k in ("type", "message", "traceback")}})
            for branch in RUN_BRANCHES:
                runs_grp = src[branch].get("runs")
                if runs_grp is not None:
                    _export_run_data(runs_grp, out, branch, rows, new_index)


def _export_run_data(runs_grp: h5py.Group, out: ShardBuilder, branch: str, rows: np.ndarray,
                     new_index: dict[int, int]) -> None:
    cols = runs_grp.get("columns")
    for name, col in (cols.items() if cols is not None else []):
        have = rows[runs_grp["masks"][name][()][rows]]
        shape = tuple(col.shape[1:])
        row_bytes = max(1, col.dtype.itemsize * int(np.prod(shape, dtype=np.int64)))
        # small columns are read at once; big ones only the rows wanted, a block at a time
        source = col[()] if col.size * col.dtype.itemsize <= SMALL_COLUMN_BYTES else col
        out.column(branch, name, (get_attr(col, "kind"), get_attr(col, "dtype"), shape),
                   np.array([new_index[int(r)] for r in have], dtype=np.int64), _rows_of(source, have), row_bytes)
    wanted = set(rows.tolist())
    items: dict[str, list[tuple[int, h5py.HLObject]]] = {}
    for set_name, run_set in runs_grp.items():
        if not set_name.startswith("run_set_"):
            continue
        for rname, rgrp in run_set.items():
            r = int(rname[4:])
            if r in wanted:
                for leaf in rgrp:
                    items.setdefault(leaf, []).append((new_index[r], rgrp[leaf]))
    column_names = set(cols) if cols is not None else set()
    for name, found in items.items():
        # a name kept per run here (it was rare in this file) goes out as a column when it can be
        # one, so that the merge folds it into the column another input has for it
        column = None if name in column_names else _items_as_column(found)
        if column is not None:
            spec, idx, data = column
            row_bytes = max(1, data.dtype.itemsize * int(np.prod(spec[2], dtype=np.int64)))
            out.column(branch, name, spec, idx, lambda a, b, d=data: d[a:b], row_bytes)
            continue
        for run, obj in found:
            out.copy_item(run, branch, name, obj)


def _items_as_column(found: list[tuple[int, h5py.HLObject]]) -> tuple[ColumnSpec, np.ndarray, np.ndarray] | None:
    """Per-run values of one name as (spec, run indices, stacked values) when they all fit one
    column and are small enough to hold in memory; None otherwise (they stay per run)."""
    if any(not isinstance(obj, h5py.Dataset) for _, obj in found) or sum(
            obj.id.get_storage_size() for _, obj in found) > SMALL_COLUMN_BYTES:  # containers never fit
        return None
    values = []
    for _, obj in found:
        try:
            values.append(read_value(obj, allow_pickle=False))
        except (TypeError, ValueError, StorageError):  # pickled, or not a plain value
            return None
    specs = {column_spec(v) for v in values}
    if len(specs) != 1 or None in specs:
        return None
    spec = specs.pop()
    assert spec is not None
    return spec, np.array([r for r, _ in found], dtype=np.int64), column_array(spec, values)


def _rows_of(source: Any, have: np.ndarray) -> Callable[[int, int], np.ndarray]:
    def rows(a: int, b: int) -> np.ndarray:
        return np.asarray(source[have[a:b]]) if b > a else np.asarray(source[0:0])
    return rows


# ---------------------------------------------------------------------------------------------
# A summary of a file (``pypet-hpc show``)


@dataclass
class LeafSummary:
    name: str
    kind: str
    shape: tuple[int, ...] | None
    explored: bool = False


@dataclass
class RunDataSummary:
    """A name that runs added: as a column (``kind``, ``dtype``, ``shape``) or stored per run."""

    name: str
    runs: int
    column: tuple[str, str, tuple[int, ...]] | None = None


@dataclass
class TrajectorySummary:
    name: str
    n_runs: int
    format_version: int
    library_version: str
    comment: str
    counts: dict[str, int]
    durations: np.ndarray
    where: dict[str, list[str]]  # run_info text column -> distinct values among finished runs
    leaves: dict[str, list[LeafSummary]]
    run_data: dict[str, list[RunDataSummary]]
    provenance: str | None
    merged_shards: int = 0


def summarize(path: str | os.PathLike[str], name: str | None = None) -> TrajectorySummary:
    """What a trajectory file holds, read without loading any run data."""
    with open_h5(path) as f:
        grp = trajectory_group(f, name)
        info = read_table(grp["run_info"], FILE_RUN_COLUMNS)
        status = info["status"]
        done = status != RunStatus.MISSING
        explored = [n for n in get_attr(grp["explored"], "order", "").split(",") if n]
        leaves = {b: [LeafSummary(n, get_attr(obj, "kind"), getattr(obj, "shape", None) or None,
                                  b == "parameters" and n in explored)
                      for n, obj in _iter_leaves(grp[b])] for b in BRANCHES}
        run_data: dict[str, list[RunDataSummary]] = {}
        for branch in RUN_BRANCHES:
            runs = grp[branch].get("runs")
            if runs is None:
                continue
            cols = runs.get("columns")
            entries = [RunDataSummary(cname, int(np.count_nonzero(runs["masks"][cname][()])),
                                      (get_attr(ds, "kind"), get_attr(ds, "dtype"), tuple(ds.shape[1:])))
                       for cname, ds in (cols.items() if cols is not None else [])]
            items = json.loads(get_attr(runs, "item_counts", "{}"))
            entries += [RunDataSummary(iname, n) for iname, n in sorted(items.items())]
            if entries:
                run_data[branch] = entries
        return TrajectorySummary(
            name=get_attr(grp, "name"), n_runs=int(get_attr(grp, "n_runs")),
            format_version=int(get_attr(grp, "format_version")),
            library_version=str(get_attr(grp, "library_version")), comment=get_attr(grp, "comment", ""),
            counts={str(s): int(np.count_nonzero(status == s)) for s in RunStatus},
            durations=(info["end"] - info["start"])[done],
            where={c: sorted(set(info[c][done].tolist())) for c, col in FILE_RUN_COLUMNS.items()
                   if col.text and c in grp["run_info"]},
            leaves=leaves, run_data=run_data, provenance=get_attr(grp, "provenance"),
            merged_shards=len(json.loads(get_attr(grp.get("merge_log", grp), "shard_ids", "[]"))))
