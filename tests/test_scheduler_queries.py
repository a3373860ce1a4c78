"""A good citizen on a shared cluster (issue 12): one sacct and one squeue call serve every task
of a sweep, the time between queries backs off while nothing changes, and waiting on a sweep
of 10,000 tasks asks the scheduler at most once per 10 s on average.

We cannot run 10,000 tasks here, so ``tests/fake_slurm/`` stands in for sacct and squeue on
PATH: it logs every call and answers for a canned sweep at a simulated time, which the test's
clock advances instead of sleeping."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pypet_rebuild import environment
from pypet_rebuild.environment import SweepHandle
from pypet_rebuild.executors import slurm as slurm_module
from pypet_rebuild.executors.slurm import SlurmExecutor
from pypet_rebuild.formats.records import JobRecord
from pypet_rebuild.taskstate import TaskState
from pypet_rebuild.workdir import Workdir

from .conftest import cli
from .test_reliability import make_workdir

FAKE = Path(__file__).with_name("fake_slurm")
ARRAY_SIZE = 1000
FIRST_ID = 7000


class Clock:
    """Simulated time for the watcher and for wait(); the fake scheduler reads it from the environment."""

    def __init__(self) -> None:
        self.t = 0.0
        os.environ["FAKE_SLURM_NOW"] = "0"

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds
        os.environ["FAKE_SLURM_NOW"] = repr(self.t)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Clock:
    monkeypatch.setenv("PATH", f"{FAKE}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM_LOG", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SLURM_NOW", "0")
    clock = Clock()
    monkeypatch.setattr(slurm_module, "_clock", clock.now)
    monkeypatch.setattr(environment, "time", SimpleNamespace(monotonic=clock.now, sleep=clock.sleep))
    monkeypatch.setattr(slurm_module, "_watches", {})
    return clock


def sweep(tmp_path: Path, n_tasks: int, duration: float, run_s: float, start: float = 0.0) -> Workdir:
    """A slurm workdir of ``n_tasks`` one-run tasks submitted as arrays of 1000, and the fake
    scheduler's script for it: task k ends at start + (k + 1) * duration / n_tasks."""
    wd = make_workdir(tmp_path, n_tasks, runs_per_task=1, executor="slurm")
    arrays = []
    for a, first in enumerate(range(0, n_tasks, ARRAY_SIZE)):
        tasks = list(range(first, min(first + ARRAY_SIZE, n_tasks)))
        wd.record_jobs(JobRecord("slurm", [str(FIRST_ID + a)], tasks))
        arrays.append([FIRST_ID + a, len(tasks)])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"arrays": arrays, "start": start, "duration": duration, "run_s": run_s}))
    os.environ["FAKE_SLURM_SPEC"] = str(spec)
    return wd


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def per_minute(log: list[dict[str, Any]], seconds: float) -> float:
    return len(log) / (seconds / 60)


