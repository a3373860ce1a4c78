"""The in-memory model: typed Parameter and Result leaves, the Trajectory tree and its views."""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from . import analysis
from .codec import check_value, scalar_column, value_kind
from .errors import (
    AmbiguousNameError,
    ArgumentTypeError,
    EmptyResultError,
    ExplorationError,
    InvalidNameError,
    LockedParameterError,
    NamingError,
    NotExploredError,
    PypetError,
)
from .naming import (
    RUN_SET_SIZE,
    has_wildcard,
    item_key,
    run_form,
    run_name,
    run_segment,
    split_name,
)
from .runstore import (
    BRANCHES,
    RUN_BRANCHES,
    Annotations,
    GroupInfo,
    RunStatus,
    RunStore,
    TrajectoryState,
    is_multi,
)

T = TypeVar("T")
V = TypeVar("V")  # the items of a view
_set = object.__setattr__  # sets a leaf's field without the lock check (the trajectory's own moves)
_MISSING: Any = object()


def _leaf_annotations(leaf: Any) -> Annotations:
    slots = leaf.__dict__
    ann: Annotations | None = slots.get("_annotations")
    if ann is None:
        if slots.get("_run"):
            raise PypetError(
                f"{leaf.name!r} was added by a run: annotations are stored for the trajectory, its groups and "
                "trajectory-level leaves; put per-run metadata in an item of the result instead")
        ann = slots["_annotations"] = Annotations()
    return ann


@dataclass
class Parameter(Generic[T]):
    """A named input of a simulation. Locked while a run executes."""

    name: str
    value: T
    comment: str = ""
    _locked: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name:  # "" is named by the attribute it is assigned to (traj.parameters.x = ...)
            split_name(self.name, VIEW_RESERVED, "parameter", wildcards=True)
        check_value(self.value, f"parameter {self.name!r}")

    @property
    def range(self) -> list[T]:
        """The explored values, one per run (pypet's ``f_get_range``); a parameter that is not
        explored has none (:class:`NotExploredError`, also a TypeError as in pypet)."""
        values = getattr(self, "_range", None)
        if values is None:
            raise NotExploredError(f"parameter {self.name!r} is not explored: it has no range")
        return list(values)

    def has_range(self) -> bool:
        """Whether the parameter is explored (pypet's ``f_has_range``)."""
        return getattr(self, "_range", None) is not None

    annotations = property(_leaf_annotations, doc="The node's annotations (stored as HDF5 attributes).")

    def lock(self, locked: bool = True) -> None:
        """Refuse (or again allow) changes of the value: a run must not change its inputs."""
        _set(self, "_locked", locked)

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "value" and getattr(self, "_locked", False):
            raise LockedParameterError(
                f"parameter {self.name!r} is locked while a run executes; "
                "store what you compute as a result or derived parameter instead"
            )
        object.__setattr__(self, key, value)


