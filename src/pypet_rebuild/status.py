"""What is done: shard files first (the truth), then what the scheduler says. Never blocks."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .errors import PypetError, StorageError
from .executors import COMPLETED, PENDING, RUNNING, TERMINAL, UNKNOWN, make_executor
from .shards import SHARD_KIND, partial_path
from .storage import FAILED, OK, get_attr
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


def read_counts(path: Any, live: bool = False) -> tuple[int, int]:
    """(ok, failed) runs in a shard; ``live`` opens without locking (the writer may hold it)."""
    try:
        with h5py.File(path, "r", locking=False if live else "best-effort") as f:
            if get_attr(f, "kind") != SHARD_KIND:
                raise StorageError(f"{path.name}: not a pypet-hpc shard")
            idx = f["run_info/idx"][()]
            status = f["run_info/status"][()]
    except StorageError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise StorageError(f"{path.name}: unreadable shard ({type(exc).__name__}: {exc})") from None
    m = min(len(idx), len(status))  # a live shard may be caught between two appends
    last = dict(zip(idx[:m].tolist(), status[:m].tolist(), strict=True))
    values = np.fromiter(last.values(), dtype=np.int8, count=len(last))
    return int(np.count_nonzero(values == OK)), int(np.count_nonzero(values == FAILED))


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
                with h5py.File(path, "r", locking=False) as f:
                    idx = f["run_info/idx"][()]
                    status = f["run_info/status"][()]
                    last = dict(zip(idx.tolist(), status.tolist(), strict=True))
                    err = f["errors"]
                    rows = zip(err["idx"][()].tolist(), err["type"].asstr()[()], err["message"].asstr()[()],
                               err["traceback"].asstr()[()], strict=True)
                    seen: dict[int, dict[str, Any]] = {}
                    for run, typ, msg, tb in rows:
                        if last.get(run) == FAILED:
                            seen[run] = {"run": run, "task": task, "type": typ, "message": msg, "traceback": tb}
                    out.extend(seen.values())
            except (OSError, KeyError):
                continue
            break
    return sorted(out, key=lambda r: r["run"])
