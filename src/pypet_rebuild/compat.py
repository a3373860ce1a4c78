"""pypet's spellings over pypet-hpc, for migrating a pypet script by changing its imports only.

``from pypet_rebuild.compat import Environment, Trajectory, Parameter, cartesian_product, ...``
gives pypet's names (``f_add_parameter``, ``f_explore``, ``v_idx``, ``f_get_from_runs`` as an
OrderedDict keyed by run name, ``Environment(trajectory=..., filename=..., multiproc=...)``,
``env.run(job, *args)``, ``load_trajectory(filename=...)``, ...). Every call is translated to the
modern API (:class:`pypet_rebuild.Trajectory`, :class:`pypet_rebuild.Environment`,
:func:`pypet_rebuild.load_trajectory`); nothing here stores, names or runs anything itself.

A pypet keyword or feature without a modern counterpart raises :class:`UnsupportedError` with one
line naming it and the modern way; keywords that change nothing here (logging, pools, wrap modes,
HDF5 titles) are accepted and ignored with a DEBUG log line. ``env.run(job, *args)`` and
``env.add_postprocessing`` need the modern Environment's job arguments and post-processing (issue
16); until those exist, the call raises :class:`UnsupportedError` naming what is missing.
"""

from __future__ import annotations

import datetime
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import environment as _environment
from . import errors as _errors
from . import model as _model
from . import storage as _storage
from .codec import Pickled
from .errors import LockedParameterError, PypetError
from .exploration import cartesian_product as _cartesian_product
from .formats import trajfile as _trajfile
from .naming import run_name, run_set_name
from .runstore import RunStatus, is_multi

__all__ = [
    "ArrayParameter", "DataNotInStorageError", "Environment", "NotUniqueNodeError", "Parameter",
    "ParameterLockedException", "PickleParameter", "Result", "Trajectory", "UnsupportedError",
    "cartesian_product", "load_trajectory", "pypetconstants",
]

log = logging.getLogger(__name__)


class UnsupportedError(PypetError, NotImplementedError):
    """A pypet feature or keyword that pypet-hpc does not offer; the message says the modern way."""


class _UnsupportedAttribute(UnsupportedError, AttributeError):
    """An unsupported pypet attribute: also an AttributeError, so ``hasattr`` says False."""


NotUniqueNodeError = _errors.AmbiguousNameError  # pypet's name for "a short name matches several nodes"
ParameterLockedException = LockedParameterError
DataNotInStorageError = _errors.StorageError


class pypetconstants:  # noqa: N801 - pypet's module name, used as `pypetconstants.LOAD_DATA`
    """The constants of pypet's ``pypetconstants`` module that pypet scripts pass around."""

    LOAD_NOTHING = 0
    LOAD_SKELETON = 1
    LOAD_DATA = 2
    OVERWRITE_DATA = 3
    UPDATE_SKELETON = 1
    UPDATE_DATA = 2
    STORE_NOTHING = 0
    STORE_DATA_SKIPPING = 1
    STORE_DATA = 2
    WRAP_MODE_QUEUE = "QUEUE"
    WRAP_MODE_LOCK = "LOCK"
    WRAP_MODE_NONE = "NONE"
    WRAP_MODE_PIPE = "PIPE"
    WRAP_MODE_LOCAL = "LOCAL"
    WRAP_MODE_NETLOCK = "NETLOCK"
    WRAP_MODE_NETQUEUE = "NETQUEUE"
    FORMAT_ZEROS = 8
    RUN_NAME = "run_"
    RUN_NAME_DUMMY = "run_ALL"
    FORMATTED_RUN_NAME = "run_%08d"
    SET_FORMAT_ZEROS = 5
    SET_NAME = "run_set_"
    SET_NAME_DUMMY = "run_set_ALL"
    FORMATTED_SET_NAME = "run_set_%05d"
    DEFAULT_LOGGING = "DEFAULT"


def _ignored(where: str, names: Sequence[str]) -> None:
    if names:
        log.debug("%s: ignoring %s (no effect in pypet-hpc: every task writes its own shard, "
                  "logging is Python's logging)", where, ", ".join(sorted(names)))


def _refuse(where: str, given: Mapping[str, Any], known: Mapping[str, str], ignored: frozenset[str]) -> None:
    """Raise for the first keyword pypet-hpc cannot honour, naming the modern way; log the rest."""
    for key in given:
        if key in known:
            raise UnsupportedError(f"{where}: pypet's {key}= is not supported; {known[key]}")
        if key not in ignored:
            supported = sorted(ignored | _HANDLED.get(where, frozenset()))
            tail = f" (pypet_rebuild.compat supports {', '.join(supported)})" if supported else ""
            raise UnsupportedError(f"{where}: unknown keyword {key}={tail}")
    _ignored(where, list(given))


def _unwrap(node: Any) -> Any:
    return node._node if isinstance(node, _Node | _Group) else node


# ---------------------------------------------------------------------------------------------
# Leaves


class _LeafNames:
    """pypet's reading of a leaf: its value, short name and comment (Parameter and Result)."""

    name: str
    value: Any
    comment: str

    def f_get(self) -> Any:
        return self.value

    @property
    def v_name(self) -> str:
        return self.name.rpartition(".")[2]

    @property
    def v_comment(self) -> str:
        return self.comment


class Parameter(_LeafNames, _model.Parameter[Any]):
    """pypet's Parameter: ``Parameter("x", 1, "comment")``; subclasses may convert in ``f_set``."""

    def __post_init__(self) -> None:
        value = self.value
        object.__setattr__(self, "value", None)
        self.f_set(value)  # a subclass's f_set may turn the data into something storable
        super().__post_init__()

    def f_set(self, data: Any) -> None:
        self.value = data


ArrayParameter = Parameter  # numpy arrays are ordinary values here
SparseParameter = Parameter


