"""The inline executor: tasks run one after the other in the calling process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..exploration import Plan
from ..failures import FailureRule, FailureWatch
from ..formats.records import JobRecord
from ..model import Trajectory
from ..taskstate import TaskState
from ..workdir import Simulation, Workdir
from ..worker import run_task
from .base import Executor


class InlineExecutor(Executor):
    """Runs every task serially in this process (for debugging and small sweeps)."""

    name = "inline"
    option_defaults = {"stop_on_error": False}
    in_process = True

    def __init__(self, stop_on_error: bool = False) -> None:
        self.stop_on_error = stop_on_error
        self.traj: Trajectory | None = None
        self.fn: Simulation | None = None

    def options(self) -> dict[str, Any]:
        return {"stop_on_error": self.stop_on_error}

    def default_plan(self, n_runs: int, max_array_size: int) -> Plan:
        """One task: nothing runs in parallel, so more tasks would only cost shard files."""
        return Plan.make(n_runs, n_tasks=1, max_array_size=max_array_size)

    def bind(self, traj: Trajectory, fn: Simulation) -> None:
        """Run with the caller's live trajectory and function, so results stay in memory."""
        self.traj, self.fn = traj, fn

    def submit(self, wd: Workdir, tasks: Sequence[int], retry_failed: bool = False) -> list[str]:
        wd.record_jobs(JobRecord(self.name, ["inline"], list(tasks)))
        manifest = wd.manifest()
        watch = FailureWatch(FailureRule.parse(manifest.max_failures), manifest.plan.n_runs)  # one for all tasks
        for task in tasks:
            run_task(wd.path, task, retry_failed, self.traj, self.fn, self.stop_on_error, watch)
        return ["inline"]

    def states(self, wd: Workdir, patient: bool = False) -> dict[int, TaskState]:
        return {task: TaskState.COMPLETED for task in range(wd.manifest().plan.n_tasks) if wd.shard(task).exists()}

    def cancel(self, wd: Workdir) -> int:
        return 0
