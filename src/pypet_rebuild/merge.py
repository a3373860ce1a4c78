"""Merge per-task shards into one trajectory file: locked, atomic, incremental, idempotent.

The merge copies the current target (or the workdir's skeleton when there is none yet) to a
temporary file beside it, adds every complete shard it has not merged before, and replaces the
target with ``os.replace``. A merge killed at any point leaves the previous target untouched.
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

from filelock import FileLock, Timeout

from .errors import StorageError
from .formats.files import replace_durably
from .formats.trajfile import merge_shards, plan_hash_of

log = logging.getLogger(__name__)


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
    lock_timeout: float = 600.0,
    progress: Callable[[int], None] | None = None,
    provenance: str | None = None,
    earlier_hashes: Sequence[str] = (),
) -> MergeReport:
    """Merge ``shards`` into ``target``; ``skeleton`` is the file to start from when none exists."""
    target = Path(target)
    if target.is_dir():
        raise StorageError(f"{target}: the merge target is a directory; give a file name")
    if not target.parent.is_dir():
        raise StorageError(f"{target.parent}: no such directory for the merge target")
    _target_hash(target, plan_hash, earlier_hashes)  # a wrong -o fails before the lock file is made
    lock = FileLock(target.with_name(f".{target.name}.lock"))  # hidden: it stays after the merge
    try:
        lock.acquire(timeout=lock_timeout)
    except Timeout:
        raise StorageError(f"{target}: another merge holds {lock.lock_file} for over {lock_timeout:.0f} s") from None
    tmp = target.with_name(f".{target.name}.merging-{os.getpid()}")
    try:
        for stale in target.parent.glob(f".{glob.escape(target.name)}.merging-*"):
            stale.unlink()  # left by a killed merge (we hold the lock: no other merge is running)
        target_hash = _target_hash(target, plan_hash, earlier_hashes)
        # a target of an earlier, smaller plan (expand) is rebuilt from the skeleton and all shards
        shutil.copyfile(target if target_hash == plan_hash else skeleton, tmp)
        merger, ok, failed = merge_shards(tmp, shards, plan_hash, target, earlier_hashes, provenance, progress)
        replace_durably(tmp, target)
        return MergeReport(target, merger.n, merger.merged_shards, merger.skipped_shards,
                           merger.damaged_shards, ok, failed)
    finally:
        if tmp.exists():
            tmp.unlink()
        lock.release()


def _target_hash(target: Path, plan_hash: str, earlier_hashes: Sequence[str]) -> str | None:
    """The plan hash of an existing merge target, or None; refuses a file of another sweep or kind."""
    if not target.exists():
        return None
    target_hash = plan_hash_of(target)
    if target_hash is None:
        raise StorageError(f"{target} exists and is not a pypet-hpc trajectory file; choose another -o")
    if target_hash != plan_hash and target_hash not in earlier_hashes:
        raise StorageError(f"{target} holds another sweep (plan hash differs); choose another -o")
    return target_hash
