"""What is done: shard files first (the truth), then what the scheduler says. Never blocks."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import PypetError, StorageError
from .executors import make_executor
from .exploration import plural
from .formats.shard import CountsCache, ShardReader, partial_path, shard_name
from .taskstate import ShardFacts, TaskState, classify
from .workdir import Workdir


@dataclass
class TaskStatus:
    task: int
    first_run: int
    n_runs: int
    state: TaskState
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
        """No task may still be queued or running (nor is UNKNOWN: a job of it may be alive)."""
        return not any(t.state.may_run() for t in self.tasks)

    def incomplete_tasks(self) -> list[TaskStatus]:
        return [t for t in self.tasks if not t.complete]

    def counts_line(self) -> str:
        c = self.counts
        line = (f"ok {c['ok']}  failed {c['failed']}  to do in running tasks {c['running']}  "
                f"in pending tasks {c['pending']}  not submitted/lost {c['missing']}")
        if c.get("unmerged"):
            line += f"\n  {self.unmerged_note()}"
        return line

    def unmerged_note(self) -> str:
        """What the ok and failed runs in .partial shards are (the one explanation status, merge
        and merge --require-complete give)."""
        n = self.counts.get("unmerged", 0)
        return (f"{plural(n, 'finished run')} of these {'is' if n == 1 else 'are'} in unfinished shards (.partial): "
                "kept, and merged once their task completes (a stopped task completes on resubmit)")

    def table(self) -> str:
        """One line per task: its runs, state, ok and failed counts, shard or problem."""
        lines = [f"{'task':>6} {'runs':>15} {'state':<14} {'ok':>6} {'failed':>6}  shard / problem"]
        for t in self.tasks:
            span = f"{t.first_run}-{t.first_run + t.n_runs - 1}"
            lines.append(f"{t.task:>6} {span:>15} {t.state:<14} {t.ok:>6} {t.failed:>6}  {t.problem or t.shard or ''}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        c = self.counts
        state = "finished" if self.finished else "under way"
        return (f"<SweepStatus {self.workdir}: {self.n_runs} runs in {len(self.tasks)} tasks, {state}; "
                f"ok {c['ok']}, failed {c['failed']}, running {c['running']}, pending {c['pending']}, "
                f"missing {c['missing']}>")

    def __str__(self) -> str:
        return f"{self.workdir}: {self.n_runs} runs in {len(self.tasks)} tasks\n  {self.counts_line()}\n{self.table()}"


def read_counts(path: Path, live: bool = False) -> tuple[int, int]:
    """(ok, failed) runs in a shard; ``live`` opens without locking (the writer may hold it)."""
    with ShardReader(path, live=live) as reader:
        return reader.counts()


def sweep_status(wd: Workdir, patient: bool = False) -> SweepStatus:
    """Every task's state: what its shard says, weighed against the scheduler by classify().
    ``patient`` (a wait loop): the scheduler's answer may be up to a minute old while nothing
    changes; else at most a few seconds (see the slurm executor's back-off)."""
    manifest = wd.manifest()
    plan = manifest.plan
    note = None
    submitted = _submission_times(wd)
    sched: dict[int, TaskState]
    now: float | None = time.time()  # None: the scheduler did not answer, so nothing counts as lost
    try:
        executor = make_executor(manifest.executor["name"], **manifest.executor.get("options", {}))
        sched = executor.states(wd, patient)
    except (PypetError, OSError) as exc:  # a submitted task may still run: UNKNOWN, not NOT_SUBMITTED
        sched, note = dict.fromkeys(submitted, TaskState.UNKNOWN), f"scheduler state unavailable: {exc}"
        now = None
    tasks: list[TaskStatus] = []
    files = _shard_files(wd)
    cache = CountsCache(wd.shards)
    cleaned = wd.cleaned()
    removed = cleaned.tasks if cleaned is not None else {}
    for task in range(plan.n_tasks):
        runs = plan.task_runs(task)
        final = shard_name(task)  # names, not paths: this loop runs once per task
        name = final if final in files else final + ".partial" if final + ".partial" in files else None
        facts = None if name is None else _shard_facts(cache, name, files, name == final, len(runs),
                                                      submitted.get(task, 0.0))
        if facts is not None and facts.final:
            name = final  # (its .partial may have been renamed since the listing)
        elif facts is None and str(task) in removed:  # removed by clean: its runs are in the merged file
            ok, failed = removed[str(task)]
            facts = ShardFacts(True, len(runs), ok, failed)
        age = None if now is None or task not in submitted else now - submitted[task]
        state, problem = classify(facts, sched.get(task), age)
        tasks.append(TaskStatus(task, runs.start, len(runs), state, facts.ok if facts else 0,
                                facts.failed if facts else 0, name, problem))
    cache.save(keep=set(files))
    counts = {"ok": sum(t.ok for t in tasks), "failed": sum(t.failed for t in tasks)}
    counts["running"] = sum(t.n_runs - t.ok - t.failed for t in tasks if t.state is TaskState.RUNNING)
    counts["pending"] = sum(t.n_runs - t.ok - t.failed for t in tasks if t.state is TaskState.PENDING)
    counts["missing"] = plan.n_runs - sum(counts.values())
    # of the ok and failed runs, those in .partial shards: safe (never run again), but merged only
    # once their task completes and its shard takes its final name (a final shard is complete)
    counts["unmerged"] = sum(t.ok + t.failed for t in tasks if t.shard is not None and t.shard.endswith(".partial"))
    return SweepStatus(str(wd.path), plan.n_runs, tasks, note, counts)


def _shard_facts(cache: CountsCache, name: str, files: dict[str, os.stat_result], final: bool, n_runs: int,
                 submitted: float) -> ShardFacts:
    """What the shard file ``name`` says; ``submitted``: when the task was last submitted."""
    stat = files[name]
    try:
        ok, failed = cache.counts(name, stat, live=not final)  # a .partial may have its writer still on it
    except StorageError as exc:
        done = cache.path.parent / name.removesuffix(".partial")
        if not final and done.exists():  # its task ended since the listing
            files[done.name] = done.stat()
            return _shard_facts(cache, done.name, files, True, n_runs, submitted)
        return ShardFacts(final, n_runs, damage=str(exc))
    return ShardFacts(final, n_runs, ok, failed, retry_after=submitted > stat.st_mtime)


def _shard_files(wd: Workdir) -> dict[str, os.stat_result]:
    """name -> stat of every shard file (final and .partial), in one pass over the directory."""
    out: dict[str, os.stat_result] = {}
    try:
        entries = list(os.scandir(wd.shards))
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.name.startswith("task_") and entry.name.endswith((".h5", ".h5.partial")):
            try:
                out[entry.name] = entry.stat()
            except FileNotFoundError:  # renamed (.partial -> final) since the listing
                continue
    return out


def _submission_times(wd: Workdir) -> dict[int, float]:
    """task -> when its latest submission was recorded in jobs.jsonl."""
    out: dict[int, float] = {}
    for job in wd.jobs():
        for task in job.tasks:
            out[task] = job.time
    return out


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
