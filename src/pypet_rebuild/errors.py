"""Exceptions raised by pypet-hpc. Each one is a user-facing error with a one-line message."""

from __future__ import annotations

from typing import Any


class PypetError(Exception):
    """Base class of every error this package raises on purpose."""


class NamingError(PypetError, ValueError):
    """A node name breaks the naming rules."""


class InvalidNameError(NamingError):
    """A name that can never be stored (reserved segment, bad characters, an unknown ``$``
    wildcard): raised in a run, it stops the whole sweep, since every run would fail alike."""


class AmbiguousNameError(PypetError, AttributeError):
    """A short name matches several nodes at the same depth; an AttributeError, so that
    ``hasattr`` and ``getattr(traj, name, default)`` treat it as absent."""


class UnsupportedValueError(PypetError, TypeError):
    """A parameter or result value has a type that cannot be stored."""


class ExplorationError(PypetError, ValueError):
    """The exploration space is invalid (unknown parameter, empty list, unequal lengths...)."""


class NotExploredError(ExplorationError, TypeError):
    """A parameter's explored range was asked for, but it is not explored."""


class EmptyResultError(PypetError, AttributeError):
    """The value of an emptied result (or one loaded with ``load_data=False``) was asked for."""


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


class DamagedFileError(StorageError):
    """A file's data fails its checksum or cannot be decoded: it is never carried forward."""


class NoSpaceError(StorageError):
    """A disk, quota or file size limit is full: nothing was replaced, no temp file is left."""


class LockBusyError(StorageError):
    """Another process has held a lock for longer than the wait allowed."""


class ArgumentTypeError(PypetError, TypeError):
    """A function of the API was given an argument of the wrong type."""


class LiveObjectError(ArgumentTypeError):
    """A simulation carries a multiprocessing proxy, lock or queue to local or SLURM workers,
    which run in other processes and cannot share it."""


def check_type(value: Any, types: type | tuple[type, ...], what: str, expected: str) -> None:
    """Raise :class:`ArgumentTypeError` (one line) unless ``value`` is one of ``types``; bools
    never pass for numbers."""
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                                                   else (types,))):
        raise ArgumentTypeError(f"{what} must be {expected}, not {type(value).__name__} ({value!r:.60})")
class SweepStopped(PypetError, RuntimeError):
    """The sweep was stopped early by its failure rule (``max_failures``): the message says why."""


class RunsFailed(PypetError, RuntimeError):
    """Runs of a sweep failed (``fail_on_error=True``); ``failed`` holds them, one dict per run
    (``run``, ``task``, ``type``, ``message``, ``traceback``)."""

    def __init__(self, message: str, failed: list[dict[str, object]]) -> None:
        super().__init__(message)
        self.failed = failed


class CleanRefused(PypetError, RuntimeError):
    """``pypet-hpc clean`` removed nothing: some shard's runs are not in a verified merged file."""
