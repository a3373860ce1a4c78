"""A trajectory's state, and where it finds the data its runs added: in memory, or lazily in a file.

This module sits below the model, analysis and storage layers: they all reach a trajectory's
content through :class:`TrajectoryState`, never through private attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import numpy as np

from .codec import column_array, column_spec
from .errors import NamingError, UnsupportedValueError
from .naming import split_item

RunKey = tuple[str, str]  # (branch, dotted name)


class RunStatus(IntEnum):
    """A run's outcome, as stored in ``run_info/status`` and given by ``run_info()["status"]``
    (compare with it: ``info["status"] == RunStatus.OK``); ``to_pandas`` shows the words."""

    MISSING = 0
    OK = 1
    FAILED = 2

    def __str__(self) -> str:
        return self.name.lower()


class RunStore(Protocol):
    """What a Trajectory asks about per-run data."""

    def add(self, run: int, branch: str, leaf: Any) -> None: ...
    def get(self, run: int, branch: str, name: str) -> Any: ...
    def names_in_run(self, run: int, branch: str) -> list[str]: ...
    def names(self, branch: str) -> list[str]: ...
    def runs_with(self, branch: str, name: str) -> Sequence[int]: ...
    def column(self, branch: str, name: str, n_runs: int) -> np.ma.MaskedArray: ...
    def run_info(self, n_runs: int) -> dict[str, np.ndarray]: ...


BRANCHES = ("config", "parameters", "derived_parameters", "results")
RUN_BRANCHES = ("derived_parameters", "results")  # the branches a run adds to


class Leaf(Protocol):
    """A parameter or result: what storage needs of a leaf."""

    name: str
    value: Any
    comment: str


def _empty_leaves() -> dict[str, dict[str, Any]]:
    return {b: {} for b in BRANCHES}


ANNOTATION_TYPES = (str, bool, int, float)


class Annotations(dict[str, Any]):
    """Small metadata on a node (``node.annotations["unit"] = "m"``), stored as HDF5 attributes of
    that node: string keys, values that are Python str, bool, int or float."""

    def __setitem__(self, key: str, value: Any) -> None:
        if type(key) is not str or not key or "/" in key:
            raise UnsupportedValueError(f"annotation key {key!r}: give a non-empty string without '/'")
        if type(value) not in ANNOTATION_TYPES or (type(value) is int and not -(2**63) <= value < 2**63):
            raise UnsupportedValueError(
                f"annotation {key!r}: {type(value).__name__} values are not supported (str, bool, int and "
                "float are); store bigger data as a result")
        super().__setitem__(key, value)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"annotations are set by key: annotations[{key!r}] = {value!r}")

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


@dataclass
class GroupInfo:
    """What a group node carries besides its children: a comment and annotations."""

    comment: str = ""
    annotations: Annotations = field(default_factory=Annotations)


def _empty_groups() -> dict[str, dict[str, GroupInfo]]:
    return {b: {} for b in BRANCHES}


@dataclass
class TrajectoryState:
    """What a trajectory holds, for the parts that store, load, run, analyse and combine it.

    ``leaves``: branch -> dotted name -> trajectory-level leaf (Parameter or Result);
    ``explored``: explored parameter -> its value in every run; ``defaults``: the explored
    parameters' values outside a run; ``n_runs``; ``run_store``: the runs' own data, if any;
    ``groups``: branch -> group path ("" for the branch) -> its comment and annotations, for the
    groups that have them or were added explicitly; ``links``: link path (``mylink``,
    ``parameters.traffic.alias``) -> the full name of the node it points at; ``annotations``: the
    trajectory's own.
    """

    leaves: dict[str, dict[str, Any]] = field(default_factory=_empty_leaves)
    explored: dict[str, list[Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    n_runs: int = 1
    run_store: RunStore | None = None
    groups: dict[str, dict[str, GroupInfo]] = field(default_factory=_empty_groups)
    links: dict[str, str] = field(default_factory=dict)
    annotations: Annotations = field(default_factory=Annotations)

    def points(self) -> dict[str, list[Any]]:
        """Every parameter's value in every run (its default where it is not explored)."""
        return {n: list(self.explored[n]) if n in self.explored else [p.value] * self.n_runs
                for n, p in self.leaves["parameters"].items()}


class MemoryRunStore:
    """Per-run leaves kept in dicts, for sweeps run in this process."""

    def __init__(self) -> None:
        self.data: dict[int, dict[RunKey, Any]] = {}
        self.info: dict[int, tuple[int, float, float, str]] = {}  # run -> (status, start, end, error)

    def add(self, run: int, branch: str, leaf: Any) -> None:
        slot = self.data.get(run)
        if slot is None:
            slot = self.data[run] = {}
        key = (branch, leaf.name)
        if key in slot:
            raise NamingError(f"{branch}.{leaf.name} was already added in this run")
        slot[key] = leaf

    def get(self, run: int, branch: str, name: str) -> Any:
        slot = self.data.get(run)
        return None if slot is None else slot.get((branch, name))

    def names_in_run(self, run: int, branch: str) -> list[str]:
        return [n for b, n in self.data.get(run, {}) if b == branch]

    def names(self, branch: str) -> list[str]:
        seen: dict[str, None] = {}
        for slot in self.data.values():
            for b, n in slot:
                if b == branch:
                    seen[n] = None
        return list(seen)

    def runs_with(self, branch: str, name: str) -> list[int]:
        key = (branch, name)
        return [run for run, slot in self.data.items() if key in slot]

    def column(self, branch: str, name: str, n_runs: int) -> np.ma.MaskedArray:
        """``name`` over the runs; ``money:amount`` gives item ``amount`` of result ``money``."""
        base, item = split_item(name)
        key = (branch, base)
        if item is None:
            found = [(run, slot[key].value) for run, slot in self.data.items() if key in slot]
        else:
            found = [(run, slot[key].value[item]) for run, slot in self.data.items()
                     if key in slot and is_multi(slot[key]) and item in slot[key].value]
        if not found:
            raise KeyError(f"no run has {branch}.{name}")
        return masked_column(found, n_runs)

    def run_info(self, n_runs: int) -> dict[str, np.ndarray]:
        status = np.zeros(n_runs, dtype=np.int8)
        start, end = np.full(n_runs, np.nan), np.full(n_runs, np.nan)
        error = np.full(n_runs, "", dtype=object)
        for run, (st, t0, t1, err) in self.info.items():
            status[run], start[run], end[run], error[run] = st, t0, t1, err
        return {"idx": np.arange(n_runs, dtype=np.int64), "status": status, "start": start, "end": end,
                "error": error}


def is_multi(leaf: Any) -> bool:
    """Whether ``leaf`` is a multi-item result (its value is the dict of its items)."""
    return "_items" in leaf.__dict__


def masked_column(found: list[tuple[int, Any]], n_runs: int) -> np.ma.MaskedArray:
    """Place (run, value) pairs into a run-indexed masked array (object dtype if they differ)."""
    specs = {column_spec(v) for _, v in found}
    runs = np.array([r for r, _ in found], dtype=np.int64)
    spec = specs.pop() if len(specs) == 1 else None
    if spec is not None and spec[0] != "str":
        values = column_array(spec, [v for _, v in found])
        data = np.zeros((n_runs, *values.shape[1:]), dtype=values.dtype)
    else:
        values = np.empty(len(found), dtype=object)
        values[:] = [v for _, v in found]
        data = np.empty(n_runs, dtype=object)
    data[runs] = values
    mask = np.ones(data.shape, dtype=bool)
    mask[runs] = False
    return np.ma.MaskedArray(data, mask=mask)
