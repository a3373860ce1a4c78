"""Merge per-task shards into one trajectory file: locked, atomic, incremental, idempotent.

A merge adds every complete shard it has not merged before. Onto an existing target it writes
in place, through a rollback journal (:mod:`.formats.journal`): it never copies what the
target holds, and a merge killed at any point leaves the old target or the new one. A new
target starts as a copy of the workdir's (small) skeleton and replaces its name with
``os.replace``.
What a shard adds to the file is :class:`.formats.trajfile.ShardMerger`'s business; this
module holds the lock and the atomic replacement.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NoSpaceError, StorageError
from .formats.files import (
    LOCK_TIMEOUT as LOCK_TIMEOUT,  # re-exported: the merge's default wait
)
from .formats.files import (
    disk_full,
    merge_lock,
    os_reason,
    replace_durably,
    reserve,
    verify_h5,
)
from .formats.journal import settle
from .formats.trajfile import (
    can_grow_in_place,
    damaged_target,
    merge_shards,
    nothing_new,
    plan_hash_of,
)

log = logging.getLogger(__name__)
MERGE_SPACE_FACTOR = 1.0  # a merge reserves the target's size plus this times the new shards' size


@dataclass
class MergeReport:
    """What a merge did and what is still missing."""

    target: Path
    n_runs: int
    merged_shards: list[str] = field(default_factory=list)
    skipped_shards: list[str] = field(default_factory=list)
    damaged_shards: list[str] = field(default_factory=list)  # "name: what is wrong", not merged
    ok: int = 0
    failed: int = 0

    @property
    def missing(self) -> int:
        return self.n_runs - self.ok - self.failed

    def summary(self, what: str = "shard") -> str:
        """One line; ``what`` names the inputs (``combine`` merges files, not shards)."""
        new, bad = len(self.merged_shards), len(self.damaged_shards)
        return (f"{self.target}: {self.ok} ok, {self.failed} failed, {self.missing} missing of "
                f"{self.n_runs} runs ({new} new {what}{'' if new == 1 else 's'} merged"
                f"{f', {bad} damaged shard(s) skipped' if bad else ''})")


def merge(
    skeleton: Path,
    shards: Sequence[Path],
    target: Path,
    plan_hash: str,
    lock_timeout: float = LOCK_TIMEOUT,
    progress: Callable[[int], None] | None = None,
    provenance: str | None = None,
    earlier_hashes: Sequence[str] = (),
    rebuild: bool = False,
) -> MergeReport:
    """Merge ``shards`` into ``target``; ``skeleton`` is the file to start from when none exists.

    The target is verified (every checksum) before anything is copied from it: a damaged target
    is refused, never carried forward. ``rebuild``: ignore the target and merge every shard into
    a fresh copy of the skeleton (the way out of a damaged target)."""
    target = Path(target)
    if target.is_dir():
        raise StorageError(f"{target}: the merge target is a directory; give a file name")
    if not target.parent.is_dir():
        raise StorageError(f"{target.parent}: no such directory for the merge target")
    _target_hash(target, plan_hash, earlier_hashes, rebuild)  # a wrong -o fails before the lock file is made
    with merge_lock(target, lock_timeout):
        return _merge_locked(skeleton, shards, target, plan_hash, progress, provenance, earlier_hashes, rebuild)


def _merge_locked(skeleton: Path, shards: Sequence[Path], target: Path, plan_hash: str,
                  progress: Callable[[int], None] | None, provenance: str | None,
                  earlier_hashes: Sequence[str], rebuild: bool) -> MergeReport:
    settle(target)  # a killed merge's change is rolled back before anything else
    tmp = target.with_name(f".{target.name}.merging-{os.getpid()}")
    try:
        for stale in target.parent.glob(f".{glob.escape(target.name)}.merging-*"):
            stale.unlink()  # left by a killed merge (we hold the lock: no other merge is running)
        target_hash = None if rebuild else _target_hash(target, plan_hash, earlier_hashes)
        quick = nothing_new(target, shards) if target_hash == plan_hash else None
        if quick is not None:  # every shard is in the target already: leave it untouched
            return MergeReport(target, quick[0], skipped_shards=[p.name for p in sorted(shards)], ok=quick[1],
                               failed=quick[2])
        # the target grows in place (rollback journal) when it can; a new target, --rebuild, or an
        # expanded sweep's target written before its datasets were resizable start from the skeleton
        in_place = target_hash is not None and (target_hash == plan_hash or can_grow_in_place(target))
        if target_hash is not None and not in_place:
            damage = verify_h5(target)
            if damage is not None:
                raise damaged_target(target, damage.removeprefix("damaged: "))
        start = target if in_place else skeleton
        # a full disk must show before HDF5 writes (a write failing inside HDF5 can leave it unable
        # to close the file, or crash): reserve the space the new shards could need
        since = start.stat().st_ctime if in_place else -1.0  # ctime: a rename counts
        extra = int(MERGE_SPACE_FACTOR * sum(p.stat().st_size for p in shards if p.stat().st_ctime >= since)) \
            + (256 << 10)
        needed = extra + (0 if in_place else start.stat().st_size)
        work = target if in_place else tmp
        if not in_place:
            try:
                shutil.copyfile(start, tmp)
                reserve(tmp, needed)
            except OSError as exc:
                raise _no_space(tmp, target, needed, exc) from None
        try:
            merger, ok, failed = merge_shards(work, shards, plan_hash, target, earlier_hashes, provenance, progress,
                                              skeleton=skeleton, reserve=extra if in_place else 0)
        except OSError as exc:
            if not isinstance(exc, StorageError) and disk_full(exc):
                raise _no_space(work, target, needed, exc) from None
            raise
        if not in_place:
            replace_durably(tmp, target)
        return MergeReport(target, merger.n, merger.merged_shards, merger.skipped_shards,
                           merger.damaged_shards, ok, failed)
    finally:
        if tmp.exists():
            tmp.unlink()


def _no_space(tmp: Path, target: Path, needed: int, exc: OSError) -> NoSpaceError:
    return NoSpaceError(
        f"{tmp.parent}: no space for the merge (it needs about {needed / 1e6:.1f} MB: {os_reason(exc)}); "
        f"{target.name} is left as it was; free some space (or raise the quota) and merge again")


def _target_hash(target: Path, plan_hash: str, earlier_hashes: Sequence[str],
                 rebuild: bool = False) -> str | None:
    """The plan hash of an existing merge target, or None; refuses a file of another sweep or kind
    (``rebuild``: a file too damaged to name its sweep may be replaced)."""
    if not target.exists():
        return None
    target_hash = plan_hash_of(target)
    if target_hash is None and rebuild:
        return None
    if target_hash is None:
        raise StorageError(f"{target} exists and is not a pypet-hpc trajectory file; choose another -o")
    if target_hash != plan_hash and target_hash not in earlier_hashes:
        raise StorageError(f"{target} holds another sweep (plan hash differs); choose another -o")
    return target_hash
