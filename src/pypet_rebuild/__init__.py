"""pypet-hpc: pypet's Trajectory, run as SLURM job arrays or local workers, stored as HDF5 shards."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__
from .codec import Pickled
from .errors import (
    AmbiguousNameError,
    ExplorationError,
    InvalidNameError,
    LockedParameterError,
    NamingError,
    NotExploredError,
    PypetError,
    RunsFailed,
    StorageError,
    SubmissionError,
    SweepStopped,
    UnsupportedValueError,
    WorkdirError,
)
from .exploration import Plan, cartesian_product
from .model import Parameter, Result, Trajectory
from .runstore import RunStatus
from .storage import HDF5StorageService, StorageService, load_trajectory

if TYPE_CHECKING:
    from .environment import Environment, SweepHandle


def __getattr__(name: str) -> Any:
    # Environment pulls in the executors and the worker: import it on first use, so that
    # `python -m pypet_rebuild.worker` does not find its own module imported already
    if name in ("Environment", "SweepHandle"):
        from . import environment

        return getattr(environment, name)
    raise AttributeError(f"module 'pypet_rebuild' has no attribute {name!r}")

__all__ = [
    "AmbiguousNameError",
    "Environment",
    "ExplorationError",
    "HDF5StorageService",
    "InvalidNameError",
    "LockedParameterError",
    "NamingError",
    "NotExploredError",
    "Parameter",
    "Pickled",
    "Plan",
    "PypetError",
    "Result",
    "RunStatus",
    "RunsFailed",
    "StorageError",
    "StorageService",
    "SubmissionError",
    "SweepHandle",
    "SweepStopped",
    "Trajectory",
    "UnsupportedValueError",
    "WorkdirError",
    "__version__",
    "cartesian_product",
    "load_trajectory",
]
