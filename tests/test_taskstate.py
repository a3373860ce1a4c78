"""TaskState and classify(): every combination of shard and scheduler word, written out."""

from __future__ import annotations

import json

import pytest

from pypet_rebuild.taskstate import (
    LOST,
    LOST_AFTER,
    RESUMABLE,
    SCHEDULER_STATES,
    ShardFacts,
    TaskState,
    classify,
)

S = TaskState
DAMAGE = "shard_00001.h5: unreadable shard (OSError: truncated)"

# what the shard says; n_runs is 10 throughout
SHARDS: dict[str, ShardFacts | None] = {
    "absent": None,
    "final, all ok": ShardFacts(final=True, n_runs=10, ok=10),
    "final, all ok, resubmitted since": ShardFacts(final=True, n_runs=10, ok=10, retry_after=True),
    "final, runs failed": ShardFacts(final=True, n_runs=10, ok=7, failed=3),
    "final, runs failed, resubmitted since": ShardFacts(final=True, n_runs=10, ok=7, failed=3, retry_after=True),
    "partial": ShardFacts(final=False, n_runs=10, ok=4, failed=1),
    "partial, resubmitted since": ShardFacts(final=False, n_runs=10, ok=4, failed=1, retry_after=True),
    "damaged final": ShardFacts(final=True, n_runs=10, damage=DAMAGE),
    "damaged partial": ShardFacts(final=False, n_runs=10, damage=DAMAGE),
}

# the scheduler's word (None: it never saw the task), one column each below
COLUMNS: list[TaskState | None] = [None, S.PENDING, S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLED,
                                   S.TIMEOUT, S.OUT_OF_MEMORY, S.NODE_FAIL, S.PREEMPTED, S.UNKNOWN]

# expected state per column; "!r": the problem is "resubmit resumes it", "!d": the damage
# never   PENDING  RUNNING  COMPLETED  FAILED  CANCELLED  TIMEOUT  OUT_OF_MEMORY  NODE_FAIL  PREEMPTED  UNKNOWN
EXPECTED: dict[str, str] = {
    "absent": "NOT_SUBMITTED PENDING RUNNING COMPLETED FAILED CANCELLED TIMEOUT OUT_OF_MEMORY NODE_FAIL "
              "PREEMPTED UNKNOWN",
    # written since the last submission: that submission is done, whatever a (cached) answer says
    "final, all ok": "COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED "
                     "COMPLETED COMPLETED",
    "final, all ok, resubmitted since": "COMPLETED PENDING RUNNING COMPLETED COMPLETED COMPLETED COMPLETED "
                                        "COMPLETED COMPLETED COMPLETED COMPLETED",
    "final, runs failed": "COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED COMPLETED "
                          "COMPLETED COMPLETED COMPLETED",
    # the retry of the failed runs may still be alive: UNKNOWN, not COMPLETED
    "final, runs failed, resubmitted since": "COMPLETED PENDING RUNNING COMPLETED COMPLETED COMPLETED "
                                             "COMPLETED COMPLETED COMPLETED COMPLETED UNKNOWN",
    "partial": "NOT_SUBMITTED!r PENDING RUNNING COMPLETED!r FAILED!r CANCELLED!r TIMEOUT!r OUT_OF_MEMORY!r "
               "NODE_FAIL!r PREEMPTED!r UNKNOWN",
    "partial, resubmitted since": "NOT_SUBMITTED!r PENDING RUNNING COMPLETED!r FAILED!r CANCELLED!r TIMEOUT!r "
                                  "OUT_OF_MEMORY!r NODE_FAIL!r PREEMPTED!r UNKNOWN",
    "damaged final": "DAMAGED!d DAMAGED!d DAMAGED!d DAMAGED!d DAMAGED!d DAMAGED!d DAMAGED!d DAMAGED!d "
                     "DAMAGED!d DAMAGED!d DAMAGED!d",
    # a running task's partial shard may be mid-write: not a problem
    "damaged partial": "NOT_SUBMITTED!d PENDING!d RUNNING COMPLETED!d FAILED!d CANCELLED!d TIMEOUT!d "
                       "OUT_OF_MEMORY!d NODE_FAIL!d PREEMPTED!d UNKNOWN!d",
}

