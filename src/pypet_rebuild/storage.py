"""Where an Environment puts the trajectory file, and how a user loads one back.

The file's layout belongs to :mod:`.formats.trajfile`; this module is the user's side of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from .errors import AmbiguousNameError, StorageError, check_type
from .formats.files import LOCK_TIMEOUT, get_attr, open_h5, rewrite_locked
from .formats.trajfile import (
    FORMAT_VERSION,
    FileRunStore,
    file_identity,
    read_leaf_value,
    stored_leaves,
    trajectory_group,
    write_leaves,
    write_skeleton,
)
from .formats.trajfile import load_trajectory as load_file
from .live import load_live
from .model import Parameter, Result, Trajectory, use_storage
from .runstore import RunStatus

__all__ = ["FORMAT_VERSION", "HDF5StorageService", "StorageService", "get_attr", "load_trajectory",
           "open_h5", "trajectory_group"]


def load_trajectory(
    path: str | os.PathLike[str], name: str | None = None, allow_pickle: bool = False, load_data: bool = True,
    classes: Sequence[type[Any]] = (), allow_import: Sequence[str] = (),
) -> Trajectory:
    """Load a trajectory file (merged or written by HDF5StorageService) with natural naming;
    parameters and explored values are read at once, run data when touched. Pickled values are
    only unpickled when ``allow_pickle=True``; ``load_data=False`` loads the skeleton (every
    trajectory-level result empty until ``traj.load_item(name)`` reads it). A custom Parameter or
    Result subclass comes back as its class only when it is among ``classes``, registered
    (``register_leaf_class``) or under an ``allow_import`` module prefix; never unpickled.

    ``path`` may also be a sweep directory: then the runs come from its shards directly, the
    finished ones and the committed runs of running tasks, without a merge (a live view, a
    snapshot as of now; :mod:`.live`)."""
    check_type(path, (str, os.PathLike), "load_trajectory(path)", "a path")
    if Path(path).is_dir():
        if not (Path(path) / "manifest.json").exists():
            raise StorageError(f"{path}: is a directory, neither a trajectory file nor a sweep directory "
                               "(no manifest.json)")
        return load_live(Path(path), allow_pickle)
    return load_file(path, name, allow_pickle, load_data, classes, allow_import)


class StorageService(Protocol):
    """Where an Environment puts the trajectory file."""

    file_path: Path


class HDF5StorageService:
    """Store the trajectory in one HDF5 file at ``file_path`` (written atomically by merge).

    Without an Environment: ``store(traj)`` writes a new trajectory's file, or adds to an
    existing file of the same trajectory the trajectory-level leaves it lacks (results of a
    post-processing step), ``store_item`` writes one leaf, ``load_item`` reads one back. A file
    is never changed in place: a working copy beside it replaces it under the merge lock, so a
    kill at any moment leaves the old file or the new one.
    """

    def __init__(self, file_path: str | os.PathLike[str]) -> None:
        check_type(file_path, (str, os.PathLike), "HDF5StorageService(file_path=...)", "a path")
        self.file_path = Path(file_path)

    def load(self, name: str | None = None, allow_pickle: bool = False, load_data: bool = True) -> Trajectory:
        """The trajectory in the file; ``load_data=False``: the skeleton (results empty)."""
        return load_trajectory(self.file_path, name, allow_pickle, load_data)

    def store(self, traj: Trajectory, lock_timeout: float = LOCK_TIMEOUT) -> None:
        """Write ``traj``: a new file, or the trajectory-level leaves the existing file lacks."""
        check_type(traj, Trajectory, "store(traj)", "a Trajectory")
        target = self.file_path
        if target.is_dir():
            raise StorageError(f"{target}: is a directory; give a file name")
        if not target.parent.is_dir():
            raise StorageError(f"{target.parent}: no such directory")
        store = traj.state.run_store
        if not target.exists():
            if not isinstance(store, FileRunStore):
                if _finished_runs(traj):
                    raise StorageError(
                        f"the runs of trajectory {traj.name!r} are in memory only; run the sweep with "
                        f"Environment(..., storage=HDF5StorageService({str(target)!r})) to store them")
                write_skeleton(target, traj, len(traj))
                traj.file_path = str(target)
                return
            source = Path(store.path)
            self._add(traj, _new_leaves(traj, source), False, lock_timeout, source)
            traj.state.run_store = FileRunStore(target, store.name, store.allow_pickle)
        else:
            self._check_same(traj)
            if _finished_runs(traj) and not isinstance(store, FileRunStore) and not _finished_runs(load_trajectory(
                    target, traj.name)):
                raise StorageError(f"{target} holds none of the runs of trajectory {traj.name!r}, which are in "
                                   "memory only; store them by running the sweep with storage=")
            self._add(traj, _new_leaves(traj, target), False, lock_timeout)
        traj.file_path = str(target)

    def store_item(self, traj: Trajectory, name: str, overwrite: bool = False,
                   lock_timeout: float = LOCK_TIMEOUT) -> None:
        """Write one trajectory-level leaf of ``traj`` (full name ``results.mean`` or a unique
        short one) into the file; a leaf stored already is replaced only with ``overwrite``."""
        if not self.file_path.exists():
            self.store(traj, lock_timeout)
            return
        self._check_same(traj)
        branch, leaf = _leaf(traj, name)
        if isinstance(leaf, Result) and leaf.is_empty:
            raise StorageError(f"{branch}.{leaf.name} is empty; load it (traj.load_item) before storing it")
        self._add(traj, [(branch, leaf)], overwrite, lock_timeout)

    def load_item(self, traj: Trajectory, name: str, load_only: Sequence[str] | None = None,
                  allow_pickle: bool = False) -> Any:
        """Read one trajectory-level leaf back from the file into ``traj`` (an emptied or skeleton
        result gets its value again); ``load_only`` reads only those items of a dict value.
        Returns the leaf."""
        branch, leaf = _leaf(traj, name)
        value, items = read_leaf_value(self.file_path, traj.name, branch, leaf.name, allow_pickle, load_only)
        object.__setattr__(leaf, "value", value)
        if items:
            leaf.__dict__["_items"] = value
        return leaf

    def _check_same(self, traj: Trajectory) -> None:
        try:
            runs, explored = file_identity(self.file_path, traj.name)
        except StorageError as exc:
            raise StorageError(f"{exc}; store into another file") from None
        if runs != len(traj) or explored != list(traj.state.explored):
            raise StorageError(
                f"{self.file_path} holds another sweep of {traj.name!r} ({runs} runs exploring "
                f"{', '.join(explored) or 'nothing'}; this one has {len(traj)} exploring "
                f"{', '.join(traj.state.explored) or 'nothing'}); store into another file")

    def _add(self, traj: Trajectory, leaves: list[tuple[str, Any]], overwrite: bool, lock_timeout: float,
             source: Path | None = None) -> None:
        if not leaves and source is None:
            return  # nothing new: the file is left untouched
        extra = sum(int(getattr(leaf.value, "nbytes", 0)) + 4096 for _, leaf in leaves)
        with rewrite_locked(self.file_path, extra, lock_timeout, source) as working_copy:
            write_leaves(working_copy, traj.name, leaves, overwrite)

    def __repr__(self) -> str:
        return f"HDF5StorageService(file_path={str(self.file_path)!r})"


def _finished_runs(traj: Trajectory) -> bool:
    store = traj.state.run_store
    if store is None:
        return False
    return bool((store.run_info(len(traj))["status"] != RunStatus.MISSING).any())


def _new_leaves(traj: Trajectory, path: Path) -> list[tuple[str, Any]]:
    """The trajectory-level leaves of ``traj`` that the file at ``path`` does not hold."""
    have = stored_leaves(path, traj.name)
    out = []
    for branch, leaves in traj.state.leaves.items():
        for name, leaf in leaves.items():
            if (branch, name) in have:
                continue
            if isinstance(leaf, Result) and leaf.is_empty:
                raise StorageError(f"{branch}.{name} is empty and not in {path}; it cannot be stored")
            out.append((branch, leaf))
    return out


def _leaf(traj: Trajectory, name: str) -> tuple[str, Parameter[Any] | Result[Any]]:
    """(branch, leaf) of a trajectory-level leaf named fully (``results.mean``) or by a unique short name."""
    head, _, rest = name.partition(".")
    if rest and head in traj.state.leaves and rest in traj.state.leaves[head]:
        return head, traj.state.leaves[head][rest]
    hits = [(b, leaf) for b, leaves in traj.state.leaves.items() for n, leaf in leaves.items()
            if n == name or n.endswith("." + name)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise AmbiguousNameError(f"{name!r} is ambiguous: it could be "
                         f"{', '.join(f'{b}.{leaf.name}' for b, leaf in hits[:10])}; use the full name")
    raise KeyError(f"trajectory {traj.name!r} has no parameter or result {name!r} at the trajectory level")


use_storage(HDF5StorageService)