def check_one_call_per_command(log: list[dict[str, Any]], n_arrays: int) -> None:
    """Every query is one sacct and one squeue, each naming every array of the sweep."""
    ids = {str(FIRST_ID + a) for a in range(n_arrays)}
    assert [c["cmd"] for c in log] == ["sacct", "squeue"] * (len(log) // 2), [c["cmd"] for c in log]
    for c in log:
        args = c["args"]
        assert set(args[args.index("-j") + 1].split(",")) == ids, args


def scheduler_log(tmp_path: Path, clock: Clock, n_arrays: int, what: str) -> tuple[list[dict[str, Any]], float]:
    """The commands the sweep ran (each query one sacct and one squeue naming every array) and
    their rate per minute, printed for the reader of the test log."""
    log = calls(tmp_path)
    check_one_call_per_command(log, n_arrays)
    rate = per_minute(log, clock.t)
    print(f"\n{what} over {clock.t / 60:.1f} simulated minutes: {len(log)} scheduler commands, {rate:.2f} per minute")
    return log, rate


def test_wait_on_10000_tasks_asks_the_scheduler_at_most_once_per_10_s(tmp_path: Path, clock: Clock,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """10,000 tasks in 10 arrays, one finishing every 0.09 s for 15 minutes (the answer changes
    at every query), polled as wait() polls: every 0.2 s. At most 6 scheduler commands a minute,
    one sacct and one squeue for all tasks each time; every task is seen COMPLETED in the end,
    within a minute of the last one ending."""
    duration = 900.0
    wd = sweep(tmp_path, 10_000, duration, run_s=120.0)
    executor = SlurmExecutor()
    seen: dict[int, TaskState] = {}
    while clock.t < duration + 120:
        seen = executor.states(wd, patient=True)  # as wait() asks
        if clock.t > duration and all(s is TaskState.COMPLETED for s in seen.values()):
            break
        clock.sleep(0.2)
    assert len(seen) == 10_000 and set(seen.values()) == {TaskState.COMPLETED}, clock.t
    assert clock.t <= duration + slurm_module.QUERY_MAX_S
    log, rate = scheduler_log(tmp_path, clock, 10, "wait() on 10,000 tasks, polled every 0.2 s,")
    assert rate <= 6.0, rate
    # a quieter scheduler is asked less often: the wait doubles up to a minute
    gaps = [b["now"] - a["now"] for a, b in zip(log[::2], log[2::2], strict=False)]
    assert min(gaps) >= slurm_module.QUERY_MIN_S and max(gaps) <= slurm_module.QUERY_MAX_S + 0.2, gaps


def test_wait_backs_off_while_nothing_changes_and_asks_again_after_a_change(tmp_path: Path,
                                                                            clock: Clock) -> None:
    """SweepHandle.wait() (default poll) on 20 tasks that all run for 5 minutes and end within
    the 6th: while nothing changes the scheduler is asked less and less often, up to once a
    minute; once tasks end the wait is short again; wait returns once all have ended."""
    wd = sweep(tmp_path, 20, duration=60.0, run_s=360.0, start=300.0)
    st = SweepHandle(wd).wait()
    assert st.finished and {t.state for t in st.tasks} == {TaskState.COMPLETED}
    assert 360 <= clock.t <= 360 + slurm_module.QUERY_MAX_S
    log, rate = scheduler_log(tmp_path, clock, 1, "wait() on 20 tasks")
    times = [c["now"] for c in log[::2]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    quiet = [g for g, t in zip(gaps, times[1:], strict=False) if t < 300]
    assert quiet[:5] == sorted(quiet[:5]) and max(quiet) == pytest.approx(slurm_module.QUERY_MAX_S, abs=0.3), gaps
    assert min(g for g, t in zip(gaps, times[1:], strict=False) if t > 300) < 10, gaps  # changes: asked soon
    assert rate <= 6.0, rate


def test_a_scheduler_that_does_not_answer_is_asked_less_often_too(tmp_path: Path, clock: Clock,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """sacct and squeue both fail (the controller is down): status says so (UNKNOWN, with a
    note), and the failing commands are not repeated at every poll."""
    wd = sweep(tmp_path, 10, duration=60.0, run_s=30.0)
    monkeypatch.setenv("FAKE_SLURM_SPEC", str(tmp_path / "missing.json"))  # the fake then fails
    handle = SweepHandle(wd)
    for _ in range(1500):  # 5 simulated minutes of wait()'s polling
        st = handle.status()
        assert {t.state for t in st.tasks} == {TaskState.UNKNOWN}
        assert st.scheduler_note is not None and "sacct and squeue both failed" in st.scheduler_note
        clock.sleep(0.2)
    rate = per_minute(calls(tmp_path), clock.t)
    assert rate <= 6.0, rate


def back_off(executor: SlurmExecutor, wd: Workdir, clock: Clock, until: float) -> dict[int, TaskState]:
    """Poll as wait() does (patient, every 0.2 s) until ``until``: the wait grows to a minute."""
    seen: dict[int, TaskState] = {}
    while clock.t < until:
        seen = executor.states(wd, patient=True)
        clock.sleep(0.2)
    return seen


def test_a_one_shot_status_is_fresh_even_while_a_wait_backs_off(tmp_path: Path, clock: Clock) -> None:
    """20 tasks running for minutes: wait()'s polling has backed off to a minute when task 0
    ends. A status asked a few seconds later (not wait's loop) sees it COMPLETED, although the
    wait's own next query is still far off."""
    wd = sweep(tmp_path, 20, duration=60.0, run_s=300.0, start=200.0)  # task k ends at 203 + 3k
    executor = SlurmExecutor()
    seen = back_off(executor, wd, clock, until=200.0)
    assert set(seen.values()) == {TaskState.RUNNING}
    clock.sleep(203.0 + slurm_module.FRESH_S - clock.t)  # task 0 ended FRESH_S ago
    before = len(calls(tmp_path))
    assert executor.states(wd, patient=True)[0] is TaskState.RUNNING  # the wait is not due yet
    assert len(calls(tmp_path)) == before
    fresh = executor.states(wd)
    assert fresh[0] is TaskState.COMPLETED and fresh[1] is TaskState.RUNNING, fresh
    assert len(calls(tmp_path)) == before + 2  # one sacct, one squeue
    assert SweepHandle(wd).status().tasks[0].state is TaskState.COMPLETED  # the public one-shot status


def test_rapid_one_shot_status_calls_stay_within_the_budget(tmp_path: Path, clock: Clock) -> None:
    """A script calling status() in a tight loop (every 0.2 s for 15 simulated minutes) on a
    sweep that changes all the time: the budget still caps the scheduler at 6 commands a minute,
    one sacct and one squeue for all tasks each time."""
    wd = sweep(tmp_path, 200, duration=900.0, run_s=120.0)
    handle = SweepHandle(wd)
    while clock.t < 900.0:
        handle.status()
        clock.sleep(0.2)
    _, rate = scheduler_log(tmp_path, clock, 1, "status() every 0.2 s")
    assert rate <= 6.0, rate


@pytest.mark.parametrize("where", ["this process", "another process"])
def test_a_cancel_is_seen_by_the_next_status_even_while_a_wait_backs_off(tmp_path: Path, clock: Clock,
                                                                         where: str) -> None:
    """wait() has backed off to a minute on 20 running tasks; the user cancels the sweep (through
    the API in this process, or `pypet-hpc cancel` in another shell): the next poll of the wait
    asks the scheduler at once and sees every task CANCELLED."""
    wd = sweep(tmp_path, 20, duration=60.0, run_s=600.0, start=600.0)
    executor = SlurmExecutor()
    assert set(back_off(executor, wd, clock, until=300.0).values()) == {TaskState.RUNNING}
    if where == "this process":
        SweepHandle(wd).cancel()
    else:
        out = cli("cancel", str(wd.path), cwd=tmp_path).stdout
        assert "cancelled" in out, out
    assert [c["cmd"] for c in calls(tmp_path)][-2:] == ["squeue", "scancel"]
    before = len(calls(tmp_path))
    assert set(executor.states(wd, patient=True).values()) == {TaskState.CANCELLED}
    assert len(calls(tmp_path)) == before + 2


def test_user_actions_after_a_spent_budget_do_not_delay_later_answers(tmp_path: Path, clock: Clock) -> None:
    """A script has spent the budget (status() in a tight loop), then submits twice in a row (two
    queries at once, past the budget): the next answers still come as soon as the budget refills
    (2 commands' worth), not a minute or more later to pay the forced queries back."""
    wd = sweep(tmp_path, 10, duration=60.0, run_s=30.0, start=100.0)  # task 0 ends at 106
    handle = SweepHandle(wd)
    while clock.t < 90.0:
        handle.status()
        clock.sleep(0.2)
    for _ in range(2):  # e.g. an expand and a resubmit: each makes the next status ask at once
        before = len(calls(tmp_path))
        wd.record_jobs(JobRecord("slurm", [str(FIRST_ID)], list(range(10))))
        handle.status()
        assert len(calls(tmp_path)) == before + 2
        clock.sleep(0.2)
    while handle.status().tasks[0].state is not TaskState.COMPLETED:
        clock.sleep(0.2)
    assert clock.t <= 106.0 + 2 / slurm_module.QUERY_RATE + slurm_module.FRESH_S, clock.t