CASES = [(shard, col, cell) for shard, row in EXPECTED.items()
         for col, cell in zip(COLUMNS, row.split(), strict=True)]


def test_the_table_covers_every_combination() -> None:
    assert set(EXPECTED) == set(SHARDS)
    assert {(shard, col) for shard, col, _ in CASES} == {(s, c) for s in SHARDS for c in COLUMNS}
    assert set(COLUMNS) - {None} == set(TaskState) - {S.NOT_SUBMITTED, S.DAMAGED}


@pytest.mark.parametrize(("shard", "scheduler", "cell"), CASES,
                         ids=[f"{s}-{c or 'never seen'}" for s, c, _ in CASES])
def test_classify(shard: str, scheduler: TaskState | None, cell: str) -> None:
    name, _, problem = cell.partition("!")
    expected_problem = {"": None, "r": RESUMABLE, "d": DAMAGE}[problem]
    assert classify(SHARDS[shard], scheduler) == (TaskState(name), expected_problem)


@pytest.mark.parametrize("word", [S.NOT_SUBMITTED, S.DAMAGED])
def test_classify_refuses_what_no_scheduler_says(word: TaskState) -> None:
    with pytest.raises(ValueError, match=word.value):
        classify(None, word)


# state: terminal, active, may run, may run with force
KINDS = {
    S.PENDING: (False, True, True, True),
    S.RUNNING: (False, True, True, True),
    S.COMPLETED: (True, False, False, False),
    S.FAILED: (True, False, False, False),
    S.CANCELLED: (True, False, False, False),
    S.TIMEOUT: (True, False, False, False),
    S.OUT_OF_MEMORY: (True, False, False, False),
    S.NODE_FAIL: (True, False, False, False),
    S.PREEMPTED: (True, False, False, False),
    S.UNKNOWN: (False, False, True, False),
    S.NOT_SUBMITTED: (False, False, False, False),
    S.DAMAGED: (False, False, False, False),
}


@pytest.mark.parametrize("state", list(TaskState))
def test_what_each_state_means(state: TaskState) -> None:
    assert (state.terminal, state.active, state.may_run(), state.may_run(force=True)) == KINDS[state]


def test_states_print_and_serialise_as_their_words() -> None:
    assert [s.value for s in TaskState] == ["PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                            "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "UNKNOWN",
                                            "NOT_SUBMITTED", "DAMAGED"]
    assert S.COMPLETED == "COMPLETED"
    assert f"{S.TIMEOUT:<9}|{S.NODE_FAIL}" == "TIMEOUT  |NODE_FAIL"
    assert json.dumps({"state": S.UNKNOWN}) == '{"state": "UNKNOWN"}'


# a task the scheduler neither lists nor recorded: UNKNOWN while its job may still run, lost after
# LOST_AFTER seconds since its submission (when the scheduler answered: age is not None)
LOST_CASES: list[tuple[str, float | None, TaskState, str | None]] = [
    ("absent", None, S.UNKNOWN, None),                      # the scheduler could not be asked
    ("absent", 10.0, S.UNKNOWN, None),                      # accounting may lag a fresh submission
    ("absent", LOST_AFTER + 1, S.CANCELLED, LOST),          # cancelled while pending: resubmit takes it
    ("partial", LOST_AFTER + 1, S.CANCELLED, RESUMABLE),
    ("partial", 10.0, S.UNKNOWN, None),
]


@pytest.mark.parametrize(("shard", "age", "state", "problem"), LOST_CASES)
def test_an_unknown_task_is_lost_only_after_the_grace(shard: str, age: float | None, state: TaskState,
                                                        problem: str | None) -> None:
    got = classify(SHARDS[shard], S.UNKNOWN, age)
    assert got == (state, problem)
    assert got[0].may_run(force=False) is (state is S.UNKNOWN)  # a plain resubmit takes the lost one


@pytest.mark.parametrize("word", [s for s in SCHEDULER_STATES if s is not S.UNKNOWN])
def test_age_changes_only_unknown(word: TaskState) -> None:
    for shard in SHARDS.values():
        assert classify(shard, word, LOST_AFTER * 10) == classify(shard, word)
