"""The local executor: worker processes on this machine, at most ``max_parallel`` at once.

``submit`` starts one detached controller process and returns at once. The controller forks
one worker per task (it has already imported numpy and h5py, so a task starts in milliseconds),
keeps at most ``max_parallel`` running, enforces the per-task time limit (SIGTERM, then SIGKILL
after a grace period) and writes each task's state to ``local/<submission>.state.json``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import PypetError
from ..exploration import Plan
from ..formats.files import atomic_write
from ..formats.records import JobRecord
from ..taskstate import TaskState
from ..timefmt import parse_time
from ..workdir import Workdir
from .base import Executor

GRACE_SECONDS = 5.0
POLL_SECONDS = 0.02
TASKS_PER_WORKER = 4  # the default plan: balance without many task starts

# the words the controller writes to a state file (a TaskState's value), and what they mean
_STATE_WORDS = {s.value: s for s in (TaskState.PENDING, TaskState.RUNNING, TaskState.COMPLETED,
                                     TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMEOUT)}


class LocalExecutor(Executor):
    """Runs tasks in worker processes on this machine."""

    name = "local"
    option_defaults = {"max_parallel": None, "time_limit": None}

    def __init__(self, max_parallel: int | None = None, time_limit: str | float | None = None) -> None:
        if max_parallel is None:
            max_parallel = os.cpu_count() or 1
        if not isinstance(max_parallel, int) or max_parallel < 1:
            raise PypetError(f"max_parallel must be a whole number of at least 1, got {max_parallel!r}")
        self.max_parallel = max_parallel
        self.time_limit = time_limit
        self.limit_s = parse_time(time_limit) if time_limit is not None else None

    def options(self) -> dict[str, Any]:
        return {"max_parallel": self.max_parallel, "time_limit": self.time_limit}

    def default_plan(self, n_runs: int, max_array_size: int) -> Plan:
        """Four tasks per worker: a slow task does not hold up the end, yet few tasks start."""
        n_tasks = max(1, min(n_runs, TASKS_PER_WORKER * self.max_parallel))
        return Plan.make(n_runs, n_tasks=n_tasks, max_array_size=max_array_size)

    def submit(self, wd: Workdir, tasks: Sequence[int], retry_failed: bool = False) -> list[str]:
        sub_id = f"local-{time.time_ns() // 1000}"
        folder = wd.path / "local"
        folder.mkdir(exist_ok=True)
        spec = {"tasks": list(tasks), "max_parallel": self.max_parallel, "time_limit_s": self.limit_s,
                "retry_failed": retry_failed}
        (folder / f"{sub_id}.json").write_text(json.dumps(spec))
        _write_state(folder / f"{sub_id}.state.json",
                     {"pid": None, "tasks": {str(t): TaskState.PENDING for t in tasks}})
        with open(wd.logs / f"controller_{sub_id}.log", "ab") as log_fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pypet_rebuild.executors.local", str(wd.path), sub_id],
                stdin=subprocess.DEVNULL, stdout=log_fh, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        wd.record_jobs(JobRecord(self.name, [sub_id], list(tasks), pid=proc.pid))
        return [sub_id]

    def states(self, wd: Workdir, patient: bool = False) -> dict[int, TaskState]:
        out: dict[int, TaskState] = {}
        for job in wd.jobs():
            if job.executor != self.name:
                continue
            for sub_id in job.ids:
                state = _read_state(wd.path / "local" / f"{sub_id}.state.json")
                alive = _alive(job.pid)
                workers = state.get("workers", {})
                for task, word in state.get("tasks", {}).items():
                    st = _state(word)
                    if st.active and not alive and not state.get("finished"):
                        # the controller is gone (killed, machine restarted): nothing will start or
                        # report this task any more; it runs on only while its worker does
                        running = st is TaskState.RUNNING and _alive(workers.get(task))
                        st = TaskState.RUNNING if running else TaskState.FAILED
                    out[int(task)] = st
        return out

    def cancel(self, wd: Workdir) -> int:
        """Stop every live controller of the sweep; returns how many tasks were queued or running."""
        n = 0
        for job in wd.jobs():
            if job.executor == self.name and job.pid is not None and _alive(job.pid):
                for sub_id in job.ids:
                    tasks = _read_state(wd.path / "local" / f"{sub_id}.state.json").get("tasks", {})
                    n += sum(_state(word).active for word in tasks.values())
                os.kill(job.pid, signal.SIGTERM)
        return n


def _state(word: object) -> TaskState:
    """A state file's word as a TaskState (UNKNOWN for one the controller does not write)."""
    return _STATE_WORDS.get(word, TaskState.UNKNOWN) if isinstance(word, str) else TaskState.UNKNOWN


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def _write_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(state), durable=False)  # rewritten often; a crash loses no run


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _child(workdir: str, task: int, retry_failed: bool, log_path: str) -> None:
    """A forked worker: log to the task's file, run the task, exit with its outcome."""
    from ..worker import configure_logging, leave, run_logged

    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    for h in logging.root.handlers[:]:
        logging.root.removeHandler(h)
    configure_logging(sys.stderr)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    leave(run_logged(workdir, task, retry_failed))


