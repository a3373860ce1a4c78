"""Exceptions raised by pypet-hpc. Each one is a user-facing error with a one-line message."""

from __future__ import annotations


class PypetError(Exception):
    """Base class of every error this package raises on purpose."""


class NamingError(PypetError, ValueError):
    """A node name breaks the naming rules."""


class UnsupportedValueError(PypetError, TypeError):
    """A parameter or result value has a type that cannot be stored."""


class ExplorationError(PypetError, ValueError):
    """The exploration space is invalid (unknown parameter, empty list, unequal lengths...)."""


class LockedParameterError(PypetError, AttributeError):
    """A parameter was changed while a run was executing."""


class StorageError(PypetError, OSError):
    """A file is missing, unreadable, not a trajectory file or of an unknown format."""


class WorkdirError(PypetError, ValueError):
    """A sweep directory is missing, holds another sweep or is not writable."""


class SubmissionError(PypetError, RuntimeError):
    """The scheduler refused a submission."""


class TaskBusyError(PypetError, RuntimeError):
    """A task's shard is being written by another worker: the task runs elsewhere already."""


class SweepStopped(PypetError, RuntimeError):
    """The sweep was stopped early by its failure rule (``max_failures``): the message says why."""


class RunsFailed(PypetError, RuntimeError):
    """Runs of a sweep failed (``fail_on_error=True``); ``failed`` holds them, one dict per run
    (``run``, ``task``, ``type``, ``message``, ``traceback``)."""

    def __init__(self, message: str, failed: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.failed = failed
