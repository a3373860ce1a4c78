"""Where an Environment puts the trajectory file, and how a user loads one back.

The file's layout belongs to :mod:`.formats.trajfile`; this module is the user's side of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from .errors import check_type
from .formats.files import get_attr, open_h5
from .formats.trajfile import FORMAT_VERSION, load_trajectory, trajectory_group
from .model import Trajectory

__all__ = ["FORMAT_VERSION", "HDF5StorageService", "StorageService", "get_attr", "load_trajectory",
           "open_h5", "trajectory_group"]


class StorageService(Protocol):
    """Where an Environment puts the trajectory file."""

    file_path: Path


class HDF5StorageService:
    """Store the trajectory in one HDF5 file at ``file_path`` (written atomically by merge)."""

    def __init__(self, file_path: str | os.PathLike[str]) -> None:
        check_type(file_path, (str, os.PathLike), "HDF5StorageService(file_path=...)", "a path")
        self.file_path = Path(file_path)

    def load(self, name: str | None = None, allow_pickle: bool = False) -> Trajectory:
        return load_trajectory(self.file_path, name, allow_pickle)

    def __repr__(self) -> str:
        return f"HDF5StorageService(file_path={str(self.file_path)!r})"
