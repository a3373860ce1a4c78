"""A task's state, and the one rule that turns its shard and the scheduler's word into it.

A task's shard on disk is the truth about which runs finished; the scheduler only tells whether
the task may still be running. :func:`classify` weighs the two for one task; every part of the
package that asks "is this task done, alive, lost or broken?" goes through :class:`TaskState`
and :func:`classify`. This module imports nothing of the package: it sits below the executors
(which map their scheduler's words to :class:`TaskState`) and above nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TaskState(StrEnum):
    """What ``status`` says of a task. The values are the words ``status`` and ``status --json``
    print, so a member compares equal to its word (``TaskState.COMPLETED == "COMPLETED"``)."""

    PENDING = "PENDING"  # queued
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # the task's process failed (not a failed run: see formats.schema.RunStatus)
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    UNKNOWN = "UNKNOWN"  # submitted, but the scheduler knows no job of it (one may still be alive)
    NOT_SUBMITTED = "NOT_SUBMITTED"  # never submitted, and no job of it is alive
    DAMAGED = "DAMAGED"  # its final shard cannot be read

    @property
    def terminal(self) -> bool:
        """The scheduler says the task's job has ended (well or not): it will not run again
        unless it is resubmitted."""
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """The scheduler has the task queued or running."""
        return self in ACTIVE

    def may_run(self, force: bool = False) -> bool:
        """The task may still be queued or running: PENDING, RUNNING, and UNKNOWN unless
        ``force`` (the caller knows that its job is gone). Nothing else may be resubmitted
        or waited for."""
        return self.active or (self is TaskState.UNKNOWN and not force)


TERMINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED, TaskState.TIMEOUT,
                      TaskState.OUT_OF_MEMORY, TaskState.NODE_FAIL, TaskState.PREEMPTED})
ACTIVE = frozenset({TaskState.PENDING, TaskState.RUNNING})
# the states a scheduler can report; NOT_SUBMITTED and DAMAGED are conclusions of classify()
SCHEDULER_STATES = TERMINAL | ACTIVE | {TaskState.UNKNOWN}

RESUMABLE = "stopped before finishing; resubmit resumes it"


@dataclass(frozen=True)
class ShardFacts:
    """What a task's shard on disk says, as far as :func:`classify` needs to know.

    ``final`` tells the final shard from a ``.partial`` one; ``damage`` is why the shard could
    not be read (then ``ok`` and ``failed`` are 0); ``retry_after`` is whether the task was
    submitted again after the shard was last written.
    """

    final: bool
    n_runs: int
    ok: int = 0
    failed: int = 0
    damage: str | None = None
    retry_after: bool = False


LOST_AFTER = 900.0  # seconds after its submission a job the scheduler neither lists nor recorded is lost
LOST = ("lost: the scheduler no longer lists it and never recorded it (cancelled while pending?); "
        "resubmit runs it")


def classify(shard: ShardFacts | None, scheduler: TaskState | None,
             age: float | None = None) -> tuple[TaskState, str | None]:
    """A task's (state, problem) from its shard (None: it has none) and what the scheduler says
    of it (None: it never saw the task). Pure: it reads nothing.

    - ``age``: seconds since the task was last submitted, when the scheduler answered (None when
      it could not be asked). A task it calls UNKNOWN (neither listed nor recorded) for longer
      than :data:`LOST_AFTER` since its submission is CANCELLED (lost): its job cannot still run,
      since a queued or running job is listed and an ended one recorded. Sooner, it may be a job
      the accounting has not caught up with, and it stays UNKNOWN.

    - A readable final shard written since the task's last submission makes it COMPLETED,
      whatever the scheduler says: that submission has done its work, and a scheduler answer
      that still lists it as queued or running is older than the shard (answers are cached and
      polled with a back-off, so a finished sweep is seen as finished at once).
    - An older final shard makes it COMPLETED too, unless the task is queued or running (a
      retry of its failed runs is under way) or it is UNKNOWN and has runs to retry (that retry
      may still be alive).
    - A final shard that cannot be read makes it DAMAGED.
    - A partial shard, or a final one under way, of a task that has ended or was never
      submitted is resumable; a running task's unreadable partial shard may be mid-write.
    """
    if scheduler is not None and scheduler not in SCHEDULER_STATES:
        raise ValueError(f"{scheduler} is not a state a scheduler reports")
    state = TaskState.NOT_SUBMITTED if scheduler is None else scheduler
    lost = state is TaskState.UNKNOWN and age is not None and age > LOST_AFTER
    if lost:
        state = TaskState.CANCELLED
    if shard is None:
        return state, LOST if lost else None
    if shard.damage is not None:
        if shard.final:
            return TaskState.DAMAGED, shard.damage
        return state, None if state is TaskState.RUNNING else shard.damage
    unseen_retry = state is TaskState.UNKNOWN and shard.ok < shard.n_runs and shard.retry_after
    if shard.final and (not shard.retry_after or (not state.active and not unseen_retry)):
        return TaskState.COMPLETED, None
    if state.terminal or state is TaskState.NOT_SUBMITTED:
        return state, RESUMABLE
    return state, None