class PickleParameter(Parameter):
    """pypet's PickleParameter: the value is stored pickled (load with ``allow_pickle=True``)."""

    def f_set(self, data: Any) -> None:
        self.value = data if isinstance(data, Pickled) else Pickled(data)


class Result(_LeafNames, _model.Result[Any]):
    """pypet's Result with one value: ``Result("z", 3, "comment")``."""


class _Annotations:
    """pypet's ``node.v_annotations``: attribute access (``.info = "..."``) and pypet's methods over
    the node's modern annotations (a dict stored as HDF5 attributes)."""

    __slots__ = ("_ann",)

    def __init__(self, ann: Any) -> None:
        object.__setattr__(self, "_ann", ann)

    @staticmethod
    def _key(key: str | int) -> str:
        return key if isinstance(key, str) else "annotation" if key == 0 else f"annotation_{key}"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.f_get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._ann[name] = value

    def __delattr__(self, name: str) -> None:
        self.f_remove(name)

    def __getitem__(self, key: str | int) -> Any:
        return self._ann[self._key(key)]

    def __setitem__(self, key: str | int, value: Any) -> None:
        self._ann[self._key(key)] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._ann)

    def f_get(self, *names: str | int) -> Any:
        if not names:
            if len(self._ann) != 1:
                raise AttributeError(f"f_get() needs one annotation, there are {len(self._ann)}: name one")
            return next(iter(self._ann.values()))
        missing = [n for n in map(self._key, names) if n not in self._ann]
        if missing:
            raise AttributeError(f"no annotation {missing[0]!r} (there are: {', '.join(self._ann) or 'none'})")
        found = tuple(self._ann[self._key(n)] for n in names)
        return found[0] if len(found) == 1 else found

    def f_set(self, *args: Any, **kwargs: Any) -> None:
        for idx, value in enumerate(args):
            self._ann[self._key(idx)] = value
        self._ann.update(kwargs)

    def f_set_single(self, name: str, value: Any) -> None:
        self._ann[name] = value

    def f_remove(self, key: str | int) -> None:
        try:
            del self._ann[self._key(key)]
        except KeyError:
            raise AttributeError(f"no annotation {self._key(key)!r}") from None

    def f_to_dict(self, copy: bool = True) -> dict[str, Any]:
        return dict(self._ann)

    def f_is_empty(self) -> bool:
        return not self._ann

    def f_empty(self) -> None:
        self._ann.clear()

    def f_ann_to_str(self) -> str:
        return "; ".join(f"{k}={self._ann[k]}" for k in sorted(self._ann))

    __str__ = f_ann_to_str

    def __repr__(self) -> str:
        return f"<annotations {dict(self._ann)!r}>"


class _Node:
    """What ``traj.f_get(name)`` gives for a leaf: the modern leaf with pypet's methods."""

    __slots__ = ("_node", "_traj", "_branch")

    def __init__(self, node: Any, traj: Trajectory, branch: str) -> None:
        self._node, self._traj, self._branch = node, traj, branch

    @property
    def v_full_name(self) -> str:
        return f"{self._branch}.{self._node.name}"

    @property
    def v_name(self) -> str:
        name: str = self._node.name
        return name.rpartition(".")[2]

    @property
    def v_comment(self) -> str:
        comment: str = self._node.comment
        return comment

    def f_get(self) -> Any:
        return self._node.value

    def f_get_range(self, copy: bool = True) -> list[Any]:
        if self._branch != "parameters" or self._node.name not in self._traj.explored:
            raise PypetError(f"{self.v_full_name} is not explored: it has no range")
        return list(self._traj.get_range(self._node.name))

    @property
    def func(self) -> _Prefixed:
        return _Prefixed(self, "f_")

    @property
    def vars(self) -> _Prefixed:
        return _Prefixed(self, "v_")

    @property
    def v_annotations(self) -> _Annotations:
        return _Annotations(self._node.annotations)

    def f_has_range(self) -> bool:
        return self._branch == "parameters" and self._node.name in self._traj.explored

    def f_is_empty(self) -> bool:
        if isinstance(self._node, _model.Parameter):
            return self._node.value is None
        return bool(self._node.is_empty)

    def f_empty(self) -> None:
        self._node.empty()

    def f_set(self, *args: Any, **kwargs: Any) -> None:
        """``f_set(value)``, or items of a result: ``f_set(monty="...")``."""
        if args:
            if len(args) != 1 or kwargs:
                raise PypetError(f"{self.v_full_name}: f_set takes one value or named items")
            self._node.value = args[0]
            return
        for key, value in kwargs.items():
            self._node[key] = value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._node, name)

    def __contains__(self, item: object) -> bool:
        return item in self._node

    def __getitem__(self, item: str) -> Any:
        return self._node[item]

    def __str__(self) -> str:
        return f"{self.v_full_name}: {self._node.value!r}"

    def __repr__(self) -> str:
        return f"<{type(self._node).__name__} {self.v_full_name}={self._node.value!r}>"


