"""``pypet-hpc clean WORKDIR``: remove the shards whose runs are in a verified merged file.

A shard is removed only when the merged file passes every checksum, belongs to this sweep (same
plan hash), lists the shard's id among those it merged and holds every run of the shard. When
any shard (final or ``.partial``) fails that, nothing is removed and one line says why. The
manifest, skeleton, jobs, provenance and logs stay; ``cleaned.json`` keeps each removed task's
(ok, failed) runs, so status still counts them and ``load_trajectory(WORKDIR)`` reads the
merged file. The merge lock is held throughout, so no merge reads a shard being removed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import CleanRefused, StorageError
from .formats.files import LOCK_TIMEOUT, merge_lock, verify_h5
from .formats.journal import settle
from .formats.records import CleanRecord
from .formats.schema import RunStatus
from .formats.shard import CountsCache, ShardReader
from .formats.trajfile import merged_runs
from .workdir import Workdir

log = logging.getLogger(__name__)


@dataclass
class CleanReport:
    """What clean removed."""

    target: Path
    removed: list[str] = field(default_factory=list)
    freed_bytes: int = 0


def clean_workdir(wd: Workdir, target: Path | None = None, lock_timeout: float = LOCK_TIMEOUT) -> CleanReport:
    """Remove the workdir's shards whose runs are all in the verified merged file ``target``
    (default: the workdir's merged file); :class:`CleanRefused` and nothing removed otherwise."""
    manifest = wd.manifest()
    target = Path(target) if target is not None else wd.default_output
    refuse = f"nothing removed; run pypet-hpc merge {wd.path} first"
    if not target.exists():
        raise CleanRefused(f"{target}: no merged file; {refuse}")
    partial = sorted(wd.shards.glob("task_*.h5.partial"))
    if partial:
        raise CleanRefused(f"{len(partial)} unfinished shard(s) ({partial[0].name}{' ...' if len(partial) > 1 else ''}): "
                           "their tasks are running or stopped; let them finish or resubmit, merge, then clean "
                           "(nothing removed)")
    with merge_lock(target, lock_timeout):
        settle(target)  # a killed merge's change is rolled back first, as merge does
        damage = verify_h5(target)
        if damage is not None:
            raise CleanRefused(f"{target} is not a verified merged file ({damage}); nothing removed")
        try:
            plan_hash, merged_ids, status = merged_runs(target)
        except (StorageError, OSError, KeyError, ValueError) as exc:
            raise CleanRefused(f"{target} is not a merged file of this sweep ({exc}); nothing removed") from None
        if plan_hash != manifest.plan_hash:
            raise CleanRefused(f"{target} holds another plan than the sweep's (plan hash differs); {refuse}")
        shards = wd.shard_files()
        tasks: dict[str, list[int]] = {}
        unmerged: list[str] = []
        for path in shards:
            try:
                with ShardReader(path) as reader:
                    shard_id, task, last = reader.shard_id, reader.task, reader.last_status()
            except StorageError:
                unmerged.append(f"{path.name} (unreadable)")
                continue
            runs = np.fromiter(last, dtype=np.int64, count=len(last))
            if shard_id not in merged_ids or (runs >= len(status)).any() or \
                    (status[runs] == RunStatus.MISSING).any():
                unmerged.append(path.name)
                continue
            values = np.fromiter(last.values(), dtype=np.int8, count=len(last))
            tasks[str(task)] = [int(np.count_nonzero(values == RunStatus.OK)),
                                int(np.count_nonzero(values == RunStatus.FAILED))]
        if unmerged:
            raise CleanRefused(f"{len(unmerged)} of {len(shards)} shards hold runs not in {target} "
                               f"({', '.join(unmerged[:3])}{' ...' if len(unmerged) > 3 else ''}); {refuse}")
        earlier = wd.cleaned()
        if earlier is not None and Path(earlier.target) == target:
            tasks = {**earlier.tasks, **tasks}
        CleanRecord(str(target), tasks).write(wd.clean_path)  # before removing: a crash leaves both, never neither
        report = CleanReport(target)
        for path in shards:
            report.freed_bytes += path.stat().st_size
            path.unlink()
            report.removed.append(path.name)
        for cache in (CountsCache.NAME, CountsCache.DONE):
            (wd.shards / cache).unlink(missing_ok=True)
    log.info("removed %d shards (%d bytes); their runs are in %s", len(report.removed), report.freed_bytes, target)
    return report