def controller(workdir: str, sub_id: str) -> int:
    """Run a submission's tasks with at most max_parallel forked workers."""
    from ..worker import STOPPED_EXIT  # imports numpy/h5py once, before forking

    wd = Workdir(workdir)
    folder = wd.path / "local"
    spec = json.loads((folder / f"{sub_id}.json").read_text())
    state_path = folder / f"{sub_id}.state.json"
    states: dict[str, TaskState] = {str(t): TaskState.PENDING for t in spec["tasks"]}
    state: dict[str, Any] = {"pid": os.getpid(), "tasks": states, "exit": {}}
    _write_state(state_path, state)
    cancel = [False]
    signal.signal(signal.SIGTERM, lambda *_: cancel.__setitem__(0, True))
    ctx = multiprocessing.get_context("fork")
    pending = list(spec["tasks"])
    running: dict[int, tuple[Any, float, bool]] = {}  # task -> (process, start, timed out)
    limit = spec["time_limit_s"]
    while pending or running:
        changed = False
        if cancel[0]:
            for task in pending:
                states[str(task)] = TaskState.CANCELLED
            pending = []
            for proc, _, _ in running.values():
                if proc.is_alive():
                    proc.terminate()
        while pending and len(running) < spec["max_parallel"]:
            task = pending.pop(0)
            proc = ctx.Process(target=_child, args=(str(wd.path), task, spec["retry_failed"], str(wd.task_log(task))))
            proc.start()
            running[task] = (proc, time.monotonic(), False)
            state.setdefault("workers", {})[str(task)] = proc.pid
            states[str(task)] = TaskState.RUNNING
            changed = True
        for task, (proc, started, timed_out) in list(running.items()):
            elapsed = time.monotonic() - started
            if proc.is_alive():
                if limit is not None and elapsed > limit and not timed_out:
                    proc.terminate()
                    running[task] = (proc, started, True)
                elif timed_out and elapsed > limit + GRACE_SECONDS:
                    proc.kill()
                continue
            proc.join()
            del running[task]
            code = proc.exitcode
            if code == STOPPED_EXIT and not cancel[0]:
                print(f"task {task} stopped the sweep by its failure rule (see its log and "
                      f"{wd.stop_path.name}): cancelling the rest", flush=True)
                cancel[0] = True
            state["exit"][str(task)] = code
            if timed_out:
                states[str(task)] = TaskState.TIMEOUT
            elif code == STOPPED_EXIT:
                states[str(task)] = TaskState.FAILED
            elif cancel[0] and code != 0:
                states[str(task)] = TaskState.CANCELLED
            else:
                states[str(task)] = TaskState.COMPLETED if code == 0 else TaskState.FAILED
            changed = True
        if changed:
            _write_state(state_path, state)
        time.sleep(POLL_SECONDS)
    state["finished"] = True
    _write_state(state_path, state)
    return 0


if __name__ == "__main__":
    sys.exit(controller(sys.argv[1], sys.argv[2]))
