"""Executors run a sweep's tasks: ``inline`` (this process), ``local`` (worker processes on this
machine) and ``slurm`` (submitit job arrays). They know nothing of the HDF5 layout: a task is a
workdir and a task number, and its shard on disk is the truth about what finished. Each one
keeps the contract of :class:`.base.Executor` and reports states as :class:`.TaskState`."""

from __future__ import annotations

from typing import Any

from ..errors import PypetError
from .base import Executor, check_options


def make_executor(name: str, **options: Any) -> Executor:
    """Build an executor by name; an unknown option raises an error listing the valid ones."""
    from .inline import InlineExecutor
    from .local import LocalExecutor

    classes: dict[str, type[Executor]] = {"inline": InlineExecutor, "local": LocalExecutor}
    try:
        from .slurm import SlurmExecutor

        classes["slurm"] = SlurmExecutor
    except ImportError:  # pragma: no cover - slurm support is part of the package
        pass
    cls = classes.get(name)
    if cls is None:
        raise PypetError(f"unknown executor {name!r}; choose one of {', '.join(classes)}")
    return cls.from_options(**options)


__all__ = ["Executor", "check_options", "make_executor"]
