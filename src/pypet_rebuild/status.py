"""What is done: shard files first (the truth), then what the scheduler says. Never blocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import PypetError, StorageError
from .executors import COMPLETED, PENDING, RUNNING, TERMINAL, UNKNOWN, make_executor
from .formats.shard import ShardReader, partial_path
from .workdir import Workdir

NOT_SUBMITTED = "NOT_SUBMITTED"
DAMAGED = "DAMAGED"


@dataclass
class TaskStatus:
    task: int
    first_run: int
    n_runs: int
    state: str
    ok: int = 0
    failed: int = 0
    shard: str | None = None
    problem: str | None = None

    @property
    def complete(self) -> bool:
        """Every run of the task finished without error and is in a final shard."""
        return self.shard is not None and not self.shard.endswith(".partial") and self.ok == self.n_runs


@dataclass
class SweepStatus:
    workdir: str
    n_runs: int
    tasks: list[TaskStatus]
    scheduler_note: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def finished(self) -> bool:
        """No task is pending or running any more (each has a shard or a terminal state)."""
        return all(t.state in TERMINAL or t.state in (NOT_SUBMITTED, DAMAGED) for t in self.tasks)

    def incomplete_tasks(self) -> list[TaskStatus]:
        return [t for t in self.tasks if not t.complete]


def read_counts(path: Path, live: bool = False) -> tuple[int, int]:
    """(ok, failed) runs in a shard; ``live`` opens without locking (the writer may hold it)."""
    with ShardReader(path, live=live) as reader:
        return reader.counts()


def sweep_status(wd: Workdir) -> SweepStatus:
    manifest = wd.manifest()
    plan = manifest.plan
    note = None
    submitted = _submission_times(wd)
    try:
        executor = make_executor(manifest.executor["name"], **manifest.executor.get("options", {}))
        sched = executor.states(wd)
    except (PypetError, OSError) as exc:  # a submitted task may still run: UNKNOWN, not NOT_SUBMITTED
        sched, note = dict.fromkeys(submitted, UNKNOWN), f"scheduler state unavailable: {exc}"
    tasks: list[TaskStatus] = []
    for task in range(plan.n_tasks):
        runs = plan.task_runs(task)
        st = TaskStatus(task, runs.start, len(runs), sched.get(task, NOT_SUBMITTED))
        final, partial = wd.shard(task), partial_path(wd.shard(task))
        path = final if final.exists() else partial if partial.exists() else None
        if path is not None:
            st.shard = path.name
            try:
                st.ok, st.failed = read_counts(path, live=path is partial)
                # a retry (of failed runs) submitted after the shard was written, of which the
                # scheduler knows nothing, may still be alive: it stays UNKNOWN, not COMPLETED
                unseen_retry = (st.state == UNKNOWN and st.ok < st.n_runs
                                and submitted.get(task, 0.0) > _mtime(path))
                if path is final and st.state not in (PENDING, RUNNING) and not unseen_retry:
                    st.state = COMPLETED  # else: a retry is under way
                elif st.state in TERMINAL or st.state == NOT_SUBMITTED:
                    st.problem = "stopped before finishing; resubmit resumes it"
            except StorageError as exc:
                if path is final:
                    st.state, st.problem = DAMAGED, str(exc)
                elif st.state != RUNNING:  # a running task's shard may be mid-write: not a problem
                    st.problem = str(exc)
        tasks.append(st)
    counts = {"ok": sum(t.ok for t in tasks), "failed": sum(t.failed for t in tasks)}
    counts["running"] = sum(t.n_runs - t.ok - t.failed for t in tasks if t.state == RUNNING)
    counts["pending"] = sum(t.n_runs - t.ok - t.failed for t in tasks if t.state == PENDING)
    counts["missing"] = plan.n_runs - sum(counts.values())
    return SweepStatus(str(wd.path), plan.n_runs, tasks, note, counts)


def _submission_times(wd: Workdir) -> dict[int, float]:
    """task -> when its latest submission was recorded in jobs.jsonl."""
    out: dict[int, float] = {}
    for job in wd.jobs():
        for task in job.tasks:
            out[task] = job.time
    return out


def _mtime(path: Path) -> float:
    try:
        return float(path.stat().st_mtime)
    except OSError:
        return float("inf")


def failed_runs(wd: Workdir) -> list[dict[str, Any]]:
    """Every failed run with its exception and traceback, read from the shards."""
    out: list[dict[str, Any]] = []
    for task in range(wd.manifest().plan.n_tasks):
        for path in (wd.shard(task), partial_path(wd.shard(task))):
            if not path.exists():
                continue
            try:
                with ShardReader(path, live=True) as reader:
                    out.extend({"run": f.run, "task": task, "type": f.type, "message": f.message,
                                "traceback": f.traceback} for f in reader.failed_runs())
            except StorageError:
                continue
            break
    return sorted(out, key=lambda r: r["run"])
