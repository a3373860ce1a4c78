"""Executors run a sweep's tasks: ``inline`` (this process), ``local`` (worker processes on this
machine) and ``slurm`` (submitit job arrays). They know nothing of the HDF5 layout: a task is a
workdir and a task number, and its shard on disk is the truth about what finished."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import PypetError
from ..workdir import Workdir

# scheduler states a task can be in, as status shows them
PENDING, RUNNING, COMPLETED, FAILED = "PENDING", "RUNNING", "COMPLETED", "FAILED"
CANCELLED, TIMEOUT, UNKNOWN = "CANCELLED", "TIMEOUT", "UNKNOWN"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMEOUT, "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                      "BOOT_FAIL", "DEADLINE"})


class Executor(Protocol):
    """Submits tasks of a workdir and reports what the scheduler knows of them, never blocking."""

    name: str

    def options(self) -> dict[str, Any]:
        """The settings to store in the manifest, so that status/resubmit rebuild this executor."""
        ...

    def submit(self, wd: Workdir, tasks: Sequence[int], retry_failed: bool = False) -> list[str]:
        """Start ``tasks``; record and return the job ids."""
        ...

    def states(self, wd: Workdir) -> dict[int, str]:
        """task -> scheduler state for the tasks this executor submitted (latest submission wins)."""
        ...

    def cancel(self, wd: Workdir) -> int:
        """Cancel what is still pending or running; returns how many jobs were cancelled."""
        ...


def make_executor(name: str, **options: Any) -> Executor:
    """Build an executor by name; an unknown option raises an error listing the valid ones."""
    from .inline import InlineExecutor
    from .local import LocalExecutor

    classes: dict[str, Any] = {"inline": InlineExecutor, "local": LocalExecutor}
    try:
        from .slurm import SlurmExecutor

        classes["slurm"] = SlurmExecutor
    except ImportError:  # pragma: no cover - slurm support is part of the package
        pass
    cls = classes.get(name)
    if cls is None:
        raise PypetError(f"unknown executor {name!r}; choose one of {', '.join(classes)}")
    return cls.from_options(**options)


def check_options(name: str, given: dict[str, Any], valid: dict[str, Any]) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in valid.items())
        raise PypetError(f"executor {name!r} has no option {', '.join(unknown)}; valid options: {listing}")
