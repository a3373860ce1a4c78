"""pypet-hpc: pypet's Trajectory, run as SLURM job arrays or local workers, stored as HDF5 shards."""

from __future__ import annotations

__version__ = "0.1.0"

from .codec import Pickled
from .environment import Environment, SweepHandle
from .errors import (
    ExplorationError,
    LockedParameterError,
    NamingError,
    PypetError,
    StorageError,
    SubmissionError,
    UnsupportedValueError,
    WorkdirError,
)
from .exploration import Plan, cartesian_product
from .model import Parameter, Result, Trajectory
from .storage import HDF5StorageService, StorageService, load_trajectory

__all__ = [
    "Environment",
    "ExplorationError",
    "HDF5StorageService",
    "LockedParameterError",
    "NamingError",
    "Parameter",
    "Pickled",
    "Plan",
    "PypetError",
    "Result",
    "StorageError",
    "StorageService",
    "SubmissionError",
    "SweepHandle",
    "Trajectory",
    "UnsupportedValueError",
    "WorkdirError",
    "cartesian_product",
    "load_trajectory",
]
