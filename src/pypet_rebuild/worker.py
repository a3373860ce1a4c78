"""The worker: runs one task's runs and writes its shard. Every executor ends up here.

A worker receives only the workdir and a task number. SIGTERM and SIGUSR2 (SLURM's time-limit
warning, a requeue or preemption) make it flush its shard and exit, so a resubmitted or
requeued task resumes where it stopped.
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
from typing import Any

from .errors import InvalidNameError, StorageError, SweepStopped, TaskBusyError
from .failures import FailureRule, FailureWatch
from .formats.schema import RunStatus
from .formats.shard import ShardWriter
from .model import Trajectory
from .runstore import MemoryRunStore
from .workdir import Simulation, Workdir

log = logging.getLogger(__name__)
INTERRUPTED_EXIT = 143
STOPPED_EXIT = 3  # the sweep's failure rule stopped the task: the controller cancels the rest
STOP_SIGNALS: list[int] = []  # signals that stopped a task in this process (slurm_entry reads it)


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
                fn(traj)
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
                raise RuntimeError(f"run {i} failed: {error[0]}: {error[1]}")
            if watch is not None:
                reason = watch.record(error is None, *(error[:2] if error else ("", "")))
                if reason is not None:
                    raise SweepStopped(reason)


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
                       earlier_hashes=frozenset(manifest.earlier_hashes))
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
    logging.basicConfig(level=logging.INFO, stream=stream or sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def slurm_entry(workdir: str, task: int, retry_failed: bool = False) -> str:
    """What a SLURM array task runs (submitit pickles only this reference and its arguments).

    After SLURM's time-limit warning (SIGUSR2) the shard is flushed and the task waits for
    SLURM to end it, so that sacct says TIMEOUT (not FAILED) and the user knows to raise --time.
    """
    logging.getLogger("submitit").propagate = False  # it has its own handler: no doubled lines
    configure_logging()
    try:
        return str(run_task(workdir, task, retry_failed))
    except SweepStopped:  # logged, and recorded for whoever waits: they cancel the other tasks
        sys.exit(STOPPED_EXIT)
    except Interrupted:
        if STOP_SIGNALS[-1:] == [signal.SIGUSR2] and os.environ.get("SLURM_JOB_ID"):
            log.warning("time-limit warning: shard flushed; waiting for SLURM to end the job")
            signal.signal(signal.SIGUSR2, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(INTERRUPTED_EXIT))
            while True:
                time.sleep(60)
        sys.exit(INTERRUPTED_EXIT)


def main(argv: list[str] | None = None) -> int:
    """``python -m pypet_rebuild.worker WORKDIR TASK [--retry-failed]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    retry = "--retry-failed" in args
    args = [a for a in args if a != "--retry-failed"]
    if len(args) != 2:
        print("usage: python -m pypet_rebuild.worker WORKDIR TASK [--retry-failed]", file=sys.stderr)
        return 2
    configure_logging()
    try:
        run_task(args[0], int(args[1]), retry)
    except Interrupted:
        return INTERRUPTED_EXIT
    except SweepStopped:
        return STOPPED_EXIT
    except StorageError:  # its shard could not be written (run_task logged why): HDF5 cannot close
        logging.shutdown()  # that file, and its clean-up at exit would crash; leave without it
        os._exit(1)
    except TaskBusyError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
