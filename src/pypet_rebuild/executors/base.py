"""The contract every executor keeps (as submitit's ``core.Executor``): build it from options,
submit tasks, report their states in :class:`TaskState` words, cancel. The environment and the
command line use executors only through this class."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from ..errors import PypetError
from ..exploration import DEFAULT_MAX_ARRAY_SIZE, Plan
from ..model import Trajectory
from ..taskstate import TaskState
from ..workdir import Simulation, Workdir


class Executor(ABC):
    """Submits tasks of a workdir and reports what the scheduler knows of them, never blocking."""

    name: ClassVar[str]
    # the options from_options() accepts, with their defaults
    option_defaults: ClassVar[Mapping[str, Any]]
    # tasks run in this process, during submit(): nothing to wait for, no function to pickle
    in_process: ClassVar[bool] = False

    @classmethod
    def from_options(cls, **options: Any) -> Self:
        """Build from CLI or manifest options; an unknown option raises an error listing the valid ones."""
        check_options(cls.name, options, cls.option_defaults)
        return cls(**options)

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The settings to store in the manifest, so that status/resubmit rebuild this executor."""

    @abstractmethod
    def submit(self, wd: Workdir, tasks: Sequence[int], retry_failed: bool = False) -> list[str]:
        """Start ``tasks``; record and return the job ids."""

    @abstractmethod
    def states(self, wd: Workdir, patient: bool = False) -> dict[int, TaskState]:
        """task -> scheduler state for the tasks this executor submitted (latest submission wins).
        ``patient``: the caller polls in a loop (wait), so an older cached answer is fine."""

    @abstractmethod
    def cancel(self, wd: Workdir) -> int:
        """Cancel what is still pending or running; returns how many tasks were cancelled."""

    @abstractmethod
    def default_plan(self, n_runs: int, max_array_size: int) -> Plan:
        """The plan for ``n_runs`` runs when the user did not choose the task size."""

    def plan(self, n_runs: int, runs_per_task: int | None = None, n_tasks: int | None = None,
             max_array_size: int | None = None) -> Plan:
        """The plan for ``n_runs`` runs: the user's task size if given, else this executor's
        default; arrays of at most ``max_array_size`` tasks (default: what the cluster allows)."""
        if max_array_size is None:
            limit = self.max_array_size()
            max_array_size = DEFAULT_MAX_ARRAY_SIZE if limit is None else limit
        if runs_per_task is None and n_tasks is None:
            return self.default_plan(n_runs, max_array_size)
        return Plan.make(n_runs, runs_per_task, n_tasks, max_array_size)

    def preflight(self) -> None:
        """Check what only the scheduler can tell, before anything is written or submitted."""
        return None

    def max_array_size(self) -> int | None:
        """The most tasks one submission may hold (None: no limit of the scheduler's)."""
        return None

    def batch_script(self, wd: Workdir, tasks: Sequence[int]) -> str | None:
        """The script one array of ``tasks`` would be submitted with (None: there is none)."""
        return None

    def bind(self, traj: Trajectory, fn: Simulation) -> None:
        """Hand over the caller's live trajectory and function (used only when ``in_process``)."""
        return None


def check_options(name: str, given: Mapping[str, Any], valid: Mapping[str, Any]) -> None:
    """Raise an error listing every valid option if ``given`` holds one that is not."""
    unknown = sorted(set(given) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items())
        raise PypetError(f"executor {name!r} has no option {', '.join(unknown)}; valid options: {listing}")
