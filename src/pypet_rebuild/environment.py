"""The Environment: cut a sweep into tasks, hand them to an executor, wait, merge."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import (
    ArgumentTypeError,
    PypetError,
    RunsFailed,
    StorageError,
    SweepStopped,
    WorkdirError,
    check_type,
)
from .executors import Executor, make_executor
from .exploration import Plan, cartesian_product, plural
from .failures import WINDOW, FailureRule, group_failures, signature
from .formats.files import verify_h5
from .formats.records import Manifest
from .merge import LOCK_TIMEOUT, MergeReport, merge
from .model import Trajectory
from .progress import Progress
from .status import SweepStatus, failed_runs, sweep_status
from .storage import HDF5StorageService, StorageService, load_trajectory
from .taskstate import TaskState
from .workdir import Simulation, Workdir, check_no_live_objects, check_signature

log = logging.getLogger(__name__)


class SweepHandle:
    """A submitted sweep: ``status()`` never blocks, ``wait()`` until done, ``merge()`` the shards."""

    def __init__(self, workdir: Workdir, output: Path | None = None) -> None:
        self.workdir = workdir
        self.output = output or workdir.default_output

    @property
    def manifest(self) -> Manifest:
        return self.workdir.manifest()

    def status(self) -> SweepStatus:
        return sweep_status(self.workdir)

    def wait(self, progress: bool = False, poll: float = 0.2, timeout: float | None = None,
             unknown_grace: float = 120.0) -> SweepStatus:
        """Poll the shards and the scheduler until no task is pending or running.

        When the sweep's failure rule trips (in a task, or over the sweep), the other tasks are
        cancelled and, once they have ended, :class:`SweepStopped` says why.

        A task the scheduler has lost track of (UNKNOWN: in neither sacct nor squeue) for
        ``unknown_grace`` seconds counts as finished, so a vanished job never hangs the caller.
        """
        start = time.monotonic()
        manifest = self.manifest
        bar = Progress(manifest.plan.n_runs, "runs", enabled=progress)
        unknown_since: dict[int, float] = {}
        rule = FailureRule.parse(manifest.max_failures)
        alike = rule.same_error  # still worth reading the failures' signatures
        stopping: str | None = None
        try:
            while True:
                st = self.status()
                if stopping is None:
                    stopping, alike = self._stop_reason(st, rule, alike)
                    if stopping is not None:  # cancel the rest, then wait until they have ended
                        n = self.cancel()
                        log.info("%s; cancelled %s", stopping, plural(n, "queued or running task"))
                c = st.counts
                bar.update_to(c["ok"] + c["failed"], f"{c['ok']} ok, {c['failed']} failed, "
                              f"{c['running']} to do in running tasks, {c['pending']} pending")
                now = time.monotonic()
                unknown_since = {t.task: unknown_since.get(t.task, now) for t in st.tasks
                                 if t.state is TaskState.UNKNOWN}
                lost = {k for k, since in unknown_since.items() if now - since > unknown_grace}
                # st.finished, but a task UNKNOWN for longer than the grace counts as gone
                if not any(t.state.may_run(force=t.task in lost) for t in st.tasks):
                    if lost:
                        log.warning("tasks %s: the scheduler lost track of them; if they are gone, "
                                    "resubmit(force=True) (pypet-hpc resubmit --force) runs what they left",
                                    sorted(lost))
                    if st.counts["failed"]:
                        warn_failures(self.workdir)
                    if stopping is not None:
                        raise SweepStopped(stopping)
                    return st
                if timeout is not None and time.monotonic() - start > timeout:
                    raise TimeoutError(f"sweep in {self.workdir.path} not finished after {timeout:.0f} s")
                time.sleep(poll)
        finally:
            bar.close()

    def _stop_reason(self, st: SweepStatus, rule: FailureRule, alike: bool) -> tuple[str | None, bool]:
        """Why the sweep must stop (a task's rule tripped, or the rule over the whole sweep),
        and whether the first failures' signatures are still worth reading (read once only)."""
        record = self.workdir.stopped()
        if record is not None:
            return record.reason, alike
        ok, failed = st.counts["ok"], st.counts["failed"]
        signatures: list[str] = []
        if alike and (ok or failed >= WINDOW):
            if not ok:
                signatures = [signature(r["type"], r["message"]) for r in failed_runs(self.workdir)]
            alike = False
        return rule.check(st.n_runs, ok, failed, signatures), alike

    def merge(self, output: str | Path | None = None, require_complete: bool = False,
              progress: bool = False, rebuild: bool = False, lock_timeout: float = LOCK_TIMEOUT) -> MergeReport:
        return merge_workdir(self.workdir, Path(output) if output else self.output, require_complete, progress,
                             rebuild, lock_timeout)

    def cancel(self) -> int:
        return executor_of(self.workdir).cancel(self.workdir)

    def resubmit(self, force: bool = False, **overrides: Any) -> Resubmitted:
        return resubmit(self.workdir, force, **overrides)


def warn_failures(wd: Workdir) -> list[dict[str, Any]]:
    """Log one WARNING line per distinct error among the failed runs; returns the failed runs."""
    runs = failed_runs(wd)
    for group in group_failures(runs):
        log.warning("%s; see: pypet-hpc status %s --failed", group.summary(), wd.path)
    return runs


def executor_of(wd: Workdir, **overrides: Any) -> Executor:
    spec = wd.manifest().executor
    return make_executor(spec["name"], **{**spec.get("options", {}), **overrides})


def merge_workdir(wd: Workdir, output: Path, require_complete: bool = False,
                  progress: bool = False, rebuild: bool = False, lock_timeout: float = LOCK_TIMEOUT) -> MergeReport:
    manifest = wd.manifest()
    if require_complete:
        st = sweep_status(wd)
        todo = [t for t in st.tasks if not t.complete]
        if todo:
            final = [t for t in st.tasks if t.shard is not None and not t.shard.endswith(".partial")]
            ok, failed, unmerged = sum(t.ok for t in final), sum(t.failed for t in final), st.counts["unmerged"]
            kept = f", {unmerged} finished in unfinished shards" if unmerged else ""
            raise PypetError(f"{st.n_runs - ok} of {st.n_runs} runs are not complete ({failed} failed"
                             f"{kept}, {st.n_runs - ok - failed - unmerged} not run; tasks "
                             f"{', '.join(str(t.task) for t in todo[:10])}{' ...' if len(todo) > 10 else ''}); "
                             "resubmit them or merge without --require-complete")
    shards = wd.shard_files()
    bar = Progress(len(shards), "shards", enabled=progress)
    try:
        prov = wd.path / "provenance.json"
        return merge(wd.skeleton, shards, output, manifest.plan_hash, progress=bar.advance,
                     provenance=prov.read_text() if prov.exists() else None,
                     earlier_hashes=manifest.earlier_hashes, rebuild=rebuild, lock_timeout=lock_timeout)
    finally:
        bar.close()


def verify_path(path: Path) -> tuple[int, list[tuple[str, str]]]:
    """Check every checksum of a trajectory file, or of a sweep directory's skeleton, final shards
    and merged files; returns how many files were checked and (file, what is damaged) pairs."""
    if path.is_dir():
        wd = Workdir(path)
        wd.manifest()  # a folder that is not a workdir: one clear line
        files = [wd.skeleton, *wd.shard_files(), *sorted(p for p in wd.path.glob("*.h5") if p != wd.skeleton)]
    elif path.exists():
        files = [path]
    else:
        raise StorageError(f"{path}: no such file or sweep directory")
    damaged = [(str(f), problem) for f in files if (problem := verify_h5(f)) is not None]
    return len(files), damaged


class Resubmitted(list[int]):
    """The tasks a resubmit submitted; ``alive`` and ``unknown`` are the incomplete tasks it left
    alone because they may still run: queued or running, or unknown to the scheduler."""

    def __init__(self, tasks: Sequence[int] = (), alive: Sequence[int] = (), unknown: Sequence[int] = ()) -> None:
        super().__init__(tasks)
        self.alive, self.unknown = list(alive), list(unknown)


def resubmit(wd: Workdir, force: bool = False, **overrides: Any) -> Resubmitted:
    """Submit the tasks that are not complete and may not still run; returns them.

    Queued and running tasks are never submitted again, nor (unless ``force``) tasks in an
    UNKNOWN state: the scheduler knows no job of theirs, but one may still be alive."""
    return _submit_incomplete(wd, executor_of(wd, **overrides), force)


class Environment:
    """Runs a simulation over a trajectory's explored points.

    ``executor`` is ``"inline"`` (this process, the default), ``"local"`` (worker processes) or
    ``"slurm"`` (job arrays), or an executor object. ``workdir`` is where the sweep's manifest,
    shards and logs go (a temporary directory for inline sweeps when not given).
    ``max_failures`` stops the sweep early (:class:`SweepStopped`): ``"auto"`` when the first 20
    finished runs all failed with one error, a count N or a fraction of the runs when more failed
    (and the "auto" rule too), ``"off"`` never. ``fail_on_error=True`` makes ``run_exploration``
    raise :class:`RunsFailed` (with the failed runs) when any run failed, after storing the rest.
    """

    def __init__(self, trajectory: Trajectory, storage: StorageService | None = None,
                 executor: str | Executor = "inline", workdir: str | Path | None = None,
                 runs_per_task: int | None = None, n_tasks: int | None = None,
                 max_array_size: int | None = None, stop_on_error: bool = False,
                 max_failures: str | int | float | None = "auto", fail_on_error: bool = False,
                 **executor_options: Any) -> None:
        check_type(trajectory, Trajectory, "Environment(trajectory=...)", "a Trajectory")
        if storage is not None and not isinstance(getattr(storage, "file_path", None), Path):
            raise ArgumentTypeError(f"Environment(storage=...) must be a storage service such as "
                                    f"HDF5StorageService(path), not {type(storage).__name__}")
        check_type(executor, (str, Executor), "Environment(executor=...)",
                   "an executor name ('inline', 'local', 'slurm') or an Executor")
        check_type(workdir, (str, os.PathLike, type(None)), "Environment(workdir=...)", "a path or None")
        for name, number in (("runs_per_task", runs_per_task), ("n_tasks", n_tasks),
                             ("max_array_size", max_array_size)):
            check_type(number, (int, type(None)), f"Environment({name}=...)", "an int or None")
        self.trajectory = trajectory
        self.fail_on_error = fail_on_error
        self.max_failures = FailureRule.parse(max_failures)
        self.storage = storage
        if isinstance(executor, str):
            if executor == "inline":
                executor_options.setdefault("stop_on_error", stop_on_error)
            executor = make_executor(executor, **executor_options)
        elif executor_options:
            raise PypetError(f"executor options {sorted(executor_options)} given with an executor object")
        self.executor = executor
        self.workdir = Path(workdir) if workdir is not None else None
        self.runs_per_task = runs_per_task
        self.n_tasks = n_tasks
        self.max_array_size = max_array_size
        self._temporary: Path | None = None

    def run(self, simulate: Simulation) -> Trajectory:
        """One run with the trajectory's current values."""
        return self.run_exploration(simulate)

    def run_exploration(self, simulate: Simulation, space: Mapping[str, Sequence[Any]] | None = None,
                        combined: Sequence[Sequence[str]] | None = None) -> Trajectory:
        """Run ``simulate`` at every point of ``space`` (a cartesian product) and store the results."""
        try:
            handle = self.submit(simulate, space, combined)
        except SweepStopped:  # an inline sweep stopped by its failure rule: no temporary workdir left
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
            raise
        in_process = self.executor.in_process  # then the runs are done and in self.trajectory
        if not in_process:
            st = handle.wait(progress=sys.stderr.isatty())
            log.info("sweep finished: %s", st.counts)
            failed = failed_runs(handle.workdir) if st.counts["failed"] and self.fail_on_error else []
        else:
            failed = warn_failures(handle.workdir) if handle.status().counts["failed"] else []
        output = self.storage.file_path if self.storage is not None else None
        try:
            if output is not None or not in_process:
                report = handle.merge(output)
                log.info("%s", report.summary())
                self.trajectory.file_path = str(report.target)
                if not in_process:
                    loaded = load_trajectory(report.target)
                    self.trajectory.state.run_store = loaded.state.run_store
        finally:
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
        if failed and self.fail_on_error:
            groups = group_failures(failed)
            raise RunsFailed(f"{len(failed)} of {len(self.trajectory)} runs failed with "
                             f"{plural(len(groups), 'distinct error')}, the most frequent: {groups[0].summary()}",
                             failed)
        return self.trajectory

    def expand(self, simulate: Simulation, space: Mapping[str, Sequence[Any]] | None = None,
               combined: Sequence[Sequence[str]] | None = None) -> SweepHandle:
        """Grow the finished (or running) sweep in ``workdir`` by the points of ``space`` (or of the
        trajectory's exploration) and run only the new ones (pypet's ``f_expand``)."""
        if self.workdir is None or not Workdir(self.workdir).exists():
            raise WorkdirError("expand needs the workdir= of an existing sweep")
        check_signature(simulate, getattr(simulate, "__qualname__", "the simulation"))
        if not self.executor.in_process:
            check_no_live_objects(simulate, self.trajectory, self.executor.name)
        wd = Workdir(self.workdir)
        points = cartesian_product(space, combined) if space is not None else self.trajectory.explored
        self.executor.bind(self.trajectory, simulate)
        if not self.executor.in_process and "pickle" in wd.manifest().function:
            wd.save_function(simulate)  # the runs that go now use the function given here
        expand_workdir(wd, self.trajectory, points, self.executor)
        output = self.storage.file_path if isinstance(self.storage, HDF5StorageService) else None
        return SweepHandle(wd, output)

    def submit(self, simulate: Simulation, space: Mapping[str, Sequence[Any]] | None = None,
               combined: Sequence[Sequence[str]] | None = None) -> SweepHandle:
        """Write the sweep's workdir and submit its tasks; returns at once (inline: when done)."""
        check_signature(simulate, getattr(simulate, "__qualname__", "the simulation"))
        traj = self.trajectory
        if not self.executor.in_process:
            check_no_live_objects(simulate, traj, self.executor.name)
        if space is not None:
            traj.explore(cartesian_product(space, combined))
        plan = self.executor.plan(len(traj), self.runs_per_task, self.n_tasks, self.max_array_size)
        self._temporary = None
        wd_path = self.workdir
        in_process = self.executor.in_process
        if wd_path is None:
            if not in_process:
                raise WorkdirError(f"the {self.executor.name} executor needs a workdir= for its shards and logs")
            base = self.storage.file_path.parent if self.storage is not None else None
            wd_path = self._temporary = Path(tempfile.mkdtemp(prefix=".pypet-sweep-", dir=base))
        wd = Workdir(wd_path)  # an empty directory is fine for a new sweep
        self.executor.preflight()  # e.g. an unknown SLURM partition: fail before the workdir is written
        wd.create(traj, plan, None if in_process else simulate,
                  {"name": self.executor.name, "options": self.executor.options()},
                  max_failures=str(self.max_failures))
        self.executor.bind(traj, simulate)
        self.executor.submit(wd, range(plan.n_tasks))
        output = self.storage.file_path if isinstance(self.storage, HDF5StorageService) else None
        return SweepHandle(wd, output)


def expand_workdir(wd: Workdir, traj: Trajectory, points: Mapping[str, Sequence[Any]],
                   executor: Executor | None = None) -> tuple[int, list[int]]:
    """Add ``points`` to the sweep in ``wd`` (those it has keep their run index) and submit the
    tasks that are now incomplete. ``traj`` is rebuilt on the workdir's points first, so the
    order in which the caller explored does not matter. Returns (runs added, tasks submitted)."""
    before = wd.load_skeleton()
    traj.explore(before.explored)
    added = traj.expand(points)
    manifest = wd.manifest()
    if added:
        plan = Plan.make(len(traj), manifest.plan.runs_per_task, None, manifest.plan.max_array_size)
        wd.expand(traj, plan)
    return added, resubmit(wd) if executor is None else _submit_incomplete(wd, executor)


def _submit_incomplete(wd: Workdir, executor: Executor, force: bool = False) -> Resubmitted:
    incomplete = sweep_status(wd).incomplete_tasks()
    skip = [t for t in incomplete if t.state.may_run(force)]
    alive = [t.task for t in skip if t.state.active]
    unknown = [t.task for t in skip if not t.state.active]
    todo = Resubmitted([t.task for t in incomplete if not t.state.may_run(force)], alive, unknown)
    if alive or unknown:
        log.info("not resubmitted: tasks %s queued or running, tasks %s in an unknown state", alive, unknown)
    if todo:
        wd.clear_stop()
        manifest = wd.manifest()
        if "inline" not in manifest.function:
            wd.load_function(manifest)  # it must still import: say so now, not in every task's log
        executor.submit(wd, todo, retry_failed=True)
    return todo