class _Group:
    """A group as pypet's natural naming gives it: children with fast access (a parameter's value,
    unless ``traj.v_fast_access = False``), pypet's methods, the rest of the modern group."""

    __slots__ = ("_node", "_traj")

    def __init__(self, node: Any, traj: Trajectory) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_traj", traj)

    @property
    def _path(self) -> str:
        path = getattr(self._node, "path", None)
        return str(path) if path is not None else f"{getattr(self._node, '_branch', 'results')}.runs"

    @property
    def _branch(self) -> str:
        return self._path.partition(".")[0]

    def _full(self, name: str) -> str:
        return f"{self._path.partition('.')[2]}.{name}".lstrip(".")

    @property
    def v_full_name(self) -> str:
        return self._path

    @property
    def v_name(self) -> str:
        return self._path.rpartition(".")[2]

    def f_add_parameter(self, *args: Any, **kwargs: Any) -> Any:
        if self._branch != "parameters":
            raise PypetError(f"{self._path} is not in parameters")
        return self._traj.f_add_parameter(*_renamed(args, self._full), **kwargs)

    def f_add_result(self, *args: Any, **kwargs: Any) -> Any:
        return self._traj.f_add_result(*_renamed(args, self._full), **kwargs)

    def f_get(self, name: str, fast_access: bool = False) -> Any:
        return self._traj._wrap(self._node[name], self._branch, fast_access)

    def f_get_children(self, copy: bool = True) -> dict[str, Any]:
        return {name: self.f_get(name) for name in self._node}

    def f_to_dict(self, fast_access: bool = False, short_names: bool = False, nested: bool = False) -> dict[str, Any]:
        branch, _, prefix = self._path.partition(".")
        prefix = prefix + "." if prefix else ""
        out: dict[str, Any] = {}
        for full, leaf in self._traj.state.leaves[branch].items():
            if full.startswith(prefix):
                key = full.rpartition(".")[2] if short_names else f"{branch}.{full}"
                if key in out:
                    raise NotUniqueNodeError(f"f_to_dict(short_names=True): {key!r} occurs twice")
                out[key] = leaf.value if fast_access else _Node(leaf, self._traj, branch)
        return out

    @property
    def v_annotations(self) -> _Annotations:
        return _Annotations(self._node.annotations)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name.startswith(("f_", "v_")):
            raise _UnsupportedAttribute(f"pypet's group.{name} is not supported by pypet_rebuild.compat")
        found = getattr(self._node, name)
        return self._traj._wrap(found, self._branch, self._traj._fast_access) if _is_node(found) else found

    def __getitem__(self, name: str) -> Any:
        return self._traj._wrap(self._node[name], self._branch, self._traj._fast_access)

    def __setattr__(self, name: str, value: Any) -> None:
        """pypet's ``traj.par.x = Parameter("x", ...)``, also ``traj.par.sub = Parameter("sub.w", ...)``
        (a dotted name under the attribute: added here under its full name), a link, or a value."""
        value = _unwrap(value)
        if (isinstance(value, _model.Parameter | _model.Result) and value.name.startswith(name + ".")
                and not _trajectory_level(self._traj, value)):
            adder = self._node.add_result if isinstance(value, _model.Result) else self._node.add_parameter
            adder(value)
            return
        setattr(self._node, name, value)

    @property
    def func(self) -> _Prefixed:
        return _Prefixed(self, "f_")

    @property
    def vars(self) -> _Prefixed:
        return _Prefixed(self, "v_")

    def __contains__(self, item: object) -> bool:
        return item in self._node

    def __iter__(self) -> Iterator[str]:
        return iter(self._node)

    def __len__(self) -> int:
        return len(self._node)

    def __dir__(self) -> list[str]:
        return dir(self._node)

    def __repr__(self) -> str:
        return repr(self._node)


class _Prefixed:
    """pypet's ``node.func.add_result`` / ``node.vars.comment``: the ``f_`` / ``v_`` names without
    their prefix."""

    __slots__ = ("_obj", "_prefix")

    def __init__(self, obj: Any, prefix: str) -> None:
        self._obj, self._prefix = obj, prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._obj, self._prefix + name)


def _is_node(obj: Any) -> bool:
    """A leaf, or one of the modern API's views (groups, runs, run sets: mappings of the package)."""
    if isinstance(obj, _model.Parameter | _model.Result | _model.GroupView | _model.RunsView):
        return True
    return (type(obj).__module__.startswith("pypet_rebuild.") and isinstance(obj, Mapping)
            and not isinstance(obj, dict))


def _one_value(node: Any) -> bool:
    """Whether pypet's fast access gives a result's value: it holds one value (not several
    items) and is not empty (an emptied result, or a skeleton, comes back as the node)."""
    if isinstance(node, _model.Result):
        return not node.is_empty and list(node.keys()) == [node.name.rpartition(".")[2]]
    return True


def _renamed(args: tuple[Any, ...], full: Callable[[str], str]) -> tuple[Any, ...]:
    """``args`` of an f_add_* call made on a group, its name made relative to the branch."""
    if args and isinstance(args[0], type):
        return (args[0], full(args[1]), *args[2:])
    if args and isinstance(args[0], str):
        return (full(args[0]), *args[1:])
    raise UnsupportedError("adding a Parameter object through a group: give the full name to "
                           "traj.f_add_parameter instead")


# ---------------------------------------------------------------------------------------------
# Trajectory

_TRAJ_UNSUPPORTED = {
    "wildcard_functions": "pypet-hpc knows the wildcards $ and $set only",
    "storage_service": "the trajectory file is always HDF5 (pypet_rebuild.HDF5StorageService)",
}
_TRAJ_IGNORED = frozenset({"file_title", "dynamic_imports", "dynamically_imported_classes", "encoding",
                           "complevel", "complib", "shuffle", "fletcher32", "pandas_format",
                           "purge_duplicate_comments", "summary_tables", "small_overview_tables",
                           "large_overview_tables", "results_per_run", "derived_parameters_per_run"})
_HANDLED = {"Trajectory": frozenset({"name", "add_time", "comment", "filename", "overwrite_file"}),
            "Environment": frozenset({"trajectory", "add_time", "comment", "filename", "overwrite_file",
                                      "multiproc", "ncores"})}
_PROPS = frozenset({"v_idx", "v_crun", "v_fast_access", "v_auto_load", "v_full_copy", "v_lazy_adding",
                    "v_shortcuts", "v_with_links", "v_iter_recursive", "v_max_depth", "v_check_uniqueness",
                    "v_standard_parameter", "v_standard_result", "v_storage_service"})


