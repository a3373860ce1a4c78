"""Exploration helpers and the sweep plan: run points, tasks of runs, arrays of tasks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codec import scalar_column
from .errors import ExplorationError, check_type

DEFAULT_MAX_ARRAY_SIZE = 1001  # tasks per array when nothing else says (SLURM's compiled-in MaxArraySize)


def cartesian_product(
    space: Mapping[str, Sequence[Any]], combined: Sequence[str | Sequence[str]] | None = None
) -> dict[str, list[Any]]:
    """All combinations of the value lists, the last parameter varying fastest.

    ``combined`` names groups of parameters that vary together (zipped, equal lengths), e.g.
    ``cartesian_product({"a": [1, 2], "b": [3, 4], "c": [0, 1]}, combined=[("a", "b")])`` gives
    4 points; a plain name in it stands for itself, as in pypet's ``("a", ("b", "c"))``. The
    groups named in ``combined`` come first, in that order, then the other parameters.
    Returns one list per parameter, ready for ``traj.explore``.
    """
    check_type(space, Mapping, "the exploration space", "a dict of parameter name -> list of values")
    if not space:
        raise ExplorationError("the exploration space is empty: give at least one parameter with values")
    for name, values in space.items():
        if isinstance(values, str | bytes) or not hasattr(values, "__len__"):
            raise ExplorationError(f"parameter {name!r}: explored values must be a list, got {type(values).__name__}")
        if len(values) == 0:
            raise ExplorationError(f"parameter {name!r}: the list of explored values is empty")
    if isinstance(combined, str):
        combined = [combined]
    groups = [(g,) if isinstance(g, str) else tuple(g) for g in combined or ()]
    grouped: set[str] = set()
    for group in groups:
        for name in group:
            if name not in space:
                raise ExplorationError(f"combined names {name!r}, which is not in the exploration space")
            if name in grouped:
                raise ExplorationError(f"parameter {name!r} is in more than one combined group")
        if len({len(space[n]) for n in group}) > 1:
            detail = ", ".join(f"{n}: {len(space[n])}" for n in group)
            raise ExplorationError(f"combined parameters must have equal lengths ({detail})")
        grouped.update(group)
    # the groups named in `combined` come first, in its order, then the other parameters
    order = groups + [(name,) for name in space if name not in grouped]
    # point i takes element (i // stride) % length of each group's axis: index arithmetic in numpy
    lengths = [len(space[group[0]]) for group in order]
    n_points = math.prod(lengths)
    points = np.arange(n_points, dtype=np.int64)
    out: dict[str, list[Any]] = {}
    stride = n_points
    for group, length in zip(order, lengths, strict=True):
        stride //= length
        idx = (points // stride) % length
        for name in group:
            axis = list(space[name])
            fast = scalar_column(axis)
            taken: list[Any] = fast[1][idx].tolist() if fast is not None else [axis[i] for i in idx.tolist()]
            out[name] = taken
    return {n: out[n] for n in space}


@dataclass(frozen=True)
class Plan:
    """How N runs are cut into tasks of consecutive runs and tasks into arrays.

    Task k holds runs ``[k * runs_per_task, min(N, (k + 1) * runs_per_task))``; array j holds
    tasks ``[j * max_array_size, ...)``. This is the only place that does this arithmetic.
    """

    n_runs: int
    runs_per_task: int
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE

    def __post_init__(self) -> None:
        for name in ("n_runs", "runs_per_task", "max_array_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ExplorationError(f"{name} must be a whole number of at least 1, got {value!r}")

    @classmethod
    def make(cls, n_runs: int, runs_per_task: int | None = None, n_tasks: int | None = None,
             max_array_size: int = DEFAULT_MAX_ARRAY_SIZE) -> Plan:
        """A plan from either ``runs_per_task`` or a wanted number of tasks (default: one task per 100 runs)."""
        if runs_per_task is None:
            if n_tasks is None:
                runs_per_task = max(1, min(n_runs, 100))
            elif isinstance(n_tasks, int) and n_tasks >= 1:
                runs_per_task = max(1, math.ceil(n_runs / n_tasks))
            else:
                raise ExplorationError(f"n_tasks must be a whole number of at least 1, got {n_tasks!r}")
        return cls(n_runs, runs_per_task, max_array_size)

    @property
    def n_tasks(self) -> int:
        return math.ceil(self.n_runs / self.runs_per_task)

    def task_runs(self, task: int) -> range:
        if not 0 <= task < self.n_tasks:
            raise IndexError(f"task {task} is out of range: the plan has {self.n_tasks} tasks")
        start = task * self.runs_per_task
        return range(start, min(self.n_runs, start + self.runs_per_task))

    def task_of(self, run: int) -> int:
        return run // self.runs_per_task

    def arrays(self, tasks: Sequence[int] | None = None, limit: int | None = None) -> list[list[int]]:
        """``tasks`` (default: all) grouped into arrays of at most ``max_array_size`` tasks each,
        and at most ``limit`` (e.g. what the cluster allows now)."""
        todo = list(range(self.n_tasks)) if tasks is None else list(tasks)
        size = self.max_array_size if limit is None else min(self.max_array_size, limit)
        return [todo[i:i + size] for i in range(0, len(todo), size)]

    def describe(self) -> str:
        arrays = len(self.arrays())
        text = f"{plural(self.n_runs, 'run')} in {plural(self.n_tasks, 'task')} of up to {plural(self.runs_per_task, 'run')}"
        return text + (f", {arrays} arrays of up to {self.max_array_size} tasks" if arrays > 1 else "")


def plural(n: int, word: str) -> str:
    """``3 runs``, ``1 run``."""
    return f"{n} {word}{'' if n == 1 else 's'}"
