"""The Environment: cut a sweep into tasks, hand them to an executor, wait, merge."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

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
from .runstore import RunStatus
from .status import SweepStatus, failed_runs, sweep_status
from .storage import HDF5StorageService, StorageService, load_trajectory
from .taskstate import TaskState
from .workdir import (
    Simulation,
    Workdir,
    bind_job,
    check_no_live_objects,
    check_signature,
    load_reference,
)
from .worker import RETURN_RESULT

log = logging.getLogger(__name__)
# fn(traj, results, *args, **kwargs) -> new points (parameter -> values) or None
Postprocessing = Callable[..., Mapping[str, Sequence[Any]] | None]


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
                st = sweep_status(self.workdir, patient=True)
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
        self._postprocessing: tuple[Postprocessing, tuple[Any, ...], dict[str, Any]] | None = None

    def add_postprocessing(self, fn: Postprocessing, *args: Any, **kwargs: Any) -> None:
        """Call ``fn(traj, results, *args, **kwargs)`` after each wave of ``run``/``run_exploration``
        (pypet's ``add_postprocessing``). ``results`` is every finished run's ``(run_idx, value)``
        so far; ``fn`` may return new points (a dict of parameter -> list of values, zipped as in
        ``traj.expand``) or call ``traj.expand`` itself: those points then run as the next wave in
        the same workdir and are merged, until ``fn`` returns nothing new. It runs in this process."""
        if not callable(fn):
            raise ArgumentTypeError(f"add_postprocessing(fn) needs a function, not {type(fn).__name__}")
        try:
            inspect.signature(fn).bind(object(), [], *args, **kwargs)
        except TypeError:
            raise ArgumentTypeError(f"add_postprocessing: {getattr(fn, '__qualname__', fn)!s} must take the "
                                    f"trajectory, the results and the {len(args) + len(kwargs)} arguments given "
                                    f"(signature: {inspect.signature(fn)})") from None
        except ValueError:
            pass
        self._postprocessing = (fn, args, kwargs)

    def run(self, simulate: Simulation, *args: Any, **kwargs: Any) -> list[tuple[int, Any]]:
        """Run ``simulate(traj, *args, **kwargs)`` at every explored point (once when nothing is
        explored), with post-processing waves if added, and store the results; returns pypet's
        ``[(run_idx, value), ...]`` of what each finished run returned (failed runs are left out)."""
        return self._run_waves(simulate, args, kwargs, None, None)

    def run_exploration(self, simulate: Simulation, *args: Any, space: Mapping[str, Sequence[Any]] | None = None,
                        combined: Sequence[Sequence[str]] | None = None, **kwargs: Any) -> Trajectory:
        """Run ``simulate(traj, *args, **kwargs)`` at every point of ``space`` (a cartesian product;
        by keyword) and store the results; returns the trajectory (``run`` returns the values)."""
        self._run_waves(simulate, args, kwargs, space, combined)
        return self.trajectory

    def _run_waves(self, simulate: Simulation, args: tuple[Any, ...], kwargs: dict[str, Any],
                   space: Mapping[str, Sequence[Any]] | None, combined: Sequence[Sequence[str]] | None,
                   ) -> list[tuple[int, Any]]:
        """Submit, wait, merge; then, while post-processing adds points, the same for each new wave."""
        try:
            handle = self.submit(simulate, *args, space=space, combined=combined, **kwargs)
            results, failed = self._waves(handle, simulate, args, kwargs)
        finally:  # an inline sweep stopped by its failure rule leaves no temporary workdir either
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
        if failed and self.fail_on_error:
            groups = group_failures(failed)
            raise RunsFailed(f"{len(failed)} of {len(self.trajectory)} runs failed with "
                             f"{plural(len(groups), 'distinct error')}, the most frequent: {groups[0].summary()}",
                             failed)
        return results

    def _waves(self, handle: SweepHandle, simulate: Simulation, args: tuple[Any, ...], kwargs: dict[str, Any],
               ) -> tuple[list[tuple[int, Any]], list[dict[str, Any]]]:
        """Finish the submitted wave; while post-processing asks for new points, run them as the
        next wave. Returns the results and the failed runs."""
        wave, grew = 1, True
        while True:
            failed = self._finish_wave(handle)
            results = job_returns(self.trajectory)
            points = self._postprocess(results) if grew else None
            if points is None:
                return results, failed
            n_before = len(self.trajectory)
            handle, added = self._grow(handle.workdir, simulate, args, kwargs, points)
            wave, grew = wave + 1, added > 0
            if grew:
                log.info("post-processing wave %d: %s after %d", wave, plural(added, "new run"), n_before)
            else:
                log.warning("post-processing asked only for points the sweep already has; stopping")

    def _finish_wave(self, handle: SweepHandle) -> list[dict[str, Any]]:
        """Wait for the submitted tasks, merge them into the output and give the trajectory their
        run data; returns the failed runs (all of them, when ``fail_on_error`` wants them)."""
        in_process = self.executor.in_process  # then the runs are done and in self.trajectory
        if not in_process:
            st = handle.wait(progress=sys.stderr.isatty())
            log.info("sweep finished: %s", st.counts)
            failed = failed_runs(handle.workdir) if st.counts["failed"] and self.fail_on_error else []
        else:
            failed = warn_failures(handle.workdir) if handle.status().counts["failed"] else []
        output = self.storage.file_path if self.storage is not None else None
        if output is not None or not in_process:
            report = handle.merge(output)
            log.info("%s", report.summary())
            self.trajectory.file_path = str(report.target)
            if not in_process:
                loaded = load_trajectory(report.target)
                self.trajectory.state.run_store = loaded.state.run_store
        return failed

    def _postprocess(self, results: list[tuple[int, Any]]) -> dict[str, list[Any]] | None:
        """The points the post-processing function asks for next, or None when it asks for none."""
        if self._postprocessing is None:
            return None
        fn, args, kwargs = self._postprocessing
        traj = self.trajectory
        n_before = len(traj)
        points = fn(traj, results, *args, **kwargs)
        if points is None or (isinstance(points, Mapping) and not points):
            if len(traj) > n_before:  # it called traj.expand itself
                return {name: list(values) for name, values in traj.explored.items()}
            return None
        if not isinstance(points, Mapping):
            raise ArgumentTypeError(f"post-processing {getattr(fn, '__qualname__', fn)!s} returned a "
                                    f"value of type {type(points).__name__}; return a dict of parameter -> list of new "
                                    "values, or None to stop")
        return {name: list(values) for name, values in points.items()}

    def expand(self, simulate: Simulation, *args: Any, space: Mapping[str, Sequence[Any]] | None = None,
               combined: Sequence[Sequence[str]] | None = None, **kwargs: Any) -> SweepHandle:
        """Grow the finished (or running) sweep in ``workdir`` by the points of ``space`` (or of the
        trajectory's exploration) and run only the new ones (pypet's ``f_expand``), as
        ``simulate(traj, *args, **kwargs)``."""
        if self.workdir is None or not Workdir(self.workdir).exists():
            raise WorkdirError("expand needs the workdir= of an existing sweep")
        points = cartesian_product(space, combined) if space is not None else self.trajectory.explored
        return self._grow(Workdir(self.workdir), simulate, args, kwargs, points)[0]

    def _grow(self, wd: Workdir, simulate: Simulation, args: tuple[Any, ...], kwargs: dict[str, Any],
              points: Mapping[str, Sequence[Any]]) -> tuple[SweepHandle, int]:
        """The one way a sweep grows (``expand`` and post-processing waves); returns its handle and
        how many runs were added."""
        _check_job(simulate, args, kwargs, self.trajectory, self.executor)
        self.executor.bind(self.trajectory, bind_job(simulate, args, kwargs))
        manifest = wd.manifest()
        if not self.executor.in_process and "pickle" in manifest.function:
            # the runs that go now use the function and arguments given here
            wd.write_manifest(replace(manifest, function=wd.save_function(simulate, args, kwargs)))
        elif (args or kwargs) and "ref" in manifest.function:
            raise WorkdirError(f"{wd.path} runs the function of a sweep file ({manifest.function['ref']}), "
                               "which takes no job arguments")
        added, _ = expand_workdir(wd, self.trajectory, points, self.executor)
        output = self.storage.file_path if isinstance(self.storage, HDF5StorageService) else None
        return SweepHandle(wd, output), added

    def submit(self, simulate: Simulation, *args: Any, space: Mapping[str, Sequence[Any]] | None = None,
               combined: Sequence[Sequence[str]] | None = None, **kwargs: Any) -> SweepHandle:
        """Write the sweep's workdir and submit its tasks, which call ``simulate(traj, *args,
        **kwargs)``; returns at once (inline: when done). Arguments are pickled with the sweep."""
        traj = self.trajectory
        _check_job(simulate, args, kwargs, traj, self.executor)
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
                  max_failures=str(self.max_failures), job_args=args, job_kwargs=kwargs)
        self.executor.bind(traj, bind_job(simulate, args, kwargs))
        self.executor.submit(wd, range(plan.n_tasks))
        output = self.storage.file_path if isinstance(self.storage, HDF5StorageService) else None
        return SweepHandle(wd, output)


def follow(workdir: str | Path, output: str | Path | None = None) -> list[tuple[int, Any]]:
    """Wait for the sweep in ``workdir`` and merge it; when its sweep file defines
    ``postprocess(traj, results)``, run the waves it asks for, as ``Environment.run`` does (what
    ``pypet-hpc submit --follow`` runs detached and ``pypet-hpc follow`` in the foreground)."""
    wd = Workdir(workdir)
    manifest = wd.manifest()
    ref = manifest.function.get("ref")
    if ref is None or manifest.executor.get("name") == "inline":
        raise WorkdirError(f"{wd.path}: follow takes a sweep submitted from a sweep file to the local or slurm "
                           "executor; from Python, Environment.run runs the waves itself")
    simulate = load_reference(ref)
    postprocess = getattr(inspect.getmodule(simulate), "postprocess", None)
    out = Path(output) if output is not None else wd.default_output
    env = Environment(wd.load_skeleton(manifest), storage=HDF5StorageService(out), executor=executor_of(wd),
                      workdir=wd.path)
    if postprocess is not None:
        env.add_postprocessing(postprocess)
    results, _ = env._waves(SweepHandle(wd, out), simulate, (), {})
    log.info("followed %s to the end: %s in %s", wd.path, plural(len(results), "finished run"), out)
    return results


def _check_job(simulate: Simulation, args: tuple[Any, ...], kwargs: Mapping[str, Any], traj: Trajectory,
               executor: Executor) -> None:
    """Before anything is written or submitted: the job takes the trajectory and its arguments, and
    (off this process) they can be pickled and carry no multiprocessing object."""
    check_signature(simulate, getattr(simulate, "__qualname__", "the simulation"), args, kwargs)
    _check_job_args(args, kwargs, executor)
    if not executor.in_process:
        check_no_live_objects(functools.partial(simulate, *args, **kwargs) if args or kwargs else simulate,
                              traj, executor.name)


def _check_job_args(args: Sequence[Any], kwargs: Mapping[str, Any], executor: Executor) -> None:
    """Job arguments travel pickled to worker processes and cluster nodes: refuse, before
    anything is written or submitted, one that cannot (naming it). Inline runs take anything."""
    if executor.in_process or not (args or kwargs):
        return
    import cloudpickle

    named = [*((f"job argument {i + 1}", a) for i, a in enumerate(args)),
             *((f"job keyword argument {k!r}", v) for k, v in kwargs.items())]
    for what, value in named:
        try:
            cloudpickle.dumps(value)
        except Exception as exc:  # noqa: BLE001 - pickle raises anything (TypeError, PicklingError, ...)
            raise ArgumentTypeError(f"{what} (a {type(value).__name__}) cannot be pickled for the "
                                    f"{executor.name} executor ({type(exc).__name__}: {exc}); pass something "
                                    "picklable, or run inline") from None


def job_returns(traj: Trajectory) -> list[tuple[int, Any]]:
    """pypet's ``[(run_idx, value), ...]``: what each finished (ok) run returned, in run order, from
    its result ``job_return`` (None where it returned None). Works on a loaded trajectory too."""
    store = traj.state.run_store
    if store is None:
        return []
    ok = np.flatnonzero(traj.run_info()["status"] == RunStatus.OK)
    if RETURN_RESULT not in store.names("results"):
        return [(int(i), None) for i in ok]
    column = store.column("results", RETURN_RESULT, len(traj))
    mask = np.ma.getmaskarray(column)
    has = np.asarray(~mask.reshape(len(mask), -1).all(axis=1))
    data = column.data
    values = data.tolist() if data.ndim == 1 and data.dtype != object else list(data)
    return [(int(i), values[i] if has[i] else None) for i in ok]


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
