"""Where an Environment puts the trajectory file, and how a user loads one back.

The file's layout belongs to :mod:`.formats.trajfile`; this module is the user's side of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from .errors import check_type
from .formats.files import get_attr, open_h5
from .formats.trajfile import FORMAT_VERSION, trajectory_group
from .formats.trajfile import load_trajectory as load_file
from .live import load_live
from .model import Trajectory

__all__ = ["FORMAT_VERSION", "HDF5StorageService", "StorageService", "get_attr", "load_trajectory",
           "open_h5", "trajectory_group"]


def load_trajectory(
    path: str | os.PathLike[str], name: str | None = None, allow_pickle: bool = False
) -> Trajectory:
    """Load a trajectory file (merged or written by HDF5StorageService) with natural naming;
    parameters and explored values are read at once, run data when touched. Pickled values are
    only unpickled when ``allow_pickle=True``.

    ``path`` may also be a sweep directory: then the runs come from its shards directly, the
    finished ones and the committed runs of running tasks, without a merge (a live view, a
    snapshot as of now; :mod:`.live`)."""
    check_type(path, (str, os.PathLike), "load_trajectory(path)", "a path")
    if Path(path).is_dir():
        return load_live(Path(path), allow_pickle)
    return load_file(path, name, allow_pickle)


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