@dataclass(init=False)
class Result(Generic[T]):
    """A named output of a simulation run (or of the whole trajectory when added outside a run).

    ``Result("z", 1.5)`` holds one value; ``Result("money", amount=1.5, currency="EUR")`` holds
    items, read as ``result.amount`` or ``result["amount"]`` (its ``value`` is the dict of items).
    """

    name: str
    value: T
    comment: str = ""

    def __init__(self, name: str, value: Any = None, comment: str = "", **items: Any) -> None:
        self.name = name
        self.value = value
        self.comment = comment
        if items:
            if value is not None:
                raise PypetError(f"result {name!r}: give either one value or named items, not both")
            self.value = self.__dict__["_items"] = items  # type: ignore[assignment]
        self.__post_init__()

    def __post_init__(self) -> None:
        if self.name:
            split_name(self.name, VIEW_RESERVED, "result", wildcards=True)
        items = self.__dict__.get("_items")
        if items is None:
            check_value(self.value, f"result {self.name!r}")
            return
        for key, item in items.items():
            _check_item(self.name, key, item)

    annotations = property(_leaf_annotations, doc="The node's annotations (stored as HDF5 attributes).")

    def keys(self) -> list[str]:
        """The item names: those of a multi-item result, or the last segment of the name."""
        items = self.__dict__.get("_items")
        return list(items) if items is not None else [self.name.rpartition(".")[2]]

    def __getitem__(self, key: str) -> Any:
        items = self.__dict__.get("_items")
        if items is not None and key in items:
            return items[key]
        if items is None and key == self.name.rpartition(".")[2]:
            return self.value  # pypet: the one item of Result("x", 1) is "x"
        raise KeyError(f"result {self.name!r} has no item {key!r} (items: {', '.join(self.keys())})")

    def __setitem__(self, key: str, value: Any) -> None:
        items = self.__dict__.get("_items")
        if items is None:
            if self.__dict__.get("value") is not None:  # an emptied result takes new items (pypet's f_set)
                raise PypetError(f"result {self.name!r} holds one value; items go in a result made with items")
            items = self.__dict__["_items"] = {}
            _set(self, "value", items)
        _check_item(self.name, key, value)
        items[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def empty(self) -> None:
        """Free the value and keep the name and comment (pypet's ``f_empty``): a big result of a
        loaded trajectory costs no memory until ``traj.load_item(name)`` reads it again."""
        self.__dict__.pop("value", None)
        self.__dict__.pop("_items", None)

    @property
    def is_empty(self) -> bool:
        """Whether the value was freed by :meth:`empty` or never loaded (``load_data=False``)."""
        return "value" not in self.__dict__

    def __getattr__(self, name: str) -> Any:
        # only reached when normal lookup fails: an item (``res.amount``), ``value`` of an emptied result
        items = self.__dict__.get("_items") if not name.startswith("_") else None
        if items is not None and name in items:
            return items[name]
        if name == "value":
            raise EmptyResultError(f"result {self.__dict__.get('name', '?')!r} is empty (emptied, or loaded "
                                   f"with load_data=False); read it with traj.load_item(name)")
        raise AttributeError(f"result {self.__dict__.get('name')!r} has no attribute or item {name!r}")

    def __repr__(self) -> str:
        if self.is_empty:
            return f"Result(name={self.name!r}, <empty>, comment={self.comment!r})"
        return f"Result(name={self.name!r}, value={self.value!r}, comment={self.comment!r})"


_ITEM_RESERVED = frozenset({"name", "value", "comment", "keys", "annotations", "lock", "empty", "is_empty"})


def _check_item(name: str, key: Any, value: Any) -> None:
    if type(key) is not str or "." in key or key in _ITEM_RESERVED:
        raise NamingError(f"result {name!r}: item name {key!r} must be one name segment, not one of "
                          f"{', '.join(sorted(_ITEM_RESERVED))}")
    split_name(key)
    check_value(value, f"result {name!r} item {key!r}")


Leaf = Parameter[Any] | Result[Any]


def loaded_leaf(cls: type[Any], name: str, value: Any, comment: str = "", items: bool = False) -> Any:
    """A leaf read from a file: already validated when it was stored (and maybe unpickled).
    ``items``: ``value`` is the dict of a multi-item result's items."""
    leaf = object.__new__(cls)
    for key, item in (("name", name), ("value", value), ("comment", comment)):
        _set(leaf, key, item)
    if issubclass(cls, Parameter):
        _set(leaf, "_locked", False)
    if items:
        leaf.__dict__["_items"] = value
    return leaf


def fast_value(node: Any) -> Any:
    """What a shortcut (``traj.x``) gives: a parameter's or single-value result's value, else the
    node itself (a group, a multi-item result), as pypet's fast access does."""
    if isinstance(node, Parameter) or (isinstance(node, Result) and not is_multi(node)):
        return node.value
    return node


_STORAGE: list[Callable[[str | os.PathLike[str]], Any]] = []  # the storage service for a path, set by .storage (a layer above)


def use_storage(factory: Callable[[str | os.PathLike[str]], Any]) -> None:
    """Set what ``traj.store(path)`` and ``traj.load_item`` use (HDF5StorageService)."""
    _STORAGE[:] = [factory]


class _ItemsAsAttributes(Mapping[str, V]):
    """Natural naming of a view: ``view.name`` is ``view["name"]``, a missing one an AttributeError
    (so ``hasattr`` and ``getattr(view, name, default)`` work); private names are never items."""

    def __getattr__(self, name: str) -> V:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None


class GroupView(_ItemsAsAttributes[Any]):
    """A group of a trajectory branch, reached by natural naming (``traj.parameters.traffic``).

    Like an h5py Group it is a mapping: ``in``, ``len``, iteration, ``keys()`` and ``[]`` with
    dotted names. Leaves come back as Parameter or Result objects.
    """

    __slots__ = ("_traj", "_branch", "_prefix")

    def __init__(self, traj: Trajectory, branch: str, prefix: str = "") -> None:
        self._traj = traj
        self._branch = branch
        self._prefix = prefix

    @property
    def path(self) -> str:
        return f"{self._branch}.{self._prefix}".rstrip(".")

    def __getitem__(self, name: str) -> Any:
        full = self._prefix + name
        node = self._traj.state.leaves[self._branch].get(full)
        if node is not None:
            return node
        return self._traj._resolve(self._branch, full, name)


    def __setattr__(self, name: str, value: Any) -> None:
        """``group.y = Parameter("y", 1)`` (or ``Parameter("", 1)``) adds it here; assigning a node
        of the trajectory (``group.alias = traj.get("x")``) adds a link."""
        if name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        self._traj._assign(self._branch, self._prefix, name, value)

    # -- the group node ---------------------------------------------------------------------
    @property
    def comment(self) -> str:
        info = self._traj.state.groups[self._branch].get(self._prefix[:-1])
        return info.comment if info is not None else ""

    @property
    def annotations(self) -> Annotations:
        """The group's annotations (stored as HDF5 attributes of its group)."""
        return self._traj.state.groups[self._branch].setdefault(self._prefix[:-1], GroupInfo()).annotations

    def add_parameter(self, item: Parameter[Any] | str, value: Any = None, comment: str = "") -> Parameter[Any]:
        """Add a parameter (a config or derived parameter in those branches) under this group."""
        if self._branch == "results":
            raise NamingError(f"{self.path} is a result group: add results here (add_result), parameters "
                              "under traj.parameters")
        param = item if isinstance(item, Parameter) else Parameter(name=item, value=value, comment=comment)
        return self._traj._add_param(self._branch, self._placed(param), None, "")

    def add_result(self, item: Result[Any] | str, value: Any = None, comment: str = "", **items: Any) -> Result[Any]:
        """Add a result under this group (during a run it belongs to that run)."""
        if self._branch != "results":
            raise NamingError(f"{self.path} is a {self._branch} group: add results under traj.results")
        if isinstance(item, str):
            return self._traj.add_result(self._prefix + item, value, comment, **items)
        return self._traj.add_result(self._placed(item))

    def add_group(self, name: str, comment: str = "") -> GroupView:
        """Add a subgroup (pypet's ``f_add_*_group``), with a comment."""
        return self._traj._add_group(self._branch, self._prefix + name, comment)

    def add_link(self, name: str, target: Any) -> None:
        """A link ``name`` in this group to another node of the trajectory (a leaf or a group)."""
        self._traj._add_link(f"{self._branch}.{self._prefix}{name}", target)

    def _placed(self, leaf: Any) -> Any:
        if not leaf.name:
            raise NamingError(f"a node added to {self.path} needs a name")
        _set(leaf, "name", self._prefix + leaf.name)
        return leaf

    def _children(self) -> list[str]:
        seen: dict[str, None] = {}
        cut = len(self._prefix)
        for full in self._traj._names(self._branch):
            if full.startswith(self._prefix):
                seen[full[cut:].split(".", 1)[0]] = None
        state = self._traj.state
        extra = [g for g in state.groups[self._branch] if g] + [
            link.partition(".")[2] for link in state.links if link.startswith(self._branch + ".")]
        for full in extra:
            if full.startswith(self._prefix):
                seen[full[cut:].split(".", 1)[0]] = None
        if self._branch in RUN_BRANCHES and not self._prefix and self._traj.state.run_store is not None:
            seen["runs"] = None
        return list(seen)

    def __iter__(self) -> Iterator[str]:
        return iter(self._children())

    def __len__(self) -> int:
        return len(self._children())

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        full = self._prefix + name
        return full in self._traj.state.leaves[self._branch] or any(
            n == full or n.startswith(full + ".") for n in self._traj._names(self._branch)
        ) or name in self._children()

    def __repr__(self) -> str:
        kids = self._children()
        shown = ", ".join(kids[:8]) + (", ..." if len(kids) > 8 else "")
        return f"<{self.path} group: {len(kids)} children: {shown}>"

    def __dir__(self) -> list[str]:
        """The children too, so that tab completion (IPython, Jupyter) offers natural naming."""
        return sorted(set(super().__dir__()) | {c for c in self._children() if c.isidentifier()})


VIEW_RESERVED = frozenset(
    n for n in dir(GroupView) if not n.startswith("_")
) | frozenset({"runs", "path"})


class RunsView(_ItemsAsAttributes["GroupView"]):
    """``traj.results.runs``: one group per run, pypet style (``runs.run_00000003.z``)."""

    def __init__(self, traj: Trajectory, branch: str) -> None:
        self._traj = traj
        self._branch = branch

    def __getitem__(self, name: str) -> GroupView:
        node = self._traj._run_path(self._branch, name)
        if node is None:
            raise KeyError(f"no run named {name!r} (the trajectory has {len(self._traj)} runs)")
        return node  # type: ignore[no-any-return]


    def __iter__(self) -> Iterator[str]:
        return (run_name(i) for i in range(len(self._traj)))

    def __len__(self) -> int:
        return len(self._traj)

    def __repr__(self) -> str:
        return f"<{self._branch}.runs: {len(self)} runs>"


class RunGroupView(GroupView):
    """The data one run added to a branch."""

    __slots__ = ("_run",)

    def __init__(self, traj: Trajectory, branch: str, run: int, prefix: str = "") -> None:
        super().__init__(traj, branch, prefix)
        self._run = run

    @property
    def path(self) -> str:
        return f"{self._branch}.runs.{run_name(self._run)}.{self._prefix}".rstrip(".")

    def __getitem__(self, name: str) -> Any:
        full = self._prefix + name
        store = self._traj.state.run_store
        if store is not None:
            node = store.get(self._run, self._branch, full)
            if node is not None:
                return node
            if any(n.startswith(full + ".") for n in store.names_in_run(self._run, self._branch)):
                return RunGroupView(self._traj, self._branch, self._run, full + ".")
        raise KeyError(f"{self.path}: no node named {name!r}")

    def _children(self) -> list[str]:
        store = self._traj.state.run_store
        names = store.names_in_run(self._run, self._branch) if store is not None else []
        cut = len(self._prefix)
        return list(dict.fromkeys(n[cut:].split(".", 1)[0] for n in names if n.startswith(self._prefix)))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._children()


class RunSetView(_ItemsAsAttributes["GroupView"]):
    """pypet's run set (``results.run_set_00000``, ``$set``, ``crunset``): runs ``1000*k`` to
    ``1000*k+999``, each as a run's group."""

    def __init__(self, traj: Trajectory, branch: str, index: int) -> None:
        self._traj, self._branch, self._index = traj, branch, index

    def _runs(self) -> range:
        start = self._index * RUN_SET_SIZE
        return range(start, min(start + RUN_SET_SIZE, len(self._traj)))

    def __getitem__(self, name: str) -> GroupView:
        seg = run_segment(name)
        if seg is not None and seg[0] == "run":
            idx = self._traj._run_of(seg[1])
            if idx in self._runs():
                return RunGroupView(self._traj, self._branch, idx)
        raise KeyError(f"{self._branch}.run_set_{self._index:05d} holds no run {name!r} "
                       f"(it holds runs {self._runs().start}-{self._runs().stop - 1})")


    def __iter__(self) -> Iterator[str]:
        return (run_name(i) for i in self._runs())

    def __len__(self) -> int:
        return len(self._runs())

    def __repr__(self) -> str:
        return f"<{self._branch}.run_set_{self._index:05d}: {len(self)} runs>"


class RunsOfName(Mapping[str, Any]):
    """A name that several runs added, read without a current run: pypet's
    ``results.neuron.run_00000003`` (from a result named ``neuron.$``) gives that run's leaf."""

    def __init__(self, traj: Trajectory, branch: str, name: str, runs: Sequence[int]) -> None:
        self._traj, self._branch, self._name, self._list = traj, branch, name, runs

    def error(self) -> AmbiguousNameError:
        return AmbiguousNameError(
            f"{self._branch}.{self._name} exists in {len(self._list)} runs; use traj.get_from_runs("
            f"{self._name!r}) for all of them, or traj.set_run(i) / traj.{self._branch}.runs.run_00000000."
            f"{self._name} for one")

    def __getitem__(self, name: str) -> Any:
        seg = run_segment(name)
        store = self._traj.state.run_store
        if seg is not None and seg[0] == "run" and store is not None:
            node = store.get(self._traj._run_of(seg[1]), self._branch, self._name)
            if node is not None:
                return node
        raise KeyError(f"{self._branch}.{self._name}: no run {name!r} has it")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if run_segment(name) is None:
            raise self.error()
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __iter__(self) -> Iterator[str]:
        return (run_name(int(i)) for i in self._list)

    def __len__(self) -> int:
        return len(self._list)

    def __repr__(self) -> str:
        return f"<{self._branch}.{self._name}: in {len(self)} runs>"


def _shallowest(hits: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The candidates of a short name at the least depth: there the shallower wins, as in pypet."""
    if len(hits) < 2:
        return hits
    depth = min(h[0].count(".") for h in hits)
    return [h for h in hits if h[0].count(".") == depth]


def _run_index(name: str | int) -> int | None:
    if isinstance(name, int):
        return name
    for prefix in ("run_", "r_"):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return int(name[len(prefix):])
    return None


class Trajectory:
    """The container of a sweep: config, parameters, derived parameters and results.

    Nodes are added with dotted names (``traffic.ncars``) and reached by natural naming
    (``traj.parameters.traffic.ncars``), by item access (``traj.parameters["traffic.ncars"]``) or,
    for a unique short name, straight on the trajectory (``traj.ncars`` gives the value).
    """

    def __init__(self, name: str, comment: str = "") -> None:
        split_name(name)
        self.name = name
        self.comment = comment
        self._state = TrajectoryState()
        self._current_run: int | None = None
        self._in_run = False
        self._views = {b: GroupView(self, b) for b in BRANCHES}
        self._shortcuts: dict[str, list[tuple[str, Any]]] | None = None
        self.file_path: str | None = None

    @property
    def state(self) -> TrajectoryState:
        """The trajectory's content (leaves, explored columns, run count, run store), for the
        parts that store, load, run and combine it."""
        return self._state

    @classmethod
    def restore(cls, name: str, comment: str, state: TrajectoryState, file_path: str | None = None) -> Trajectory:
        """A trajectory around stored ``state`` (what a loader read from a file)."""
        traj = cls(name, comment)
        traj._state = state
        traj.file_path = file_path
        traj._link_ranges()
        return traj

    def add_leaf(self, branch: str, leaf: Parameter[Any] | Result[Any]) -> None:
        """Add a Parameter or Result to ``branch`` (one of config, parameters, derived_parameters,
        results), with the same rules as the ``add_*`` methods."""
        if branch not in BRANCHES:
            raise NamingError(f"unknown branch {branch!r}; choose one of {', '.join(BRANCHES)}")
        if branch == "parameters" and self._in_run:
            raise LockedParameterError(
                f"cannot add parameter {leaf.name!r} during a run; add it before the sweep starts"
            )
        self._add_leaf(branch, leaf)

    # -- branches -------------------------------------------------------------------------
    @property
    def config(self) -> GroupView:
        return self._views["config"]

    @property
    def parameters(self) -> GroupView:
        return self._views["parameters"]

    @property
    def derived_parameters(self) -> GroupView:
        return self._views["derived_parameters"]

    @property
    def results(self) -> GroupView:
        return self._views["results"]

    # pypet's abbreviations of the four branches
    par = parameters
    dpar = derived_parameters
    res = results
    conf = config

    # -- adding ---------------------------------------------------------------------------
    def add_config(self, item: Parameter[Any] | str, value: Any = None, comment: str = "") -> Parameter[Any]:
        return self._add_param("config", item, value, comment)

    def add_parameter(self, item: Parameter[Any] | str, value: Any = None, comment: str = "") -> Parameter[Any]:
        """Add a parameter: ``add_parameter(Parameter(name="x", value=0))`` or ``add_parameter("x", 0)``."""
        return self._add_param("parameters", item, value, comment)

    def add_derived_parameter(
        self, item: Parameter[Any] | str, value: Any = None, comment: str = ""
    ) -> Parameter[Any]:
        """Add a derived parameter; during a run it belongs to that run."""
        return self._add_param("derived_parameters", item, value, comment)

    def add_result(self, item: Result[Any] | str, value: Any = None, comment: str = "", **items: Any) -> Result[Any]:
        """Add a result; during a run it belongs to that run. ``add_result("z", 1.5)`` holds one
        value, ``add_result("money", amount=1.5, currency="EUR")`` named items."""
        if self._in_run and type(item) is str:  # the per-run hot path: no dataclass machinery
            result = _run_result(item, value, comment) if not items else _run_items(item, value, comment, items)
            store = self._state.run_store
            assert store is not None and self._current_run is not None
            store.add(self._current_run, "results", result)
            return result
        result = item if isinstance(item, Result) else Result(item, value, comment, **items)
        self._add_leaf("results", result)
        return result

    # -- groups and links -------------------------------------------------------------------
    def add_config_group(self, name: str, comment: str = "") -> GroupView:
        return self._add_group("config", name, comment)

    def add_parameter_group(self, name: str, comment: str = "") -> GroupView:
        """Add a (possibly empty) group of parameters with a comment; returns its view, on which
        ``add_parameter`` adds under the group."""
        return self._add_group("parameters", name, comment)

    def add_derived_parameter_group(self, name: str, comment: str = "") -> GroupView:
        return self._add_group("derived_parameters", name, comment)

    def add_result_group(self, name: str, comment: str = "") -> GroupView:
        return self._add_group("results", name, comment)

    def _add_group(self, branch: str, name: str, comment: str) -> GroupView:
        split_name(name, VIEW_RESERVED)
        groups = self._state.groups[branch]
        leaves = self._state.leaves[branch]
        for other in leaves:
            if other == name or name.startswith(other + "."):
                raise NamingError(f"group {branch}.{name} clashes with the existing leaf {branch}.{other}")
        info = groups.setdefault(name, GroupInfo())  # an existing group: its comment is updated
        info.comment = comment or info.comment
        self._shortcuts = None
        return GroupView(self, branch, name + ".")

    def add_link(self, name: str, target: Any) -> None:
        """A link ``traj.<name>`` to a node of the trajectory (a leaf, a group, or a full name):
        it resolves to that node and is stored in the file as an HDF5 soft link."""
        self._add_link(name, target)

    def _add_link(self, path: str, target: Any) -> None:
        dest = self._node_path(target)
        branch, _, rest = path.partition(".")
        if branch not in BRANCHES or not rest:
            branch, rest = "", path
        split_name(rest, VIEW_RESERVED)
        taken = path in self._state.links or (
            not branch and (path in BRANCHES or path in _OWN_ATTRS or hasattr(type(self), path)))
        if branch:
            taken = taken or rest in self._state.leaves[branch] or rest in self._state.groups[branch]
        else:
            taken = taken or path in self._shortcut_index()
        if taken:
            raise NamingError(f"link {path!r}: that name is taken; choose another")
        if branch and "." in rest:  # the groups a link is placed in are group nodes
            self._state.groups[branch].setdefault(rest.rpartition(".")[0], GroupInfo())
        self._state.links[path] = dest
        self._shortcuts = None

    def _node_path(self, target: Any) -> str:
        """The full name of a node of this trajectory (for a link), or a clear error."""
        if isinstance(target, str):
            target = self[target]
        if isinstance(target, RunGroupView) or (isinstance(target, GroupView) and target._traj is not self):
            raise NamingError(f"cannot link to {target.path}: links point at trajectory-level nodes")
        if isinstance(target, GroupView):
            return target.path
        if isinstance(target, Parameter | Result):
            leaf_name: str = target.name
            for branch in BRANCHES:
                if self._state.leaves[branch].get(leaf_name) is target:
                    return f"{branch}.{leaf_name}"
            raise NamingError(f"cannot link to {leaf_name!r}: it is not a trajectory-level node of "
                              f"{self.name!r} (links cannot point at one run's data)")
        raise TypeError(f"a link points at a node of the trajectory, not at a {type(target).__name__}")

    def _node(self, full: str) -> Any:
        head, _, rest = full.partition(".")
        return self._views[head][rest] if rest else self._views[head]

    def _assign(self, branch: str, prefix: str, name: str, value: Any) -> None:
        """``traj.<branch>.<prefix><name> = value``: a new leaf, a link, or a parameter's value."""
        attached = isinstance(value, GroupView) or (
            isinstance(value, Parameter | Result) and any(
                self._state.leaves[b].get(value.name) is value for b in BRANCHES))
        if attached:
            self._add_link(f"{branch}.{prefix}{name}", value)
            return
        if isinstance(value, Parameter | Result):
            want = Result if branch == "results" else Parameter
            if not isinstance(value, want):
                raise NamingError(f"{branch}.{prefix}{name}: the {branch} branch holds {want.__name__}s, "
                                  f"not {type(value).__name__}s")
            if value.name and value.name != name:
                raise NamingError(f"{type(value).__name__} {value.name!r} assigned to attribute {name!r}: give "
                                  f"it that name or an empty one ({type(value).__name__}('', ...))")
            split_name(name, VIEW_RESERVED)
            _set(value, "name", prefix + name)
            self.add_leaf(branch, value)
            return
        node = self._views[branch].get(prefix + name)
        if not isinstance(node, Parameter):
            raise AttributeError(f"{branch}.{prefix}{name}: assign a Parameter or Result to add a node, "
                                 "or a node of the trajectory to add a link")
        node.value = value

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The node ``name`` (a full or unique short name, a group, a link), or ``default`` when
        there is none (pypet's ``f_get``); without a default a missing name raises KeyError."""
        try:
            return self[name]
        except KeyError:
            if default is _MISSING:
                raise
            return default

    @property
    def annotations(self) -> Annotations:
        """The trajectory's annotations (stored as HDF5 attributes of its group)."""
        return self._state.annotations

    def _add_param(self, branch: str, item: Parameter[Any] | str, value: Any, comment: str) -> Parameter[Any]:
        param = item if isinstance(item, Parameter) else Parameter(name=item, value=value, comment=comment)
        self.add_leaf(branch, param)
        return param

    def _add_leaf(self, branch: str, leaf: Any) -> None:
        if not isinstance(leaf, Parameter | Result):
            raise TypeError(f"expected a Parameter or Result, got {type(leaf).__name__}")
        if not leaf.name:
            raise NamingError(f"a {type(leaf).__name__} added to {branch} needs a name (an empty one is "
                              "only taken from the attribute it is assigned to: traj.parameters.x = ...)")
        kind = "result" if isinstance(leaf, Result) else "parameter"
        if self._in_run and branch in RUN_BRANCHES:
            store = self._state.run_store
            assert store is not None and self._current_run is not None
            leaf.__dict__["_run"] = True
            form = run_form(leaf.name, VIEW_RESERVED, kind)
            if form != leaf.name:
                _set(leaf, "name", form)
            store.add(self._current_run, branch, leaf)
            return
        leaves = self._state.leaves[branch]
        name = leaf.name
        if has_wildcard(name):
            raise InvalidNameError(f"{kind} name {name!r}: '$', '$set', 'crun' and 'crunset' name the current "
                                   f"run, and no run executes; a valid spelling: {run_form(name, VIEW_RESERVED, kind)!r}")
        if name in leaves:
            raise NamingError(f"{branch}.{name} already exists")
        for other in leaves:
            if other.startswith(name + ".") or name.startswith(other + "."):
                kind = "group" if other.startswith(name + ".") else "leaf"
                raise NamingError(f"{branch}.{name} clashes with the existing {kind} {branch}.{other}")
        if name in self._state.groups[branch] or f"{branch}.{name}" in self._state.links:
            raise NamingError(f"{branch}.{name} clashes with the existing group or link {branch}.{name}")
        leaves[name] = leaf
        self._shortcuts = None

    # -- storing without an Environment (pypet's f_store, f_store_item, f_load_item) ----------
    def store(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the trajectory to ``path`` (default: the file it was loaded from or stored to):
        a new file, or the trajectory-level leaves the file lacks (post-processing results),
        written atomically under the merge lock."""
        self._storage(path).store(self)

    def store_item(self, name: str, overwrite: bool = False) -> None:
        """Write one trajectory-level parameter or result into the trajectory's file."""
        self._storage(None).store_item(self, name, overwrite)

    def load_item(self, name: str, load_only: Sequence[str] | None = None, allow_pickle: bool = False) -> Any:
        """Read one trajectory-level leaf back from the trajectory's file (an emptied result, or
        one loaded with ``load_data=False``); ``load_only`` reads only those keys of a dict value."""
        return self._storage(None).load_item(self, name, load_only, allow_pickle)

    def _storage(self, path: str | os.PathLike[str] | None) -> Any:
        where = path if path is not None else self.file_path
        if where is None:
            raise PypetError(f"trajectory {self.name!r} has no file yet; give one: traj.store('results.h5')")
        if not isinstance(where, str | os.PathLike):
            raise ArgumentTypeError(f"store(path) must be a path, not {type(where).__name__}")
        return _STORAGE[0](where)

    # -- exploration ------------------------------------------------------------------------
    def explore(self, space: Mapping[str, Sequence[Any]]) -> None:
        """Set explicit run points: equal-length lists of values, one list per parameter."""
        self._state.explored = self._checked_space(space)
        self._state.defaults = {n: self._state.leaves["parameters"][n].value for n in self._state.explored}
        self._state.n_runs = len(next(iter(self._state.explored.values())))
        self._link_ranges()

    def _link_ranges(self) -> None:
        """Give each parameter its explored values (``param.range``), the others none."""
        for name, param in self._state.leaves["parameters"].items():
            _set(param, "_range", self._state.explored.get(name))

    def get_range(self, name: str) -> list[Any]:
        """The explored values of parameter ``name`` (full or unique short name), one per run."""
        param: Parameter[Any] = self._state.leaves["parameters"][self.parameter_name(name, known=True)]
        return param.range

    def is_completed(self, run: int | str | None = None) -> bool:
        """Whether every run (or run ``run``: an index or ``run_00000003``) finished without error
        (pypet's ``f_is_completed``); a failed run is not completed."""
        if self._state.run_store is None:
            return False
        status = self.run_info()["status"]
        if run is None:
            return bool(np.all(status == RunStatus.OK))
        idx = _run_index(run)
        if idx is None or not 0 <= idx < len(self):
            raise IndexError(f"run {run!r} is out of range: the trajectory has {len(self)} runs")
        return bool(status[idx] == RunStatus.OK)

    def expand(self, space: Mapping[str, Sequence[Any]]) -> int:
        """Append run points after the existing ones (pypet's ``f_expand``); returns how many.

        ``space`` gives equal-length lists of the explored parameters (``cartesian_product`` of
        a grown space works); points the trajectory already has keep their run index and are
        not added again, so a finished sweep only runs what is new.
        """
        if not self._state.explored:
            self.explore(space)
            return len(self)
        new = self._checked_space(space)
        if set(new) != set(self._state.explored):
            raise ExplorationError(
                f"expand must give the explored parameters {sorted(self._state.explored)}, got {sorted(new)}")
        names = list(self._state.explored)
        seen = {tuple(repr(self._state.explored[n][i]) for n in names) for i in range(len(self))}
        added = 0
        for j in range(len(new[names[0]])):
            key = tuple(repr(new[n][j]) for n in names)
            if key not in seen:
                seen.add(key)
                for n in names:
                    self._state.explored[n].append(new[n][j])
                added += 1
        self._state.n_runs += added
        return added

    def parameter_name(self, name: str, known: bool = False) -> str:
        """The full name of parameter ``name``: a full name (``drive.zeta``, ``parameters.drive.zeta``)
        or a unique short one (``zeta``), as ``traj.zeta`` accepts."""
        params = self._state.leaves["parameters"]
        full = name.removeprefix("parameters.")
        if full in params:
            return full
        hits = [h for h, _ in _shallowest([(p, None) for p in params if p.endswith("." + full)])]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise ExplorationError(f"parameter {name!r} is ambiguous: it could be {', '.join(sorted(hits)[:10])}; "
                                   "use the full name")
        names = ", ".join(sorted(params)) or "none"
        if known:
            raise KeyError(f"trajectory {self.name!r} has no parameter {name!r} (known: {names})")
        raise ExplorationError(f"cannot explore unknown parameter {name!r} (known: {names})")

    def _checked_space(self, space: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
        if not isinstance(space, Mapping) or not space:
            raise ExplorationError("the exploration space is empty: give at least one parameter with values")
        params = self._state.leaves["parameters"]
        out: dict[str, list[Any]] = {}
        length: tuple[str, int] | None = None
        for raw_name, values in space.items():
            name = self.parameter_name(raw_name)
            if name in out:
                raise ExplorationError(f"parameter {name!r} appears twice in the exploration space")
            if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
                raise ExplorationError(
                    f"parameter {name!r}: explored values must be a list, got {type(values).__name__}"
                )
            values = list(values)
            if not values:
                raise ExplorationError(f"parameter {name!r}: the list of explored values is empty")
            if length is not None and len(values) != length[1]:
                raise ExplorationError(
                    f"parameter {name!r} has {len(values)} values but {length[0]!r} has {length[1]}; "
                    "explored lists must have equal lengths (use cartesian_product for all combinations)"
                )
            length = (name, len(values))
            out[name] = _explored_values(name, params[name].value, values)
        return out

    @property
    def explored(self) -> dict[str, list[Any]]:
        """The explored parameters and their value per run (a copy)."""
        return {k: list(v) for k, v in self._state.explored.items()}

    def __len__(self) -> int:
        return self._state.n_runs

    # -- runs -----------------------------------------------------------------------------
    def set_run(self, index: int | str | None) -> None:
        """Look at the trajectory as in run ``index``; ``None`` restores the default view."""
        if index is None:
            self._current_run = None
            self._apply_point(None)
            return
        idx = _run_index(index)
        if idx is None or not 0 <= idx < len(self):
            raise IndexError(f"run {index!r} is out of range: the trajectory has {len(self)} runs")
        self._current_run = idx
        self._apply_point(idx)

    @property
    def current_run(self) -> int | None:
        """The index of the run the trajectory currently shows, or None."""
        return self._current_run

    def iter_runs(self, start: int = 0, stop: int | None = None, step: int = 1,
                  yields: str = "idx") -> Iterator[Any]:
        """Set the trajectory to each run in turn (pypet's ``f_iter_runs``) and yield the run's
        index (``yields="idx"``, the default here), its name (``"name"``, pypet's default:
        ``run_00000003``), the trajectory itself (``"self"``) or a copy set to the run
        (``"copy"``); the view is restored afterwards. Indices and names work alike in
        ``set_run`` and ``traj.results.runs[...]``."""
        what: dict[str, Callable[[int], Any]] = {"idx": lambda i: i, "name": run_name, "self": lambda i: self,
                                                 "copy": self._copy_at}
        make = what.get(yields)
        if make is None:
            raise ValueError(f"iter_runs(yields={yields!r}): choose one of {', '.join(what)}")
        stop = len(self) if stop is None else stop
        if stop > len(self):
            raise IndexError(f"iter_runs(stop={stop}): the trajectory has {len(self)} runs")
        previous = self._current_run
        try:
            for i in range(start, stop, step):
                self.set_run(i)
                yield make(i)
        finally:
            self.set_run(previous)

    def _copy_at(self, idx: int) -> Trajectory:
        """A trajectory sharing this one's leaves and run data, its explored parameters set to run
        ``idx`` (pypet's shallow copy: explored parameters are copied, other leaves shared)."""
        other = Trajectory.restore(self.name, self.comment, TrajectoryState(
            leaves={b: dict(leaves) for b, leaves in self._state.leaves.items()},
            explored=self._state.explored, defaults=self._state.defaults, n_runs=self._state.n_runs,
            run_store=self._state.run_store), self.file_path)
        params = other._state.leaves["parameters"]
        for name in self._state.explored:
            copied = object.__new__(Parameter)
            copied.__dict__.update(params[name].__dict__)
            params[name] = copied
        other._link_ranges()
        other.set_run(idx)
        return other

    def _apply_point(self, idx: int | None) -> None:
        params = self._state.leaves["parameters"]
        for name, values in self._state.explored.items():
            _set(params[name], "value", self._state.defaults[name] if idx is None else values[idx])

    @contextmanager
    def running(self) -> Iterator[Callable[[int], None]]:
        """Run mode, for the worker: parameters are locked and results added go to the current
        run. Yields ``begin(i)``, which enters run ``i`` (explored parameters take its values)."""
        params = self._state.leaves["parameters"]
        # shortcut reads (``traj.x``) resolved once per task: the unique short names of the
        # (locked) parameters live in the instance dict for the task, so a read is a dict hit
        shortcuts = self._run_shortcuts()
        cached = self.__dict__
        slots = [(params[n], v, shortcuts.pop(n, [])) for n, v in self._state.explored.items()]
        for name, shorts in shortcuts.items():
            for short in shorts:
                cached[short] = params[name].value

        def begin(idx: int) -> None:
            self._current_run = idx
            for param, values, shorts in slots:
                value = values[idx]
                _set(param, "value", value)
                for short in shorts:
                    cached[short] = value

        for p in params.values():
            p.lock()
        self._in_run = True
        try:
            yield begin
        finally:
            for _, _, shorts in slots:
                for short in shorts:
                    cached.pop(short, None)
            for fixed in shortcuts.values():
                for short in fixed:
                    cached.pop(short, None)
            for p in params.values():
                p.lock(False)
            self._in_run = False
            self.set_run(None)

    def _run_shortcuts(self) -> dict[str, list[str]]:
        """parameter name -> the attribute names that resolve to it alone (``traj.x``), leaving
        out any that a method, property or attribute of the trajectory already answers."""
        self._shortcut_index()
        out: dict[str, list[str]] = {}
        params = self._state.leaves["parameters"]
        for short, hits in (self._shortcuts or {}).items():
            leaf = hits[0][1]
            if len(hits) != 1 or not isinstance(leaf, Parameter) or "." in short:
                continue
            name: str = leaf.name
            if params.get(name) is not leaf:
                continue  # a link to a parameter counts like the parameter, one to a config leaf not
            if short.startswith("_") or short in _OWN_ATTRS or hasattr(type(self), short) or short in self.__dict__:
                continue
            out.setdefault(name, []).append(short)
        return out

    # -- lookup ---------------------------------------------------------------------------
    def _names(self, branch: str) -> list[str]:
        names = list(self._state.leaves[branch])
        if self._state.run_store is not None and branch in RUN_BRANCHES:
            if self._current_run is not None:
                names += self._state.run_store.names_in_run(self._current_run, branch)
            else:
                names += self._state.run_store.names(branch)
        return names

    def _resolve(self, branch: str, full: str, asked: str) -> Any:
        """Find a node that is not a trajectory-level leaf: run data, or a group."""
        store = self._state.run_store
        link = self._state.links.get(f"{branch}.{full}")
        if link is not None:
            return self._node(link)
        if full in self._state.groups[branch]:
            return GroupView(self, branch, full + ".")
        if branch in RUN_BRANCHES:
            if full == "runs" and store is not None:
                return RunsView(self, branch)
            if store is not None:
                node = self._run_path(branch, full) if "_" in full or "$" in full or "crun" in full else None
                if node is None:
                    node = self._run_leaf(store, branch, full)
                if node is not None:
                    return node
        if any(n.startswith(full + ".") for n in self._names(branch)):
            return GroupView(self, branch, full + ".")
        raise KeyError(f"{branch}: no node named {full!r}")

    def _run_leaf(self, store: RunStore, branch: str, full: str) -> Any:
        if self._current_run is not None:
            return store.get(self._current_run, branch, full)
        runs = store.runs_with(branch, full)
        if len(runs) == 1:
            return store.get(int(runs[0]), branch, full)
        if len(runs) > 1:
            return RunsOfName(self, branch, full, runs)
        return None

    def _run_of(self, index: int | None) -> int:
        """A run index named in a path (None: the current run, ``crun``), checked."""
        if index is None:
            if self._current_run is None:
                raise KeyError("'crun' ('$') is the current run, and none is set: call traj.set_run(i) first")
            return self._current_run
        if not 0 <= index < len(self):
            raise KeyError(f"no run {run_name(index)} (the trajectory has {len(self)} runs)")
        return index

    def _run_path(self, branch: str, path: str) -> Any:
        """A pypet path through runs (``runs.run_00000003.z``, ``neuron.crun``, ``run_set_00000.r_3.z``,
        ``crunset``): the run's node, a run's or run set's view, or None when ``path`` names no run."""
        parts = path.split(".")
        run: int | None = None
        run_set: int | None = None
        kept: list[str] = []
        for i, part in enumerate(parts):
            seg = run_segment(part)
            if seg is None:
                if not (part == "runs" and i + 1 < len(parts) and run_segment(parts[i + 1]) is not None):
                    kept.append(part)
            elif seg[0] == "run":
                run = self._run_of(seg[1])
            else:
                run_set = self._run_of(None) // RUN_SET_SIZE if seg[1] is None else seg[1]
        if run is None and run_set is None:
            return None
        if run is None:
            if kept:
                raise KeyError(f"{branch}.{path}: a run set holds runs, name one (e.g. run_set_00000.run_00000000)")
            return RunSetView(self, branch, run_set or 0)
        if run_set is not None and run // RUN_SET_SIZE != run_set:
            raise KeyError(f"{branch}.{path}: {run_name(run)} is not in run_set_{run_set:05d}")
        view = RunGroupView(self, branch, run)
        return view[".".join(kept)] if kept else view

    def __getitem__(self, name: str) -> Any:
        """``traj["parameters.x"]``, a branch, a group or a unique short name, giving the node."""
        head, _, rest = name.partition(".")
        if head in BRANCHES:
            return self._views[head][rest] if rest else self._views[head]
        return self._shortcut(name, value=False)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._shortcut(name, value=True)
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    def __setattr__(self, name: str, value: Any) -> None:
        """``traj.x = v`` sets parameter ``x`` (pypet style; refused while a run executes);
        ``traj.mylink = traj.get("x")`` (a node of the trajectory) adds a link."""
        if name.startswith("_") or name in _OWN_ATTRS:
            object.__setattr__(self, name, value)
            return
        if isinstance(value, GroupView | Parameter | Result):
            self._add_link(name, value)
            return
        try:
            node = self._shortcut(name, value=False)
        except KeyError:
            raise AttributeError(f"trajectory {self.name!r} has no parameter {name!r} to set; "
                                 f"add it with add_parameter({name!r}, value)") from None
        if not isinstance(node, Parameter):
            raise AttributeError(f"{name!r} is a {type(node).__name__}, not a parameter: results are added "
                                 "with add_result, not assigned")
        node.value = value

    def __contains__(self, name: object) -> bool:
        try:
            self[name]  # type: ignore[index]
        except (KeyError, PypetError):
            return False
        return True

    def _shortcut(self, name: str, value: bool) -> Any:
        """Resolve a short name: trajectory-level leaves first (the shallowest, as in pypet), then
        the current run's data (or all runs' when no run is set)."""
        link = self._state.links.get(name)
        if link is not None:
            node = self._node(link)
            return fast_value(node) if value else node
        hits = self._shortcut_index().get(name)
        if hits is not None and len(hits) == 1:
            return fast_value(hits[0][1]) if value else hits[0][1]
        if hits:
            cands = ", ".join(h[0] for h in hits[:10])
            raise AmbiguousNameError(f"{name!r} is ambiguous: it could be {cands}; use the full name")
        store = self._state.run_store
        if store is not None and run_segment(name.partition(".")[0]) is not None:
            return self._views["results"][name]  # pypet's traj.crun.z, traj.run_00000001.z, traj.crunset
        matches: list[tuple[str, str]] = []
        if store is not None:
            run = self._current_run
            for branch in RUN_BRANCHES:
                names = store.names(branch) if run is None else store.names_in_run(run, branch)
                matches += [(f"{branch}.{n}", n) for n in names if n == name or n.endswith("." + name)]
        matches = _shallowest(matches)
        if not matches:
            raise KeyError(f"trajectory {self.name!r} has no node named {name!r}")
        if len(matches) > 1:
            cands = ", ".join(f for f, _ in matches[:10])
            raise AmbiguousNameError(f"{name!r} is ambiguous: it could be {cands}; use the full name")
        branch, _, full = matches[0][0].partition(".")
        node = self._views[branch][full]
        if isinstance(node, RunsOfName):
            raise node.error()
        return fast_value(node) if value else node

    def _shortcut_index(self) -> dict[str, list[tuple[str, Any]]]:
        """Every dotted suffix of every trajectory-level leaf and group -> (full name, node), built
        once (groups are those the leaves imply and those added explicitly)."""
        index = self._shortcuts
        if index is None:
            index = self._shortcuts = {}
            for branch in BRANCHES:
                groups = dict.fromkeys(g for g in self._state.groups[branch] if g)
                for full, leaf in self._state.leaves[branch].items():
                    parts = full.split(".")
                    for k in range(len(parts)):
                        index.setdefault(".".join(parts[k:]), []).append((f"{branch}.{full}", leaf))
                    for k in range(1, len(parts)):
                        groups[".".join(parts[:k])] = None
                for group in groups:
                    parts = group.split(".")
                    view = GroupView(self, branch, group + ".")
                    for k in range(len(parts)):
                        index.setdefault(".".join(parts[k:]), []).append((f"{branch}.{group}", view))
            for path, dest in self._state.links.items():  # a link in a group: by its short name too
                head, _, rest = path.partition(".")
                parts = (rest if head in BRANCHES else path).split(".")
                node = self._node(dest)
                for k in range(len(parts)):
                    index.setdefault(".".join(parts[k:]), []).append((path, node))
            for short, hits in index.items():
                if len(hits) > 1:
                    index[short] = _shallowest(hits)  # only the shallowest candidates count
        return index

    # -- analysis ---------------------------------------------------------------------------
    def get_from_runs(self, name: str, branch: str = "results") -> np.ma.MaskedArray:
        """The values of ``name`` over all runs, masked where a run has none."""
        store = self._state.run_store
        if store is None:
            raise PypetError("this trajectory has no runs yet")
        name = name.removeprefix(branch + ".")
        try:
            return store.column(branch, name, len(self))
        except KeyError:
            head, _, item = name.rpartition(".")  # money.amount: item amount of the result money
            if not head:
                raise
            return store.column(branch, item_key(head, item), len(self))

    def run_info(self) -> dict[str, np.ndarray]:
        """Status (a :class:`RunStatus` code: ``info["status"] == RunStatus.OK``), start, end, host
        and error of every run, as columns."""
        if self._state.run_store is None:
            raise PypetError("this trajectory has no runs yet")
        return self._state.run_store.run_info(len(self))

    def find_idx(self, names: str | Sequence[str], predicate: Callable[..., Any]) -> np.ndarray:
        """Run indices where ``predicate(*values of names)`` holds, e.g.
        ``traj.find_idx(["x", "y"], lambda x, y: x == 1 and y > 2)``."""
        return analysis.find_idx(self, names, predicate)

    def to_table(self) -> np.ma.MaskedArray:
        """Every run as a row of a (masked) structured array: index, status, duration,
        explored parameters and scalar results."""
        return analysis.to_table(self)

    def to_pandas(self) -> Any:
        """:meth:`to_table` as a pandas DataFrame indexed by run (pandas is an optional extra)."""
        return analysis.to_pandas(self)

    def __dir__(self) -> list[str]:
        """The branches and the unique short names too, so that tab completion offers them."""
        index = self._shortcut_index()
        short = {name for name, hits in index.items() if len(hits) == 1 and name.isidentifier()}
        store = self._state.run_store
        if store is not None:
            for branch in RUN_BRANCHES:
                short |= {n.rpartition(".")[2] for n in store.names(branch)}
        return sorted(set(super().__dir__()) | set(BRANCHES) | short)

    def _repr_html_(self) -> str:
        """Jupyter's view: runs and their status, the tree of each branch, the per-run results."""
        from html import escape

        store = self._state.run_store
        rows = [f"<b>Trajectory {escape(self.name)}</b>: {len(self)} runs"]
        if self.comment:
            rows.append(f"<i>{escape(self.comment)}</i>")
        if store is not None and len(self):
            status = self.run_info()["status"]
            rows.append(", ".join(f"{s}: {int(np.count_nonzero(status == s))}" for s in RunStatus))
        if self._state.explored:
            rows.append("explored: " + ", ".join(f"{escape(n)} ({len({repr(v) for v in vals})} values)"
                                                  for n, vals in self._state.explored.items()))
        tree: list[str] = []
        for branch in BRANCHES:
            leaves = list(self._state.leaves[branch].values())
            per_run = store.names(branch) if store is not None and branch in RUN_BRANCHES else []
            if not leaves and not per_run:
                continue
            items = [f"<li><code>{escape(leaf.name)}</code> = {escape(_short_repr(leaf.value))}"
                     f"{' <i>' + escape(leaf.comment) + '</i>' if leaf.comment else ''}</li>" for leaf in leaves[:50]]
            if len(leaves) > 50:
                items.append(f"<li>... {len(leaves) - 50} more</li>")
            if per_run:
                shown = ", ".join(f"<code>{escape(n)}</code>" for n in per_run[:30])
                items.append(f"<li>per run: {shown}{' ...' if len(per_run) > 30 else ''}</li>")
            tree.append(f"<details open><summary>{branch} ({len(leaves) + len(per_run)})</summary>"
                        f"<ul>{''.join(items)}</ul></details>")
        return "<div>" + "<br>".join(rows) + "".join(tree) + "</div>"

    def to_xarray(self) -> Any:
        """The sweep as an ``xarray.Dataset``: a dimension per explored parameter (or zipped
        group) when the points form a grid, else a ``run`` dimension (xarray is an optional extra)."""
        return analysis.to_xarray(self)

    def __repr__(self) -> str:
        store = self._state.run_store
        parts = []
        for b in BRANCHES:
            per_run = len(store.names(b)) if store is not None and b in RUN_BRANCHES else 0
            parts.append(f"{b}: {len(self._state.leaves[b])}" + (f" + {per_run} per run" if per_run else ""))
        return f"<Trajectory {self.name!r}: {len(self)} runs, {', '.join(parts)}>"


_OWN_ATTRS = frozenset({"name", "comment", "file_path"})


_RUN_RESULT_NAMES: dict[str, str] = {}  # name a run added -> the name it is stored under, once per process


def _run_result(name: str, value: Any, comment: str) -> Result[Any]:
    """``Result(name, value, comment)`` for a run's result, validated as the constructor does,
    with the name checked and its wildcards resolved once per name rather than once per run."""
    form = _RUN_RESULT_NAMES.get(name)
    if form is None:
        form = _RUN_RESULT_NAMES[name] = run_form(name, VIEW_RESERVED)
    name = form
    if type(value) is not float:  # every Python float can be stored
        check_value(value, f"result {name!r}")
    result: Result[Any] = object.__new__(Result)
    slots = result.__dict__
    slots["name"], slots["value"], slots["comment"], slots["_run"] = name, value, comment, True
    return result


def _run_items(name: str, value: Any, comment: str, items: dict[str, Any]) -> Result[Any]:
    """A run's multi-item result, its name and item names checked once per distinct set."""
    if value is not None:
        raise PypetError(f"result {name!r}: give either one value or named items, not both")
    form = _RUN_RESULT_NAMES.get(name)
    if form is None:
        form = _RUN_RESULT_NAMES[name] = run_form(name, VIEW_RESERVED)
    name = form
    key = (name, *items)
    if key not in _RUN_ITEM_NAMES:
        for item, v in items.items():
            _check_item(name, item, v)
        _RUN_ITEM_NAMES.add(key)
    else:
        for item, v in items.items():
            if type(v) is not float:
                check_value(v, f"result {name!r} item {item!r}")
    result: Result[Any] = object.__new__(Result)
    slots = result.__dict__
    slots["name"], slots["value"], slots["comment"], slots["_run"], slots["_items"] = name, items, comment, True, items
    return result


_RUN_ITEM_NAMES: set[tuple[str, ...]] = set()


def _explored_values(name: str, default: Any, values: list[Any]) -> list[Any]:
    """``values`` checked against the default's kind; a list of one Python scalar type is checked
    at numpy speed, anything else value by value."""
    fast = scalar_column(values)
    if fast is not None:
        want, got = value_kind(default), fast[0][0]
        if got == want:
            return values
        if want == "float" and got == "int":
            converted: list[Any] = fast[1].astype(np.float64).tolist()
            return converted
    return [_explored_value(name, default, v) for v in values]


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _explored_value(name: str, default: Any, value: Any) -> Any:
    want, got = value_kind(default), value_kind(value)
    if got == want or (want == "float" and got == "int") or (want == "complex" and got in ("int", "float")):
        check_value(value, f"explored value of {name!r}")
        if want == "float" and got == "int":
            return float(value)
        return value
    raise ExplorationError(
        f"parameter {name!r}: explored value {value!r} is a {got}, but the default "
        f"{default!r} is a {want}"
    )



# -- custom leaf classes ------------------------------------------------------------------------
_LEAF_CLASSES: dict[str, type[Any]] = {}


def class_path(cls: type[Any]) -> str:
    """How a leaf class is named in a file: ``module:qualname``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def register_leaf_class(cls: type[Any]) -> type[Any]:
    """Let every load in this process give leaves stored as ``cls`` back as ``cls`` (a subclass
    of Parameter or Result); usable as a class decorator."""
    if not isinstance(cls, type) or not issubclass(cls, Parameter | Result):
        raise TypeError(f"register_leaf_class needs a subclass of Parameter or Result, not {cls!r}")
    _LEAF_CLASSES[class_path(cls)] = cls
    return cls


def leaf_class(path: str, base: type[Any], classes: Sequence[type[Any]], allow_import: Sequence[str]) -> type[Any] | None:
    """The class a file names as ``path``, if the caller allows it: one of ``classes``, a
    registered one, or one imported from a module under an ``allow_import`` prefix; else None."""
    for given in classes:
        if class_path(given) == path:
            return given
    cls: Any = _LEAF_CLASSES.get(path)
    if cls is None:
        module, _, qualname = path.partition(":")
        if not any((module + ".").startswith(p if p.endswith(".") else p + ".") for p in allow_import):
            return None
        try:
            obj: Any = importlib.import_module(module)
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise PypetError(f"cannot import leaf class {path} (allowed by allow_import): "
                             f"{type(exc).__name__}: {exc}") from None
        cls = obj
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise PypetError(f"leaf class {path} is not a subclass of {base.__name__}")
    return cls


def extra_fields(leaf: Any) -> dict[str, Any]:
    """The dataclass fields a Parameter/Result subclass adds (stored next to the leaf)."""
    if type(leaf) in (Parameter, Result) or not dataclasses.is_dataclass(leaf):
        return {}
    return {f.name: getattr(leaf, f.name) for f in dataclasses.fields(leaf)
            if f.name not in ("name", "value", "comment", "_locked")}
