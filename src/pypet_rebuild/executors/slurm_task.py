"""What a SLURM array task runs: a submitit ``Checkpointable``, so that a task warned of its time
limit (or preempted with a signal) is requeued by submitit and resumes from its ``.partial`` shard.

submitit's handler of SLURM's warning signal (SIGUSR2) checkpoints, requeues and exits at once,
wherever the task is; landing in the middle of a shard flush, its exit would tear the shard's
last commit. So the worker's own handler only asks the task to stop after the current run; once
the shard is flushed, this class hands the signal to submitit's handler, which calls
:meth:`checkpoint` (the same task again: it resumes from the shard), requeues the job with
``scontrol requeue`` and exits. After ``max_num_timeout`` (3) time-outs submitit declines; the
task then waits for SLURM to end it, so that sacct says TIMEOUT.

Kept apart from :mod:`.slurm` so that only a submission and the job itself import submitit.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

from submitit.helpers import Checkpointable, DelayedSubmission

from ..worker import (
    INTERRUPTED_EXIT,
    STOP_SIGNALS,
    configure_logging,
    leave,
    run_logged,
    wait_for_slurm_end,
)

log = logging.getLogger(__name__)


class SlurmTask(Checkpointable):
    """``SlurmTask()(workdir, task, retry_failed)`` runs one task of the sweep in ``workdir``."""

    def __call__(self, workdir: str, task: int, retry_failed: bool = False) -> str:
        logging.getLogger("submitit").propagate = False  # it has its own handler: no doubled lines
        configure_logging()
        code = run_logged(workdir, task, retry_failed)
        if code == 0:
            return f"task {task} done"
        if code == INTERRUPTED_EXIT and STOP_SIGNALS[-1:] == [signal.SIGUSR2]:
            self._requeue()
        leave(code)

    def checkpoint(self, workdir: str, task: int, retry_failed: bool = False) -> DelayedSubmission:
        """The task again, as submitted: what it finished is in its shard, the rest runs."""
        log.info("task %s: checkpointed (its finished runs are in its shard); requeueing", task)
        return DelayedSubmission(self, workdir, task, retry_failed)

    def _requeue(self) -> None:
        """Hand SLURM's warning to submitit's handler (checkpoint, requeue, exit); if it declines
        (too many time-outs) or is not there, wait for SLURM to end the job."""
        handler: Any = signal.getsignal(signal.SIGUSR2)
        if callable(handler):
            try:
                handler(signal.SIGUSR2, None)  # exits (SystemExit) once the job is requeued
            except Exception as exc:  # noqa: BLE001 - submitit's UncompletedJobError: no requeue
                log.warning("not requeued: %s", exc)
        wait_for_slurm_end()