class Trajectory(_model.Trajectory):
    """pypet's Trajectory: the modern :class:`pypet_rebuild.Trajectory` with pypet's names.

    ``Trajectory(name, add_time=False, comment="", filename=None, overwrite_file=False)``;
    ``filename`` is where :meth:`f_store` writes and :meth:`f_load` reads.
    """

    _filename: str | None = None
    _overwrite: bool = False
    _fast_access: bool = True

    def __init__(self, name: str = "my_trajectory", add_time: bool = False, comment: str = "",
                 filename: str | os.PathLike[str] | None = None, overwrite_file: bool = False,
                 **kwargs: Any) -> None:
        _refuse("Trajectory", kwargs, _TRAJ_UNSUPPORTED, _TRAJ_IGNORED)
        if add_time:
            name = f"{name}_{datetime.datetime.now():%Y_%m_%d_%Hh%Mm%Ss}"
        super().__init__(name, comment)
        self._filename = os.fspath(filename) if filename is not None else None
        self._overwrite = overwrite_file

    @classmethod
    def restore(cls, name: str, comment: str, state: Any, file_path: str | None = None) -> Trajectory:
        return _as_compat(_model.Trajectory.restore(name, comment, state, file_path))

    # -- pypet's v_ properties ------------------------------------------------------------------
    @property
    def v_name(self) -> str:
        return self.name

    @property
    def v_comment(self) -> str:
        return self.comment

    @property
    def v_idx(self) -> int:
        return -1 if self.current_run is None else self.current_run

    @v_idx.setter
    def v_idx(self, idx: int) -> None:
        self.f_set_crun(idx)

    @property
    def v_crun(self) -> str | None:
        return None if self.current_run is None else run_name(self.current_run)

    @v_crun.setter
    def v_crun(self, name: str | None) -> None:
        self.f_set_crun(name)

    @property
    def v_crun_(self) -> str:
        return self.v_crun or pypetconstants.RUN_NAME_DUMMY

    @property
    def v_fast_access(self) -> bool:
        return self._fast_access

    @v_fast_access.setter
    def v_fast_access(self, value: bool) -> None:
        self._fast_access = bool(value)

    @property
    def v_auto_load(self) -> bool:
        return True  # run data is read from the file when touched

    @v_auto_load.setter
    def v_auto_load(self, value: bool) -> None:
        if not value:
            log.debug("v_auto_load=False ignored: run data is always read when touched")

    @property
    def func(self) -> _Prefixed:
        """pypet's ``traj.func.add_result(...)``: the f_ methods without the prefix."""
        return _Prefixed(self, "f_")

    @property
    def vars(self) -> _Prefixed:
        """pypet's ``traj.vars.name``: the v_ properties without the prefix."""
        return _Prefixed(self, "v_")

    @property
    def v_annotations(self) -> _Annotations:
        return _Annotations(self.annotations)

    @property
    def v_filename(self) -> str | None:
        return self._filename or self.file_path

    # -- adding ---------------------------------------------------------------------------------
    def f_add_parameter(self, *args: Any, **kwargs: Any) -> Any:
        """``f_add_parameter("x", 1, comment=...)``, ``f_add_parameter(ArrayParameter, "x", arr)``
        or ``f_add_parameter(Parameter("x", 1))``."""
        return self._add("parameters", Parameter, args, kwargs)

    def f_add_config(self, *args: Any, **kwargs: Any) -> Any:
        return self._add("config", Parameter, args, kwargs)

    def f_add_derived_parameter(self, *args: Any, **kwargs: Any) -> Any:
        return self._add("derived_parameters", Parameter, args, kwargs)

    def f_add_result(self, *args: Any, **kwargs: Any) -> Any:
        """``f_add_result("z", 3, comment=...)``, ``f_add_result("z", z=3)`` (one item named like
        the result) or several items ``f_add_result("money", amount=1, currency="EUR")``."""
        return self._add("results", Result, args, kwargs)

    def _add(self, branch: str, default: type[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not args:
            raise PypetError(f"f_add to {branch}: give a name (or a Parameter/Result)")
        cls = default
        if isinstance(args[0], type):
            cls, args = args[0], args[1:]
        if args and isinstance(args[0], _model.Parameter | _model.Result):
            if len(args) > 1 or kwargs:
                raise PypetError(f"f_add with the object {args[0].name!r}: give no further arguments")
            self.add_leaf(branch, args[0])
            return args[0]
        name, rest = args[0], list(args[1:])
        if len(rest) > 2:
            raise PypetError(f"f_add {name!r}: too many positional arguments (name, value, comment)")
        comment = kwargs.pop("comment", rest[1] if len(rest) > 1 else "")
        leaf_name = name.rpartition(".")[2]
        if not rest and len(kwargs) == 1 and leaf_name in kwargs:  # f_add_result("z", z=3)
            rest = [kwargs.pop(leaf_name)]
        if kwargs:
            if branch != "results":
                raise PypetError(f"f_add_{branch[:-1]} {name!r}: unknown keywords {sorted(kwargs)}")
            if rest:
                kwargs[leaf_name] = rest[0]
            return self.add_result(name, comment=comment, **kwargs)  # a result of several items
        value = rest[0] if rest else None
        if cls in (Parameter, Result, _model.Parameter, _model.Result):
            adders: dict[str, Callable[..., Any]] = {"parameters": self.add_parameter, "config": self.add_config,
                      "derived_parameters": self.add_derived_parameter, "results": self.add_result}
            return adders[branch](name, value, comment)
        leaf = cls(name, value, comment)  # a user's subclass, e.g. one converting in f_set
        self.add_leaf(branch, leaf)
        return leaf

    def f_add_parameter_group(self, name: str, comment: str = "") -> Any:
        return _Group(self.add_parameter_group(name, comment=comment), self)

    def f_add_link(self, name: str, node: Any = None) -> None:
        self.add_link(name, _unwrap(node))

    # -- exploring --------------------------------------------------------------------------------
    def f_explore(self, build_dict: Mapping[str, Sequence[Any]]) -> None:
        self.explore(build_dict)

    def f_expand(self, build_dict: Mapping[str, Sequence[Any]], fail_safe: bool = True) -> None:
        self.expand(build_dict)

    def f_get_explored_parameters(self, fast_access: bool = False, copy: bool = True) -> dict[str, Any]:
        params = self.state.leaves["parameters"]
        return {f"parameters.{n}": params[n].value if fast_access else _Node(params[n], self, "parameters")
                for n in self.explored}

    # -- access -----------------------------------------------------------------------------------
    def _wrap(self, node: Any, branch: str, fast_access: bool) -> Any:
        """A node as pypet hands it out: a leaf's value with fast access (a result only when it
        holds one value), else the leaf or group with pypet's methods."""
        if isinstance(node, _model.Parameter | _model.Result):
            if fast_access and _one_value(node):
                return node.value
            return _Node(node, self, branch)
        return _Group(node, self) if _is_node(node) else node

    # natural naming through the branches, with pypet's fast access
    @property
    def config(self) -> Any:
        return _Group(super().config, self)

    @property
    def parameters(self) -> Any:
        return _Group(super().parameters, self)

    @property
    def derived_parameters(self) -> Any:
        return _Group(super().derived_parameters, self)

    @property
    def results(self) -> Any:
        return _Group(super().results, self)

    par = parameters
    dpar = derived_parameters
    res = results
    conf = config

    def _lookup(self, name: str) -> Any:
        """The modern node ``name`` (a leaf or the modern group view), not yet wrapped."""
        return _model.Trajectory.__getitem__(self, name)

    def __getitem__(self, name: str) -> Any:
        """pypet's ``traj["name"]``: as ``traj.name`` (a group with pypet's methods, a leaf's value
        with fast access)."""
        head = name.partition(".")[0]
        node = self._lookup(name)
        branch = head if head in _BRANCHES else _branch_of(self, node)
        return self._wrap(node, branch, self._fast_access)

    def _node_path(self, target: Any) -> str:
        # the modern link target: a name is looked up as a node, a pypet proxy is unwrapped
        return super()._node_path(self._lookup(target) if isinstance(target, str) else _unwrap(target))

    def get(self, name: str, default: Any = _model._MISSING) -> Any:
        """The modern ``traj.get(name)``: the node itself (pypet's ``f_get`` wraps it)."""
        try:
            return self._lookup(name)
        except KeyError:
            if default is _model._MISSING:
                raise
            return default

    def f_get(self, name: str, fast_access: bool = False, with_links: bool = True, shortcuts: bool = True,
              max_depth: int | None = None, auto_load: bool = False) -> Any:
        head = name.partition(".")[0]
        try:
            node = self._lookup(name)
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None
        branch = head if head in _BRANCHES else _branch_of(self, node)
        return self._wrap(node, branch, fast_access)

    def f_contains(self, item: Any, with_links: bool = True, shortcuts: bool = False, max_depth: int | None = None) -> bool:
        return _unwrap(item).name in self if not isinstance(item, str) else item in self

    def f_to_dict(self, fast_access: bool = False, short_names: bool = False, nested: bool = False,
                  copy: bool = True, with_links: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for branch in _BRANCHES:
            out.update(getattr(self, branch).f_to_dict(fast_access, short_names))
        return out

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("f_", "v_")):
            raise _UnsupportedAttribute(f"pypet's traj.{name} is not supported by pypet_rebuild.compat")
        try:
            if not self._fast_access:
                node = self._lookup(name)
                return self._wrap(node, _branch_of(self, node), False)
            try:
                node = self._lookup(name)  # the modern shortcut resolution (the node, not yet its value)
            except KeyError:  # what only attribute access resolves (a link during a run, say)
                found = super().__getattr__(name)
                return self._wrap(found, "results", True) if _is_node(found) else found
            return self._wrap(node, _branch_of(self, node), True)
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in _PROPS or name in ("name", "comment", "file_path"):
            if name in _PROPS and not isinstance(getattr(type(self), name, None), property):
                log.debug("traj.%s ignored: no such setting in pypet-hpc", name)
                return
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, _unwrap(value))

    # -- runs -------------------------------------------------------------------------------------
    def f_set_crun(self, name_or_idx: int | str | None) -> None:
        if name_or_idx is None or name_or_idx == -1 or name_or_idx == pypetconstants.RUN_NAME_DUMMY:
            self.set_run(None)
        else:
            self.set_run(name_or_idx)

    def f_restore_default(self) -> None:
        self.set_run(None)

    def f_idx_to_run(self, name_or_idx: int | str) -> Any:
        if isinstance(name_or_idx, str):
            return int(name_or_idx.rpartition("_")[2])
        return run_name(name_or_idx)

    def f_get_run_names(self, sort: bool = True) -> list[str]:
        return [run_name(i) for i in range(len(self))]

    def f_wildcard(self, wildcard: str = "$", run_idx: int | None = None) -> str:
        idx = self.v_idx if run_idx is None else run_idx
        if wildcard in ("$", "crun"):
            return pypetconstants.RUN_NAME_DUMMY if idx < 0 else run_name(idx)
        if wildcard in ("$set", "crunset"):
            return pypetconstants.SET_NAME_DUMMY if idx < 0 else run_set_name(idx)
        raise UnsupportedError(f"wildcard {wildcard!r}: pypet-hpc knows $ and $set only")

    def f_iter_runs(self, start: int = 0, stop: int | None = None, step: int = 1,
                    yields: str = "name") -> Iterator[Any]:
        """Each run in turn, with the trajectory set to it (pypet's default yields run names)."""
        yield from self.iter_runs(start, stop, step, yields=yields)

    def f_get_from_runs(self, name: str, include_default_run: bool = True, use_indices: bool = False,
                        fast_access: bool = False, with_links: bool = True, shortcuts: bool = True,
                        max_depth: int | None = None, auto_load: bool = False) -> OrderedDict[Any, Any]:
        """pypet's OrderedDict: run name (or index) -> the result (or its value with
        ``fast_access=True``), for the runs that have ``name``."""
        try:
            column = self.get_from_runs(name)
        except KeyError:  # not a column (a result of several items, say): the runs' own nodes
            return self._from_run_nodes(name, use_indices, fast_access)
        present = np.flatnonzero(~np.ma.getmaskarray(column).reshape(len(column), -1).any(axis=1))
        out: OrderedDict[Any, Any] = OrderedDict()
        for i in present.tolist():
            key = i if use_indices else run_name(i)
            if fast_access:
                value = column.data[i]
                out[key] = value.item() if isinstance(value, np.generic) else value
            else:
                out[key] = _Node(super().results.runs[run_name(i)][name], self, "results")
        return out

    def _from_run_nodes(self, name: str, use_indices: bool, fast_access: bool) -> OrderedDict[Any, Any]:
        """pypet's dict built run by run from the runs' nodes (empty when no run has ``name``)."""
        runs = super().results.runs if self.state.run_store is not None else {}
        out: OrderedDict[Any, Any] = OrderedDict()
        for i in range(len(runs)):
            try:
                node = runs[run_name(i)][name]
            except KeyError:
                continue
            out[i if use_indices else run_name(i)] = self._wrap(node, "results", fast_access)
        return out

    def f_find_idx(self, name_list: str | Sequence[str], predicate: Callable[..., Any]) -> Iterator[int]:
        return iter(self.find_idx(name_list, predicate).tolist())

    def f_get_run_information(self, name_or_idx: int | str | None = None, copy: bool = True) -> dict[str, Any]:
        info = self.run_info()
        explored = self.explored

        def one(i: int) -> dict[str, Any]:
            start, end = float(info["start"][i]), float(info["end"][i])
            stamp = datetime.datetime.fromtimestamp(start) if start == start else None
            return {"completed": int(info["status"][i] == RunStatus.OK), "idx": i, "name": run_name(i),
                    "timestamp": start, "time": f"{stamp:%Y_%m_%d_%Hh%Mm%Ss}" if stamp else "",
                    "finish_timestamp": end,
                    "runtime": str(datetime.timedelta(seconds=end - start)) if stamp and end == end else "",
                    "parameter_summary": ", ".join(f"{n}: {v[i]!r}" for n, v in explored.items()),
                    "short_environment_hexsha": ""}

        if name_or_idx is None:
            return {run_name(i): one(i) for i in range(len(self))}
        return one(name_or_idx if isinstance(name_or_idx, int) else int(name_or_idx.rpartition("_")[2]))

    def f_is_completed(self, name_or_id: int | str | None = None) -> bool:
        return self.is_completed(name_or_id)

    # -- storage ----------------------------------------------------------------------------------
    def _path(self) -> str:
        path = self._filename or self.file_path
        if path is None:
            raise PypetError(f"trajectory {self.name!r} has no file: give Trajectory(..., filename=...)")
        return path

    def f_store(self, only_init: bool = False, store_data: int = pypetconstants.STORE_DATA,
                max_depth: int | None = None) -> None:
        path = self._path()
        if self._overwrite and os.path.exists(path):
            os.unlink(path)
            self._overwrite = False
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.store(path)

    def f_store_item(self, item: Any, store_data: int = pypetconstants.STORE_DATA, overwrite: bool = False,
                     **kwargs: Any) -> None:
        """pypet's ``f_store_item``: a leaf the file lacks is written; of one stored already the
        stored data stays, and a result's new items (``res.f_set(monty=...)``) are added to it;
        ``store_data=OVERWRITE_DATA`` (or ``overwrite=True``) replaces it."""
        _refuse("f_store_item", kwargs, {}, frozenset())
        name = _item_name(item)
        if store_data == pypetconstants.STORE_NOTHING:
            return
        if self.file_path is None:  # nothing stored yet: the file gets the trajectory, this item too
            self.f_store()
            return
        replace = overwrite or store_data == pypetconstants.OVERWRITE_DATA
        node = self.get(name)
        branch = _branch_of(self, node)
        if replace or (branch, node.name) not in _trajfile.stored_leaves(Path(self.file_path), self.name):
            self.store_item(name, overwrite=replace)
            return
        if not (isinstance(node, _model.Result) and is_multi(node)):
            log.debug("f_store_item(%r): stored already, the stored data is kept", name)
            return
        new = dict(node.value)  # a multi-item result's value is the dict of its items
        self.load_item(name)  # the stored items; of those also in memory the stored ones stay
        added = {key: value for key, value in new.items() if key not in node}
        for key, value in added.items():
            node[key] = value
        if added:
            self.store_item(name, overwrite=True)

    def f_load_item(self, item: Any, *args: Any, **kwargs: Any) -> None:
        """Read a trajectory-level leaf's data back (pypet's skeleton or an emptied result); a
        run's result (``traj.results.f_get("run_00000001").z``) is read from the file already."""
        node = _unwrap(item)
        if isinstance(node, _model.Result) and not _trajectory_level(self, node):
            if node.is_empty:
                raise UnsupportedError(f"f_load_item of an emptied result of a run ({node.name!r}): get it "
                                       "again, traj.results.runs.run_N.name reads it from the file")
            log.debug("f_load_item(%r): a run's result, read from the file when it was reached", node.name)
            return
        self.load_item(_item_name(item), *args, **kwargs)

    def f_load(self, name: str | None = None, index: int | None = None, as_new: bool = False,
               load_parameters: int = 2, load_derived_parameters: int = 1, load_results: int = 1,
               load_other_data: int = 1, recursive: bool = True, load_data: int | None = None,
               max_depth: int | None = None, force: bool = False, dynamic_imports: Any = None,
               with_run_information: bool = True, with_meta_data: bool = True,
               storage_service: Any = None, **kwargs: Any) -> None:
        """Load this trajectory (or ``name``) from its file into this object. Run data is read
        lazily when touched; with ``load_results=LOAD_SKELETON`` (pypet's default) the
        trajectory's own results come without data where the modern loader offers a skeleton."""
        if as_new:
            raise UnsupportedError("f_load(as_new=True) is not supported; grow a finished sweep with "
                                   "Environment(traj, workdir=W).expand(simulate, space=...)")
        if storage_service is not None:
            raise UnsupportedError("f_load(storage_service=...) is not supported: the file is HDF5")
        path = kwargs.pop("filename", None) or self._path()
        _refuse("f_load", kwargs, {}, frozenset())
        if index not in (None, 0, -1) and name is None:
            raise UnsupportedError(f"f_load(index={index}): a pypet-hpc file holds one trajectory; "
                                   "use index=-1 or name=")
        if name is None and self.state.leaves["parameters"]:
            name = self.name  # reload this trajectory (after env.run, say)
        if load_data is not None:
            load_results = load_data
        # below LOAD_DATA, pypet's skeleton: results without their data, read later with f_load_item
        self._adopt(_storage.load_trajectory(path, name, load_data=load_results == pypetconstants.LOAD_DATA))

    def _adopt(self, other: _model.Trajectory) -> None:
        """Take over ``other``'s name, comment, file and content (what f_load does in place)."""
        self.name, self.comment, self.file_path = other.name, other.comment, other.file_path
        self._state = other.state
        self._shortcuts = None
        self.set_run(None)

    def f_merge(self, other: Any, *args: Any, **kwargs: Any) -> None:
        raise UnsupportedError("f_merge is not supported in place; join the two files with "
                               "`pypet-hpc combine A.h5 B.h5 -o AB.h5 [--remove-duplicates]` or "
                               "pypet_rebuild.combine.combine(a, b, out)")

    def f_shrink(self, force: bool = False) -> None:
        raise UnsupportedError("f_shrink is not supported: explore again with traj.explore(...)")


_BRANCHES = ("config", "parameters", "derived_parameters", "results")


def _branch_of(traj: _model.Trajectory, node: Any) -> str:
    for branch in _BRANCHES:
        if traj.state.leaves[branch].get(str(getattr(node, "name", ""))) is node:
            return branch
    return "results"


def _trajectory_level(traj: _model.Trajectory, node: Any) -> bool:
    """Whether ``node`` is a leaf of the trajectory itself (not of a run, not a new object)."""
    return any(traj.state.leaves[b].get(str(getattr(node, "name", ""))) is node for b in _BRANCHES)


def _item_name(item: Any) -> str:
    node = _unwrap(item)
    return item if isinstance(item, str) else str(node.name)


def _as_compat(traj: _model.Trajectory) -> Trajectory:
    """The same trajectory object, answering pypet's names too (its class gains the methods;
    its content, run mode and storage stay the modern ones)."""
    if not isinstance(traj, Trajectory):
        traj.__class__ = Trajectory
    return traj  # type: ignore[return-value]


class _PypetJob:
    """A pypet job for the modern Environment: the worker's trajectory gets pypet's names, then
    ``job(traj, *args, **kwargs)`` runs. Picklable, so it reaches local and SLURM workers."""

    def __init__(self, job: Callable[..., Any]) -> None:
        if not callable(job):
            raise PypetError(f"env.run: {job!r} is not a function")
        self.job = job
        self.__qualname__ = getattr(job, "__qualname__", repr(job))

    def __call__(self, traj: _model.Trajectory, *args: Any, **kwargs: Any) -> Any:
        return self.job(_as_compat(traj), *args, **kwargs)


# ---------------------------------------------------------------------------------------------
# Environment

_ENV_UNSUPPORTED = {
    "use_scoop": "use executor='slurm' (job arrays) or executor='local' of pypet_rebuild.Environment",
    "resumable": "a sweep's workdir always resumes: pypet_rebuild.Environment(traj, workdir=W) and "
                 "`pypet-hpc resubmit W`",
    "resume_folder": "use pypet_rebuild.Environment(traj, workdir=W) and `pypet-hpc resubmit W`",
    "continuable": "use pypet_rebuild.Environment(traj, workdir=W) and `pypet-hpc resubmit W`",
    "storage_service": "the trajectory file is always HDF5 (pypet_rebuild.HDF5StorageService)",
    "git_repository": "pypet-hpc records the git commit and dirty flag in provenance.json; it never commits",
    "sumatra_project": "record provenance from the workdir's provenance.json instead",
    "immediate_postproc": "use env.add_postprocessing(fn) (runs after each wave)",
    "wildcard_functions": "pypet-hpc knows the wildcards $ and $set only",
    "automatic_storing": "results are always stored; runs write shards",
    "port": "no network locks or queues: every task writes its own shard",
    "timeout": "give executor='local' a time_limit= in pypet_rebuild.Environment",
    "dynamic_imports": "custom classes are loaded as Parameter/Result",
}
_ENV_IGNORED = frozenset({
    "log_config", "log_stdout", "log_level", "log_folder", "log_multiproc", "report_progress",
    "file_title", "large_overview_tables", "small_overview_tables", "summary_tables", "use_pool",
    "freeze_input", "wrap_mode", "queue_maxsize", "graceful_exit", "lazy_debug", "clean_up_runs",
    "gc_interval", "cpu_cap", "memory_cap", "swap_cap", "niceness", "complevel", "complib",
    "shuffle", "fletcher32", "pandas_format", "purge_duplicate_comments", "results_per_run",
    "derived_parameters_per_run", "encoding", "delete_resume", "git_message", "git_fail",
    "sumatra_reason", "sumatra_label", "do_single_runs", "display_time", "overwrite_file",
})


class Environment:
    """pypet's Environment over :class:`pypet_rebuild.Environment`.

    ``Environment(trajectory="name" or a Trajectory, add_time=False, comment="", filename=None,
    overwrite_file=False, multiproc=False, ncores=1, ...)``; ``filename`` defaults to
    ``hdf5/<name>.hdf5`` as in pypet. ``multiproc=True`` runs ``ncores`` local worker processes.
    A failing run makes ``run`` raise :class:`pypet_rebuild.RunsFailed` once the other runs are
    stored (pypet raises at the first failing run).
    """

    def __init__(self, trajectory: str | _model.Trajectory = "trajectory", add_time: bool = False,
                 comment: str = "", filename: str | os.PathLike[str] | None = None,
                 overwrite_file: bool = False, multiproc: bool = False, ncores: int = 1,
                 **kwargs: Any) -> None:
        _refuse("Environment", kwargs, _ENV_UNSUPPORTED, _ENV_IGNORED)
        if isinstance(trajectory, str):
            traj = Trajectory(trajectory, add_time=add_time, comment=comment)
        else:
            traj = _as_compat(trajectory)
        if filename is None:
            filename = os.path.join("hdf5", f"{traj.name}.hdf5")
        path = Path(filename)
        if os.fspath(filename).endswith(os.sep) or path.is_dir():
            path = path / f"{traj.name}.hdf5"
        if overwrite_file and path.exists():
            path.unlink()
        traj._filename = str(path)
        self.trajectory = traj
        self.filename = path
        self.multiproc = multiproc
        self.ncores = ncores
        self._ran = False
        self._postprocessing: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    @property
    def traj(self) -> Trajectory:
        return self.trajectory

    @property
    def v_trajectory(self) -> Trajectory:
        return self.trajectory

    def disable_logging(self, remove_all_handlers: bool = True) -> None:
        log.debug("disable_logging: pypet-hpc leaves logging to Python's logging module")

    def run(self, job: Callable[..., Any], *args: Any, **kwargs: Any) -> list[tuple[int, Any]]:
        """Run ``job(traj, *args, **kwargs)`` for every explored point and store the trajectory
        in ``filename``; the first failing run raises."""
        if self._ran:
            raise UnsupportedError("a second env.run: pypet-hpc grows a finished sweep with "
                                   "pypet_rebuild.Environment(traj, workdir=W).expand(job, space=...)")
        self._check_target()
        self.filename.parent.mkdir(parents=True, exist_ok=True)
        workdir = None
        options: dict[str, Any] = {}
        if self.multiproc:
            workdir = Path(tempfile.mkdtemp(prefix=".pypet-sweep-", dir=self.filename.parent))
            # one task per worker, as pypet's ncores processes: a worker process starts once
            options = {"max_parallel": self.ncores, "n_tasks": max(1, min(self.ncores, len(self.trajectory)))}
        env = _environment.Environment(self.trajectory, storage=_storage.HDF5StorageService(self.filename),
                                       executor="local" if self.multiproc else "inline", workdir=workdir,
                                       fail_on_error=True, **options)
        for postproc, pargs, pkwargs in self._postprocessing:
            env.add_postprocessing(postproc, *pargs, **pkwargs)
        self._ran = True
        try:
            return env.run(_PypetJob(job), *args, **kwargs)
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)

    def _check_target(self) -> None:
        """One trajectory per file: refuse a file holding another trajectory before any run."""
        if not self.filename.exists():
            return
        try:
            held = _storage.load_trajectory(self.filename).name
        except PypetError as exc:
            raise UnsupportedError(f"{self.filename} already holds trajectories ({exc}); pypet-hpc writes "
                                   "one trajectory per file: give another filename or overwrite_file=True"
                                   ) from None
        raise UnsupportedError(f"{self.filename} already holds trajectory {held!r}; pypet-hpc writes one "
                               "trajectory per file: give another filename or overwrite_file=True, and join "
                               "files with `pypet-hpc combine`")

    def add_postprocessing(self, postproc: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """pypet's ``postproc(traj, results, *args, **kwargs)`` after the runs (it may return new
        points to run): handed to the modern Environment's post-processing."""
        self._postprocessing.append((postproc, args, kwargs))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise _UnsupportedAttribute(f"pypet's env.{name} is not supported by pypet_rebuild.compat")


def cartesian_product(explore_dict: Mapping[str, Sequence[Any]],
                      combined_parameters: Sequence[str | Sequence[str]] | None = None) -> dict[str, list[Any]]:
    """pypet's ``cartesian_product(dict, ('a', ('b', 'c')))``: the last name varies fastest."""
    return _cartesian_product({k: list(v) for k, v in explore_dict.items()}, combined_parameters)


def load_trajectory(name: str | None = None, index: int | None = None, as_new: bool = False,
                    load_parameters: int = 2, load_derived_parameters: int = 1, load_results: int = 1,
                    load_other_data: int = 1, recursive: bool = True, load_data: int | None = None,
                    max_depth: int | None = None, force: bool = False, dynamic_imports: Any = None,
                    new_name: str = "my_trajectory", add_time: bool = True, wildcard_functions: Any = None,
                    with_run_information: bool = True, storage_service: Any = None,
                    filename: str | os.PathLike[str] | None = None, **kwargs: Any) -> Trajectory:
    """pypet's ``load_trajectory(filename=..., name=..., index=...)`` (run data is read lazily)."""
    if filename is None:
        raise PypetError("load_trajectory: give filename=")
    if wildcard_functions is not None:
        raise UnsupportedError("load_trajectory(wildcard_functions=...): pypet-hpc knows $ and $set only")
    traj = Trajectory(filename=filename)
    traj.f_load(name=name, index=index, as_new=as_new, load_results=load_results, load_data=load_data,
                storage_service=storage_service, **kwargs)
    return traj
