"""The slurm executor: a sweep's tasks as SLURM job arrays, submitted through submitit.

One ``sbatch`` per array of at most ``MaxArraySize`` tasks; array index ``i`` of an array runs
the ``i``-th task of that array's task list (the list is recorded in ``jobs.jsonl``), because
SLURM caps the array *index*, not the count. Each task's pickle holds only a
:class:`.slurm_task.SlurmTask` (a submitit ``Checkpointable``), the workdir path and the task number.

How a task runs on the node: the batch script ``exec``s Python (no ``srun``), so the Python
process *is* the batch step. That is why we use ``use_srun=False``: ``--signal=B:USR2@N``
(the time-limit warning), ``scancel``'s SIGTERM, ``scontrol requeue`` and preemption all reach
the worker directly, with no srun or bash in between (a bash parent dies on SIGUSR2 and, with
``proctrack/linuxproc``, leaves its Python child running), and no job step is created per task.
The worker flushes its ``.partial`` shard on SIGTERM/SIGUSR2; on SIGUSR2 submitit's checkpointing
then requeues the task, which resumes from that shard (see :mod:`.slurm_task`).

State comes from ``sacct`` (one call for all arrays), then ``squeue`` for what sacct does not
list or when it fails; every scheduler command has a timeout, so ``status`` never hangs. A shared
cluster's controller is everyone's: as submitit's ``InfoWatcher`` does, one cached answer serves
all tasks of a sweep, and the time between queries backs off while nothing changes (see
:class:`_Watch`), so that ``wait`` on any number of tasks asks at most once per 10 s on average.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PypetError, SubmissionError
from ..exploration import DEFAULT_MAX_ARRAY_SIZE, Plan
from ..formats.records import JobRecord
from ..taskstate import TaskState
from ..timefmt import parse_time, slurm_minutes
from ..workdir import Workdir
from .base import Executor

log = logging.getLogger(__name__)

COMMAND_TIMEOUT = 20.0  # seconds for every scontrol/sacct/squeue/scancel call
# how often states() asks the scheduler (sacct and squeue are RPCs to a controller everyone shares)
QUERY_MIN_S = 2.0  # after a change: soon again
QUERY_MAX_S = 60.0  # while nothing changes, the wait doubles up to this
QUERY_RATE = 0.09  # scheduler commands per second at most in the long run, whatever the task count
QUERY_BURST = 6.0  # commands that may go at once after a quiet stretch (a budget, refilled at QUERY_RATE)
FRESH_S = 2.0  # a one-shot status (not wait's loop) reuses an answer at most this old, budget permitting
# so a wait of T seconds runs at most QUERY_BURST + QUERY_RATE * T commands: under 1 per 10 s from 10 minutes on
UNTHROTTLED = 1_000_000_000  # array_parallelism when max_parallel is not given: %N = no throttle

# sacct/squeue state words -> ours: the one place that reads SLURM's words
_S = TaskState
_STATE_MAP: dict[str, TaskState] = {
    "PENDING": _S.PENDING, "REQUEUED": _S.PENDING, "REQUEUE_HOLD": _S.PENDING, "REQUEUE_FED": _S.PENDING,
    "RESV_DEL_HOLD": _S.PENDING,
    "RUNNING": _S.RUNNING, "CONFIGURING": _S.RUNNING, "COMPLETING": _S.RUNNING, "SUSPENDED": _S.RUNNING,
    "STOPPED": _S.RUNNING, "SIGNALING": _S.RUNNING, "STAGE_OUT": _S.RUNNING, "RESIZING": _S.RUNNING,
    "COMPLETED": _S.COMPLETED,
    "FAILED": _S.FAILED, "SPECIAL_EXIT": _S.FAILED,
    "CANCELLED": _S.CANCELLED, "REVOKED": _S.CANCELLED,
    "TIMEOUT": _S.TIMEOUT, "DEADLINE": _S.TIMEOUT,
    "OUT_OF_MEMORY": _S.OUT_OF_MEMORY, "NODE_FAIL": _S.NODE_FAIL, "BOOT_FAIL": _S.NODE_FAIL,
    "PREEMPTED": _S.PREEMPTED,
}

DEFAULTS: dict[str, Any] = {
    "partition": None, "time_limit": "1:00:00", "mem": None, "cpus_per_task": None,
    "account": None, "qos": None, "constraint": None, "gpus": None, "job_name": "pypet-hpc",
    "sbatch_extra": None, "setup": None, "max_parallel": None, "python": None,
}
# how each option is spelled on the command line, for error messages
_FLAGS = {"time_limit": "--time", "sbatch_extra": "--sbatch", "max_parallel": "--max-parallel",
          "cpus_per_task": "--cpus-per-task", "job_name": "--job-name", "python": "python"}

_NAME_LIST = re.compile(r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*\Z")
_JOB_NAME = re.compile(r"[A-Za-z0-9_.+=@:-]{1,200}\Z")
_CONSTRAINT = re.compile(r"[A-Za-z0-9_.,&|!*:\[\]()-]+\Z")
_MEM = re.compile(r"\d+[KMGTkmgt]?[Bb]?\Z")
_GPUS = re.compile(r"([A-Za-z0-9_.-]+:)?\d+\Z")
_EXTRA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_EXTRA_VALUE = re.compile(r"[A-Za-z0-9_.,:@%+=/\[\]*!&|()#~^ -]*\Z")
# sbatch options pypet-hpc sets itself, or that have their own option
_RESERVED = {"array": None, "output": None, "error": None, "open-mode": None, "signal": None,
             "wrap": None, "parsable": None, "job-name": "--job-name", "partition": "--partition",
             "time": "--time", "mem": "--mem", "cpus-per-task": "--cpus-per-task",
             "account": "--account", "qos": "--qos", "constraint": "--constraint",
             "gpus-per-task": "--gpus"}
_JOBID = re.compile(r"(\d+)(?:_(\d+|\[([0-9,%-]+)\]))?\Z")

_clock = time.monotonic  # the watcher's clock (tests drive it)


@dataclass
class _Watch:
    """The last scheduler answer for one workdir, and when to ask again (as submitit's InfoWatcher).

    The wait between queries starts at :data:`QUERY_MIN_S`, doubles while the answer stays the
    same (or the scheduler does not answer) up to :data:`QUERY_MAX_S`, and starts over when the
    answer changes. A budget of scheduler commands, refilled at :data:`QUERY_RATE` per second,
    caps the average however often it changes (a sweep of 10,000 tasks changes all the time). A
    new submission in jobs.jsonl (its tasks are not in the answer yet), or a cancel from any
    process (it touches the workdir's slurm/ folder), is asked about at once.

    Only a patient caller (``wait``'s loop) waits out the interval; any other status reuses an
    answer for at most :data:`FRESH_S` seconds, unless rapid repeated calls have spent the budget
    or the scheduler failed to answer last time.
    """

    answer: dict[int, TaskState]
    error: PypetError | None  # the scheduler's last failure to answer, said again until the next query
    jobs_stamp: tuple[int, ...]
    asked: float
    interval: float
    budget: float
    budget_at: float  # when the budget was last refilled

    def refill(self, now: float) -> None:
        self.budget = min(QUERY_BURST, self.budget + (now - self.budget_at) * QUERY_RATE)
        self.budget_at = now

    def due(self, now: float, jobs_stamp: tuple[int, ...], patient: bool) -> bool:
        if jobs_stamp != self.jobs_stamp:
            return True
        # a scheduler that failed to answer is given its back-off by every caller (it is down, not busy)
        wait = self.interval if patient or self.error is not None else min(self.interval, FRESH_S)
        return now - self.asked >= wait and self.budget >= 2.0  # a query: sacct and squeue

    def update(self, now: float, answer: dict[int, TaskState] | None, error: PypetError | None,
               jobs_stamp: tuple[int, ...], calls: int) -> None:
        same = error is None and answer == self.answer and self.error is None
        self.interval = min(QUERY_MAX_S, self.interval * 2) if same or error is not None else QUERY_MIN_S
        self.answer, self.error = (self.answer if answer is None else answer), error
        # a query the user's action forced (the budget may be spent) leaves no debt: without the
        # floor, a submit and a resubmit in a row delayed every later answer by over a minute
        forced = jobs_stamp != self.jobs_stamp
        self.jobs_stamp, self.asked = jobs_stamp, now
        self.budget = max(0.0, self.budget - calls) if forced else self.budget - calls


_watches: dict[str, _Watch] = {}


def _invalidate(wd: Workdir) -> None:
    """The user acted on the sweep in this process: the next status asks the scheduler at once
    (the budget stays as spent)."""
    watch = _watches.get(str(wd.path))
    if watch is not None:
        watch.jobs_stamp = ()


SCHEDULER_CALLS = [0]  # sacct/squeue/scontrol/scancel commands run by this process


class SlurmExecutor(Executor):
    """Submits tasks as SLURM job arrays (through submitit) and reads their state from sacct/squeue."""

    name = "slurm"
    option_defaults = DEFAULTS

    def __init__(self, partition: str | None = None, time_limit: str | float = "1:00:00",
                 mem: str | None = None, cpus_per_task: int | None = None, account: str | None = None,
                 qos: str | None = None, constraint: str | None = None, gpus: int | str | None = None,
                 job_name: str = "pypet-hpc", sbatch_extra: dict[str, Any] | None = None,
                 setup: Sequence[str] | None = None, max_parallel: int | None = None,
                 python: str | None = None) -> None:
        if time_limit is None:
            time_limit = DEFAULTS["time_limit"]
        try:
            self.limit_s = parse_time(time_limit)
        except PypetError as exc:
            raise PypetError(f"--time: {exc}") from None
        self.time_limit = time_limit
        self.partition = _checked("partition", partition, _NAME_LIST, "letters, digits and _.- (a comma-separated list)")
        self.account = _checked("account", account, _NAME_LIST, "letters, digits and _.-")
        self.qos = _checked("qos", qos, _NAME_LIST, "letters, digits and _.-")
        self.constraint = _checked("constraint", constraint, _CONSTRAINT, "letters, digits and _.,&|!*:[]()-")
        self.job_name = _checked("job_name", job_name if job_name is not None else DEFAULTS["job_name"],
                                 _JOB_NAME, "letters, digits and _.+=@:-")
        self.mem = _checked("mem", None if mem is None else str(mem), _MEM, "a size such as 4G, 500M or 4096")
        self.cpus_per_task = _whole("cpus_per_task", cpus_per_task)
        self.max_parallel = _whole("max_parallel", max_parallel)
        if isinstance(gpus, int) and not isinstance(gpus, bool):
            self.gpus: int | str | None = _whole("gpus", gpus)
        else:
            self.gpus = _checked("gpus", gpus, _GPUS, "a count such as 2, or type:count such as a100:2")
        self.sbatch_extra = _check_extra(sbatch_extra)
        self.setup = _check_setup(setup)
        if python is None:
            python = sys.executable
        if not isinstance(python, str) or not python or _has_control(python):
            raise PypetError(f"python: {python!r} is not a usable interpreter path")
        self.python = python
        self._max_array: int | None = None
        self._checked_with_cluster = False

    def options(self) -> dict[str, Any]:
        """Everything needed to rebuild this executor for status, cancel and resubmit."""
        return {"partition": self.partition, "time_limit": self.time_limit, "mem": self.mem,
                "cpus_per_task": self.cpus_per_task, "account": self.account, "qos": self.qos,
                "constraint": self.constraint, "gpus": self.gpus, "job_name": self.job_name,
                "sbatch_extra": dict(self.sbatch_extra) or None, "setup": list(self.setup) or None,
                "max_parallel": self.max_parallel, "python": self.python}

    @property
    def signal_delay_s(self) -> int:
        """Seconds before the time limit at which SLURM sends SIGUSR2 (the worker then flushes).

        slurmctld checks about every 30 s, so the signal comes up to 30 s earlier than asked; a
        short limit gets a short delay so that the warning does not land during start-up
        (measured: @30 on a 1-minute job fired after 3 s, @15 after 32 s). 15 s for 1 minute,
        a quarter of the limit up to 90 s from 6 minutes on.
        """
        return int(max(15, min(90, slurm_minutes(self.time_limit) * 60 // 4)))

    def default_plan(self, n_runs: int, max_array_size: int) -> Plan:
        """Plan.make's default, up to 100 runs per task: a task start (queueing, Python, imports)
        costs seconds, so a task should hold enough work to make that small."""
        return Plan.make(n_runs, max_array_size=max_array_size)

    # -- talking to the cluster -----------------------------------------------------------------

    def max_array_size(self) -> int:
        """The cluster's MaxArraySize (tasks per array; indices run 0..N-1), or 1001 if unreadable."""
        if self._max_array is None:
            value = DEFAULT_MAX_ARRAY_SIZE
            res = _run(["scontrol", "show", "config"])
            m = re.search(r"^MaxArraySize\s*=\s*(\d+)", res.stdout if res else "", re.MULTILINE)
            if m and int(m.group(1)) >= 1:
                value = int(m.group(1))
            else:
                log.warning("could not read MaxArraySize from `scontrol show config`; assuming %d", value)
            self._max_array = value
        return self._max_array

    def preflight(self) -> None:
        """Check what only the cluster can tell (sbatch present, partition known, python runs)
        before anything is written or submitted."""
        if self._checked_with_cluster:
            return
        for tool in ("sbatch", "scontrol", "srun"):
            if shutil.which(tool) is None:
                raise PypetError(f"the slurm executor needs SLURM's {tool} on PATH (run this on the cluster's "
                                 "login node, or use --executor local)")
        if not (os.path.isfile(self.python) and os.access(self.python, os.X_OK)):
            raise PypetError(f"python: {self.python} is not an executable file")
        for part in (self.partition or "").split(","):
            if not part:
                continue
            res = _run(["scontrol", "show", "partition", part])
            if res is None:
                raise SubmissionError("cannot reach the SLURM controller (`scontrol show partition` failed or "
                                      f"timed out after {COMMAND_TIMEOUT:.0f} s)")
            if res.returncode != 0:
                known = _run(["sinfo", "-h", "-o", "%R"])
                names = sorted(set(known.stdout.split())) if known and known.returncode == 0 else []
                hint = f" (partitions: {', '.join(names)})" if names else ""
                raise PypetError(f"--partition: unknown partition {part!r}{hint}")
        # sbatch --test-only checks everything else (memory, account, qos, extra options) for real
        script = self._script(Path(tempfile.gettempdir()) / "pypet-hpc-preflight" / "%j", 1)
        if script is not None:
            res = _run(["sbatch", "--test-only"], script)
            if res is None:
                raise SubmissionError(f"sbatch --test-only did not answer within {COMMAND_TIMEOUT:.0f} s")
            if res.returncode != 0:  # the options given (exit 2), not a refusal of a real submission (1)
                raise PypetError(f"sbatch refused the job: {_first_error(res.stderr) or res.returncode} "
                                 "(checked with sbatch --test-only; nothing was submitted)")
        self._checked_with_cluster = True

    # -- the executor protocol ------------------------------------------------------------------

    def submit(self, wd: Workdir, tasks: Sequence[int], retry_failed: bool = False) -> list[str]:
        """One sbatch per array of at most MaxArraySize tasks; each array is recorded as soon as
        sbatch answers, and each task's log is linked to ``wd.task_log(task)``."""
        from .slurm_task import SlurmTask

        tasks = list(tasks)
        if not tasks:
            return []
        self.preflight()
        arrays = wd.manifest().plan.arrays(tasks, limit=self.max_array_size())
        (wd.path / "slurm").mkdir(exist_ok=True)
        ex = self._submitit(wd.path / "slurm" / "%j")
        ids: list[str] = []
        for k, chunk in enumerate(arrays):
            n = len(chunk)
            sink = io.StringIO()
            try:
                with contextlib.redirect_stderr(sink):  # submitit echoes sbatch's stderr; we say it once
                    task = SlurmTask()  # type: ignore[no-untyped-call]  # submitit's Checkpointable.__new__
                    jobs = ex.map_array(task, [str(wd.path)] * n, chunk, [retry_failed] * n)
            except Exception as exc:  # noqa: BLE001 - sbatch's refusal becomes one clear line
                _drop_orphans(wd.path / "slurm")
                done = f"; submitted before: jobs {', '.join(ids)} (recorded)" if ids else ""
                raise SubmissionError(f"sbatch refused array {k + 1} of {len(arrays)} ({n} tasks): "
                                      f"{_reason(exc)}{done}") from None
            array_id = jobs[0].job_id.split("_")[0]
            # mem: the limit these tasks run under, for status to name when one runs out of memory
            wd.record_jobs(JobRecord(self.name, [array_id], chunk, mem=self.mem))
            ids.append(array_id)
            _link_logs(wd, chunk, [job.paths.stdout for job in jobs])
            log.info("array %s: %d tasks (%d..%d)", array_id, n, chunk[0], chunk[-1])
        _invalidate(wd)
        return ids

    def states(self, wd: Workdir, patient: bool = False) -> dict[int, TaskState]:
        """task -> state of its latest submission, from sacct, else squeue; never blocks for long.
        One sacct and one squeue call serve every task of the sweep; a cached answer is reused
        while the scheduler is not due to be asked again (:class:`_Watch`): up to a minute for a
        ``patient`` caller (a wait loop), else up to :data:`FRESH_S` seconds."""
        key, now = str(wd.path), _clock()
        jobs_stamp = _jobs_stamp(wd)
        watch = _watches.get(key)
        if watch is not None:
            watch.refill(now)
            if not watch.due(now, jobs_stamp, patient):
                if watch.error is not None:
                    raise watch.error
                return dict(watch.answer)
        latest = _latest_submissions(wd)
        if not latest:
            return {}
        ids = sorted({aid for aid, _, _ in latest.values()}, key=int)
        calls = SCHEDULER_CALLS[0]
        out: dict[int, TaskState] | None = None
        error: PypetError | None = None
        try:
            found = _query_states(ids, {f"{a}_{i}" for a, i, _ in latest.values()},
                                  {a for a, _, single in latest.values() if single})
            out = {task: found.get(f"{aid}_{idx}", TaskState.UNKNOWN) for task, (aid, idx, _) in latest.items()}
        except PypetError as exc:
            error = exc
        if watch is None:
            watch = _watches[key] = _Watch(out or {}, error, jobs_stamp, now, QUERY_MIN_S, QUERY_BURST, now)
            watch.budget -= SCHEDULER_CALLS[0] - calls
        else:
            watch.update(now, out, error, jobs_stamp, SCHEDULER_CALLS[0] - calls)
        if error is not None:
            raise error
        return dict(watch.answer)

    def cancel(self, wd: Workdir) -> int:
        """scancel every array of the sweep that still has queued or running tasks; returns how
        many tasks were queued or running."""
        ids = sorted({i for job in wd.jobs() if job.executor == self.name for i in job.ids}, key=int)
        if not ids:
            return 0
        res = _run(["squeue", "-h", "-r", "-j", ",".join(ids), "-o", "%i"])
        if res is not None and res.returncode == 0:
            active = [line.split("_")[0] for line in res.stdout.split()]
            targets = sorted(set(active), key=int)
            count = len(active)
        else:
            targets, count = ids, len(ids)
        if targets:
            out = _run(["scancel", *targets])
            if out is None:
                raise SubmissionError(f"scancel did not answer within {COMMAND_TIMEOUT:.0f} s")
            if out.returncode != 0 and "Invalid job id" not in out.stderr:
                raise SubmissionError(f"scancel failed: {_first_error(out.stderr) or out.returncode}")
        _invalidate(wd)
        _mark_cancel(wd)
        return count

    def batch_script(self, wd: Workdir, tasks: Sequence[int]) -> str:
        """The sbatch script one array of ``tasks`` would be submitted with (nothing is submitted)."""
        script = self._script(wd.path / "slurm" / "%j", len(tasks))
        return script if script is not None else "# (batch script preview unavailable with this submitit version)"

    # -- helpers --------------------------------------------------------------------------------

    def _sbatch_parameters(self) -> dict[str, Any]:
        """submitit's parameters for this executor (its names, not ours)."""
        extra: dict[str, Any] = {"signal": f"B:USR2@{self.signal_delay_s}"}
        if self.mem is not None:
            extra["mem"] = self.mem  # as given: submitit's own mem is a float of GB
        extra.update(self.sbatch_extra)
        params: dict[str, Any] = {
            "job_name": self.job_name, "time": slurm_minutes(self.time_limit), "use_srun": False,
            "stderr_to_stdout": True, "wckey": None, "signal_delay_s": self.signal_delay_s,
            "array_parallelism": self.max_parallel or UNTHROTTLED, "additional_parameters": extra,
        }
        for name in ("partition", "cpus_per_task", "account", "qos", "constraint"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.gpus is not None:
            params["gpus_per_task"] = self.gpus
        if self.setup:
            params["setup"] = list(self.setup)
        return params

    def _script(self, folder: Path, n: int) -> str | None:
        """submitit's sbatch script for an array of ``n`` tasks (a plain job if n == 1), built by
        its private ``_make_sbatch_string``; None if that moved in another submitit version."""
        ex = self._submitit(folder)
        try:
            from submitit.slurm.slurm import _make_sbatch_string

            params = dict(ex.parameters)
            if n > 1:
                params["map_count"] = n
            return str(_make_sbatch_string(command=ex._submitit_command_str, folder=ex.folder, **params))
        except (ImportError, AttributeError, TypeError) as exc:
            log.debug("no sbatch script preview: %s", exc)
            return None

    def _submitit(self, folder: Path) -> Any:
        """A submitit SlurmExecutor writing under ``folder`` (which holds ``%j``)."""
        try:
            from submitit.slurm.slurm import SlurmExecutor as SubmititSlurm
        except ImportError as exc:  # pragma: no cover - submitit is a dependency
            raise PypetError(f"the slurm executor needs submitit: {exc}") from None
        try:
            ex = SubmititSlurm(folder=folder, python="exec " + shlex.quote(self.python))
        except RuntimeError as exc:  # no srun on PATH
            raise PypetError(f"the slurm executor needs SLURM's tools on PATH: {exc}") from None
        ex.update_parameters(**self._sbatch_parameters())
        return ex


# -- validation ----------------------------------------------------------------------------------


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _checked(name: str, value: Any, pattern: re.Pattern[str], allowed: str) -> Any:
    """``value`` if it is a string made only of safe characters (nothing that could start a new
    line in the batch script or reach a shell), else a one-line error naming the option."""
    if value is None:
        return None
    if not isinstance(value, str) or not pattern.match(value):
        raise PypetError(f"{_flag(name)}: {value!r} is not allowed; use {allowed}")
    return value


def _whole(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PypetError(f"{_flag(name)}: must be a whole number of at least 1, got {value!r}")
    return value


def _check_extra(extra: dict[str, Any] | None) -> dict[str, Any]:
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise PypetError(f"--sbatch: expected key=value options, got {extra!r}")
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if not isinstance(key, str) or not _EXTRA_KEY.match(key):
            raise PypetError(f"--sbatch: option name {key!r} is not allowed; use letters, digits, _ and -")
        norm = key.replace("_", "-").lower()
        if norm in _RESERVED:
            own = _RESERVED[norm]
            why = f"use {own} instead" if own else "pypet-hpc sets it itself"
            raise PypetError(f"--sbatch {key}: {why}")
        if value is True:
            out[key] = True
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PypetError(f"--sbatch {key}={value!r}: give a text value (or no value for a flag)")
        if not _EXTRA_VALUE.match(str(value)):
            raise PypetError(f"--sbatch {key}={value!r}: not allowed; use letters, digits, spaces and "
                             "_.,:@%+=/[]*!&|()#~^- (no quotes, ;, $, `, \\, <, > or line breaks)")
        out[key] = value
    return out


def _check_setup(setup: Sequence[str] | None) -> list[str]:
    if setup is None:
        return []
    if isinstance(setup, str):
        setup = [setup]
    lines = list(setup)
    for line in lines:
        if not isinstance(line, str) or _has_control(line.replace("\t", " ")):
            raise PypetError(f"--setup: {line!r} must be one line of shell (no line breaks or control characters)")
    return lines


# -- scheduler commands --------------------------------------------------------------------------


def _run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str] | None:
    """Run a SLURM client command with a timeout; None if it is missing or did not answer."""
    SCHEDULER_CALLS[0] += 1
    try:
        if stdin is not None:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, input=stdin)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("%s: %s", " ".join(cmd[:3]), exc)
        return None


def _first_error(text: str) -> str:
    """The most telling line of a SLURM command's stderr, without its ``sbatch: error:`` prefix."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for marker in ("error:", "failure:"):
        for line in lines:
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return re.sub(r"^\w+: ", "", lines[0]) if lines else ""


def _reason(exc: BaseException) -> str:
    text = str(exc)
    cause = exc.__cause__
    if isinstance(cause, subprocess.CalledProcessError) and cause.stderr:
        text = str(cause.stderr)
    reason = _first_error(text) or type(exc).__name__
    return " ".join(reason.split())


def _drop_orphans(folder: Path) -> None:
    """Remove the pickles and script submitit wrote for an array sbatch refused."""
    for path in list(folder.glob("*.pkl")) + list(folder.glob(".submission_file_*.sh")):
        if not path.is_symlink():
            with contextlib.suppress(OSError):
                path.unlink()


def _link_logs(wd: Workdir, tasks: Sequence[int], outputs: Sequence[Path]) -> None:
    """Point ``logs/task_K.log`` at the SLURM output of the task's latest submission."""
    wd.logs.mkdir(exist_ok=True)
    for task, out in zip(tasks, outputs, strict=True):
        link = wd.task_log(task)
        tmp = link.with_name(link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            tmp.symlink_to(os.path.relpath(out, link.parent))
            os.replace(tmp, link)
        except OSError as exc:
            log.warning("could not link %s to %s: %s", link, out, exc)


def _jobs_stamp(wd: Workdir) -> tuple[int, ...]:
    """What tells a cached answer that the user acted since: jobs.jsonl grew (a submit or
    resubmit) or the slurm/ folder was touched (a cancel, see :func:`_mark_cancel`), in any process."""
    out: list[int] = []
    for path in (wd.path / "jobs.jsonl", wd.path / "slurm"):
        try:
            st = path.stat()
        except OSError:
            out += [0, 0]
        else:
            out += [st.st_size if path.is_file() else 0, st.st_mtime_ns]
    return tuple(out)


def _mark_cancel(wd: Workdir) -> None:
    """Tell every process watching this sweep that it was cancelled (they then ask the scheduler
    at once): touch its slurm/ folder, which nothing else changes once the jobs are submitted."""
    try:
        (wd.path / "slurm").mkdir(exist_ok=True)
        os.utime(wd.path / "slurm")
    except OSError as exc:  # other processes then see the cancel at their next due query
        log.debug("could not touch %s: %s", wd.path / "slurm", exc)


def _latest_submissions(wd: Workdir) -> dict[int, tuple[str, int, bool]]:
    """task -> (array job id, index in the array, whether it was a plain single job)."""
    latest: dict[int, tuple[str, int, bool]] = {}
    for job in wd.jobs():
        if job.executor != SlurmExecutor.name or not job.ids:
            continue
        aid, tasks = job.ids[0], job.tasks
        for idx, task in enumerate(tasks):
            latest[int(task)] = (aid, idx, len(tasks) == 1)
    return latest


def expand_job_ids(text: str) -> list[str]:
    """``123_[4-6,9%2]`` -> ``123_4 123_5 123_6 123_9``; ``123_4`` and ``123`` stay as they are."""
    m = _JOBID.match(text.strip())
    if m is None:
        return []
    base, single, ranges = m.groups()
    if ranges is None:
        return [f"{base}_{single}" if single is not None else base]
    out: list[str] = []
    for part in ranges.split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out.extend(f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def parse_state_table(text: str) -> dict[str, str]:
    """``JobID|State`` lines (sacct --parsable2 or squeue) -> job id -> first word of the state."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        jobid, sep, state = line.partition("|")
        if not sep or not state.strip():
            continue
        word = state.split(None, 1)[0].rstrip("+")
        jobid = jobid.strip()
        base, _, index = jobid.partition("_")
        if base.isdigit() and (not index or index.isdigit()):  # the common row, at dict speed
            found[jobid] = word
            continue
        for jid in expand_job_ids(jobid):
            found[jid] = word
    return found


def resolve_states(wanted: set[str], table: dict[str, str], single: Collection[str] = (),
                   bare_arrays: bool = False) -> dict[str, TaskState]:
    """Our state (PENDING, RUNNING, COMPLETED, ...) of each wanted ``JOB_INDEX`` id that ``table``
    (from parse_state_table) tells: the id's own row, or for a plain single job (its job id in
    ``single``) its bare ``JOB`` row. Ids it does not tell are left out.

    An array's bare row (``661|PENDING``: sacct shows one right after sbatch and while a task
    starts or ends) is the array's meta record, i.e. one task whose index the database does not
    know yet, not the whole array: it said COMPLETED while the other tasks were still running.
    So it counts for the tasks without a row of their own only with ``bare_arrays`` (when
    slurmctld cannot be asked), and only if it says the array is not finished (PENDING or RUNNING).
    """
    out: dict[str, TaskState] = {}
    words = _STATE_MAP
    for w in wanted:
        state = words.get(table.get(w, ""))
        if state is None:
            base = w.partition("_")[0]
            bare = words.get(table.get(base, ""))
            if base in single or (bare_arrays and bare is not None and bare.active):
                state = bare
        if state is not None:
            out[w] = state
    return out


def _query_states(ids: list[str], wanted: set[str], single: Collection[str] = ()) -> dict[str, TaskState]:
    """Our states of the wanted ``JOB_INDEX`` ids of the jobs ``ids`` (``single``: plain single
    jobs, not arrays): sacct, overridden by squeue where slurmctld has the task queued or running
    (sacct lags behind it) or where sacct has no row of its own; an array's bare sacct row only if
    squeue fails. Ids neither knows are left out."""
    joined = ",".join(ids)
    table: dict[str, str] = {}
    sacct = _run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", joined])
    sacct_ok = sacct is not None and sacct.returncode == 0
    if sacct_ok:
        assert sacct is not None
        table = parse_state_table(sacct.stdout)
    else:
        why = _first_error(sacct.stderr) if sacct is not None else "no answer"
        log.warning("sacct failed (%s); reading states from squeue", why)
    found = resolve_states(wanted, table, single)
    squeue = _run(["squeue", "-h", "-r", "-t", "all", "-j", joined, "-o", "%i|%T"])
    if squeue is not None and squeue.returncode == 0:
        # slurmctld is the live truth: a job it has queued or running is so, whatever sacct's
        # lagging record says (a requeued job's last attempt can still read FAILED there)
        for w, state in resolve_states(wanted, parse_state_table(squeue.stdout), single).items():
            if state.active or w not in found:
                found[w] = state
    missing = wanted - found.keys()
    if missing:
        if squeue is not None and squeue.returncode == 0:
            pass  # neither knows them
        elif squeue is not None and "Invalid job id" in squeue.stderr:
            pass  # none of the jobs is known to slurmctld any more
        elif not sacct_ok:
            why = _first_error(squeue.stderr) if squeue is not None else "no answer"
            raise PypetError(f"sacct and squeue both failed ({why}); is the SLURM controller up?")
        else:
            found.update(resolve_states(missing, table, single, bare_arrays=True))
    return found
