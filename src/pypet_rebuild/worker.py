"""The worker: runs one task's runs and writes its shard. Every executor ends up here.

A worker receives only the workdir and a task number. SIGTERM and SIGUSR2 (SLURM's time-limit
warning, a requeue or preemption) make it finish the current run, flush its shard and exit, so a
resubmitted or requeued task resumes where it stopped. Its log holds one line per error; the
traceback only at DEBUG (``PYPET_HPC_DEBUG=1`` in the environment of the submitting shell).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn

from .errors import (
    InvalidNameError,
    PypetError,
    StorageError,
    SweepStopped,
    UnsupportedValueError,
)
from .failures import FailureRule, FailureWatch
from .formats.schema import RunStatus
from .formats.shard import ShardWriter
from .model import Parameter, Result, Trajectory
from .runstore import MemoryRunStore
from .workdir import Simulation, Workdir

log = logging.getLogger(__name__)
INTERRUPTED_EXIT = 143
STOPPED_EXIT = 3  # the sweep's failure rule stopped the task: the controller cancels the rest
RETURN_RESULT = "job_return"  # the per-run result holding what the job returned (when not None)
STOP_SIGNALS: list[int] = []  # signals that stopped a task in this process (the SLURM entry reads it)
DEBUG_ENV = "PYPET_HPC_DEBUG"  # set (to anything but 0): worker logs at DEBUG, tracebacks included


class Interrupted(Exception):
    """The task was asked to stop (SIGTERM/SIGUSR2); its shard was flushed."""


def execute(traj: Trajectory, fn: Simulation, runs: Iterable[int], sink: ShardWriter | None,
            keep: bool, stop_on_error: bool = False, should_stop: list[bool] | None = None,
            watch: FailureWatch | None = None) -> None:
    """Run ``fn`` once per run index, recording status, timings and results (the hot loop).

    ``watch`` applies the sweep's failure rule: when it trips, :class:`SweepStopped` is raised
    after the run is recorded. A name that can never be stored (:class:`InvalidNameError`) is a bug
    of the sweep, not of the point: the first one stops the sweep the same way."""
    store = traj.state.run_store
    if not isinstance(store, MemoryRunStore):
        store = traj.state.run_store = MemoryRunStore()
    data, info = store.data, store.info
    clock = time.time
    empty: dict[Any, Any] = {}
    with traj.running() as begin:
        for i in runs:
            if should_stop and should_stop[0]:
                raise Interrupted()
            begin(i)
            error = bad_name = None
            t0 = clock()
            try:
                returned = fn(traj)
                if returned is not None and not isinstance(returned, Parameter | Result):
                    _store_return(traj, returned)
            except Exception as exc:  # noqa: BLE001 - a failing run is recorded, the sweep goes on
                error = (type(exc).__name__, str(exc), traceback.format_exc())
                if isinstance(exc, InvalidNameError):
                    bad_name = exc
            t1 = clock()
            if error is None:
                leaves = data.get(i, empty) if keep else data.pop(i, empty)
                info[i] = (RunStatus.OK, t0, t1, "")
            else:
                data.pop(i, None)
                leaves = empty
                info[i] = (RunStatus.FAILED, t0, t1, f"{error[0]}: {error[1]}")
            if sink is not None:
                sink.add(i, error is None, t0, t1, leaves, error)
            if bad_name is not None:
                raise SweepStopped(f"stopped at the first name that can never be stored (run {i}): {bad_name}; "
                                   "fix it and resubmit") from bad_name
            if error is not None and stop_on_error:
                log.error("run %d failed, stopping (stop_on_error):\n%s", i, error[2])
                raise SweepStopped(f"run {i} failed: {error[0]}: {error[1]} (stop_on_error stops at the first "
                                   "failed run)")
            if watch is not None:
                reason = watch.record(error is None, *(error[:2] if error else ("", "")))
                if reason is not None:
                    raise SweepStopped(reason)


def _store_return(traj: Trajectory, value: Any) -> None:
    """A run's return value becomes its result ``job_return`` (pypet's ``[(run_idx, value), ...]``
    comes from that column); a value no result may hold fails the run, saying so."""
    try:
        traj.add_result(RETURN_RESULT, value)
    except UnsupportedValueError as exc:
        raise UnsupportedValueError(f"the job's return value cannot be stored: {exc}") from None


def run_task(workdir: str | Path, task: int, retry_failed: bool = False,
             traj: Trajectory | None = None, fn: Simulation | None = None,
             stop_on_error: bool = False, watch: FailureWatch | None = None) -> Path:
    """Run task ``task`` of the sweep in ``workdir``; returns the final shard path.

    In-process callers pass their live trajectory and function (results then stay in memory)
    and may share one ``watch`` across tasks; worker processes load both from the workdir and
    watch their own runs. When the failure rule trips, the shard stays ``.partial`` (its runs are
    kept), the reason goes to ``stopped.json`` and :class:`SweepStopped` is raised.
    """
    wd = Workdir(workdir)
    manifest = wd.manifest()
    final = wd.shard(task)
    runs = manifest.plan.task_runs(task)
    if final.exists() and not retry_failed:
        log.info("task %d: %s already complete", task, final.name)
        return final
    sink = ShardWriter(final, manifest.plan_hash, task, retry_failed=retry_failed,
                       earlier_hashes=frozenset(manifest.earlier_hashes), n_runs=len(runs))
    keep = traj is not None
    if traj is None:
        traj = wd.load_skeleton(manifest)
        traj.state.run_store = MemoryRunStore()
    if fn is None:
        fn = wd.load_function(manifest)
    todo = [i for i in runs if i not in sink.done]
    log.info("task %d: %d runs to do of %d (runs %d-%d)", task, len(todo), len(runs), runs.start, runs.stop - 1)
    if watch is None:
        watch = FailureWatch(FailureRule.parse(manifest.max_failures), manifest.plan.n_runs)
    stop = [False]
    previous = _install_stop_handlers(stop)
    try:
        execute(traj, fn, todo, sink, keep, stop_on_error, stop, watch)
    except BaseException as exc:
        sink.close()
        # a stop by the failure rule is said once, by whoever reports it (the caller, or the task log)
        level = logging.INFO if isinstance(exc, SweepStopped) else logging.WARNING
        if isinstance(exc, SweepStopped):
            wd.record_stop(str(exc), task)
            log.info("task %d: %s", task, exc)
        if isinstance(exc, StorageError):
            log.error("task %d: %s", task, exc)
        log.log(level, "task %d: stopped; %d runs are safe in %s", task, len(sink.done), sink.partial.name)
        raise
    finally:
        _restore_handlers(previous)
    path = sink.finish()
    log.info("task %d: done, %s", task, path.name)
    return path


def _install_stop_handlers(stop: list[bool]) -> dict[int, Any]:
    def handler(signum: int, frame: Any) -> None:
        log.warning("task got signal %d: finishing the current run, then flushing", signum)
        STOP_SIGNALS.append(signum)
        stop[0] = True

    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        with contextlib.suppress(ValueError):  # not the main thread: no handlers there
            previous[sig] = signal.signal(sig, handler)
    return previous


def _restore_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)


def configure_logging(stream: Any = None) -> None:
    """A worker process's log: INFO (DEBUG with ``PYPET_HPC_DEBUG``), one line per error.

    h5py objects freed after a failed write raise in their ``__dealloc__``; Cython prints those
    through ``sys.excepthook`` and Python's unraisable hook, as tracebacks, before the failure
    itself is caught. Both hooks send them to DEBUG (the failure gets its one line from whoever
    catches it); any other exception reaching the top is one ERROR line, its traceback at DEBUG."""
    debug = os.environ.get(DEBUG_ENV, "0") not in ("", "0")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, stream=stream or sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.unraisablehook = _log_unraisable
    sys.excepthook = _log_uncaught


def _log_unraisable(unraisable: Any) -> None:
    exc = unraisable.exc_value
    log.debug("ignored while freeing %r: %s", unraisable.object, exc,
              exc_info=(unraisable.exc_type, exc, unraisable.exc_traceback) if exc is not None else None)


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
    frames = traceback.extract_tb(tb)
    freeing = bool(frames) and all(frame.filename.endswith(".pyx") for frame in frames)
    if not freeing:
        log.error("%s: %s", kind.__name__, " ".join(str(exc).split()))
    log.debug("%s", "freeing an HDF5 object" if freeing else "the traceback", exc_info=(kind, exc, tb))


def run_logged(workdir: str | Path, task: int, retry_failed: bool = False) -> int:
    """Run a task in a worker process; its outcome as an exit code (0, 1, :data:`STOPPED_EXIT`,
    :data:`INTERRUPTED_EXIT`). Each error is one line in the log, its traceback at DEBUG."""
    try:
        run_task(workdir, task, retry_failed)
    except Interrupted:
        return INTERRUPTED_EXIT
    except SweepStopped:  # logged, and recorded for whoever waits: they cancel the other tasks
        return STOPPED_EXIT
    except Exception as exc:  # noqa: BLE001 - a worker's failure is its log line and exit code
        if not isinstance(exc, StorageError):  # run_task has said that one
            text = str(exc) if isinstance(exc, PypetError) else f"{type(exc).__name__}: {exc}"
            log.error("task %d failed: %s", task, " ".join(text.split()))
        log.debug("task %d: the traceback", task, exc_info=True)
        return 1
    return 0


def leave(code: int) -> NoReturn:
    """End a worker process now. After a failed write HDF5 cannot close that file, and its
    clean-up at exit could crash: so no interpreter clean-up, only the log and stdio flushed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def wait_for_slurm_end() -> NoReturn:
    """After SLURM's time-limit warning, when the job is not requeued: the shard is flushed; wait
    for SLURM to end the job, so that sacct says TIMEOUT (not FAILED) and the user raises --time."""
    log.warning("time-limit warning: shard flushed; waiting for SLURM to end the job")
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: leave(INTERRUPTED_EXIT))
    while True:
        time.sleep(60)


def main(argv: list[str] | None = None) -> int:
    """``python -m pypet_rebuild.worker WORKDIR TASK [--retry-failed]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    retry = "--retry-failed" in args
    args = [a for a in args if a != "--retry-failed"]
    if len(args) != 2:
        print("usage: python -m pypet_rebuild.worker WORKDIR TASK [--retry-failed]", file=sys.stderr)
        return 2
    configure_logging()
    code = run_logged(args[0], int(args[1]), retry)
    if code == 1:
        leave(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
