"""The executor contract, without running anything: options, default plans, arrays, states."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pypet_rebuild import PypetError, Trajectory
from pypet_rebuild.executors import Executor, make_executor
from pypet_rebuild.executors.inline import InlineExecutor
from pypet_rebuild.executors.local import LocalExecutor
from pypet_rebuild.executors.slurm import SlurmExecutor
from pypet_rebuild.exploration import Plan
from pypet_rebuild.formats.records import JobRecord
from pypet_rebuild.taskstate import TaskState
from pypet_rebuild.workdir import Workdir

SRC = Path(__file__).resolve().parents[1] / "src" / "pypet_rebuild"


@pytest.mark.parametrize(("name", "valid"), [
    ("inline", "stop_on_error=False"),
    ("local", "max_parallel=None, time_limit=None"),
    ("slurm", "partition=None, time_limit='1:00:00', mem=None"),
])
def test_a_misspelt_option_lists_the_valid_ones(name: str, valid: str) -> None:
    with pytest.raises(PypetError, match=f"executor '{name}' has no option max_paralel; valid options: ") as err:
        make_executor(name, max_paralel=3)
    assert valid in str(err.value)


def test_options_rebuild_the_same_executor() -> None:
    for ex in (InlineExecutor(stop_on_error=True), LocalExecutor(max_parallel=3, time_limit="0:10"),
               SlurmExecutor(partition="debug", mem="2G", max_parallel=5)):
        again = make_executor(ex.name, **ex.options())
        assert type(again) is type(ex) and again.options() == ex.options()
        assert isinstance(again, Executor)


# (executor, runs) -> (tasks, runs per task) when the user does not choose the task size
@pytest.mark.parametrize(("ex", "n_runs", "tasks", "per_task"), [
    (InlineExecutor(), 1, 1, 1),
    (InlineExecutor(), 250, 1, 250),
    (LocalExecutor(max_parallel=2), 1, 1, 1),
    (LocalExecutor(max_parallel=2), 5, 5, 1),  # at most one task per run
    (LocalExecutor(max_parallel=2), 100, 8, 13),  # four tasks per worker
    (LocalExecutor(max_parallel=3), 1000, 12, 84),
    (SlurmExecutor(), 1, 1, 1),
    (SlurmExecutor(), 99, 1, 99),
    (SlurmExecutor(), 250, 3, 100),  # up to 100 runs per task
])
def test_each_executor_has_its_default_plan(ex: Executor, n_runs: int, tasks: int, per_task: int) -> None:
    plan = ex.plan(n_runs, max_array_size=7)
    assert (plan.n_tasks, plan.runs_per_task, plan.max_array_size) == (tasks, per_task, 7)


def test_the_users_task_size_wins_over_the_default() -> None:
    for ex in (InlineExecutor(), LocalExecutor(max_parallel=2)):
        assert ex.plan(100, runs_per_task=30).runs_per_task == 30
        assert ex.plan(100, n_tasks=3).n_tasks == 3
        assert ex.plan(100).max_array_size == 1001  # no scheduler limit: the plan's default
        assert ex.batch_script(Workdir("unused"), [0, 1]) is None  # nothing to preview


def test_arrays_are_cut_by_the_plan_and_the_cluster_limit() -> None:
    plan = Plan.make(20, runs_per_task=2, max_array_size=4)  # 10 tasks
    assert plan.arrays() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert plan.arrays([1, 3, 5, 7, 9], limit=2) == [[1, 3], [5, 7], [9]]
    assert plan.arrays([1, 3, 5, 7, 9], limit=100) == [[1, 3, 5, 7], [9]]  # the plan's own limit holds


def test_only_inline_runs_in_this_process() -> None:
    assert [ex.in_process for ex in (InlineExecutor(), LocalExecutor(), SlurmExecutor())] == [True, False, False]


def _local_workdir(tmp_path: Path) -> Workdir:
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    traj.explore({"x": [1, 2, 3]})
    wd = Workdir(tmp_path / "wd")
    wd.create(traj, Plan.make(3, runs_per_task=1), None, {"name": "local", "options": {}})
    return wd


def test_local_state_file_words_read_as_task_states(tmp_path: Path) -> None:
    """A finished submission's state file: its words come back as TaskState; a word the
    controller never writes is UNKNOWN, not passed on."""
    wd = _local_workdir(tmp_path)
    (wd.path / "local").mkdir()
    state = {"pid": None, "finished": True, "tasks": {"0": "COMPLETED", "1": "TIMEOUT", "2": "BOGUS"}}
    (wd.path / "local" / "local-1.state.json").write_text(json.dumps(state))
    wd.record_jobs(JobRecord("local", ["local-1"], [0, 1, 2]))
    states = LocalExecutor().states(wd)
    assert states == {0: TaskState.COMPLETED, 1: TaskState.TIMEOUT, 2: TaskState.UNKNOWN}
    assert all(type(s) is TaskState for s in states.values())


def test_a_dead_controllers_queued_tasks_read_as_failed(tmp_path: Path) -> None:
    wd = _local_workdir(tmp_path)
    (wd.path / "local").mkdir()
    state = {"pid": None, "tasks": {"0": "COMPLETED", "1": "RUNNING", "2": "PENDING"}}
    (wd.path / "local" / "local-1.state.json").write_text(json.dumps(state))
    wd.record_jobs(JobRecord("local", ["local-1"], [0, 1, 2], pid=None))
    assert LocalExecutor().states(wd) == {0: TaskState.COMPLETED, 1: TaskState.FAILED, 2: TaskState.FAILED}


def test_taskstate_sits_below_everything() -> None:
    """taskstate imports nothing of the package, and no module outside the executors package
    names a concrete executor."""
    tree = ast.parse((SRC / "taskstate.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level]
    for path in SRC.rglob("*.py"):
        if "executors" in path.parts:
            continue
        text = path.read_text()
        for name in ("InlineExecutor", "LocalExecutor", "SlurmExecutor"):
            assert name not in text, (path.name, name)
