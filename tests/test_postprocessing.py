"""Jobs with extra arguments, return values as pypet's [(run_idx, value), ...], and post-processing
that adds waves of runs (an adaptive sweep) on the inline, local and SLURM executors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pypet_rebuild import Environment, HDF5StorageService, PypetError, Trajectory, load_trajectory
from pypet_rebuild.environment import job_returns
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir

from .conftest import cli

ROOT_OMEGA = float(np.sqrt((1.96 - np.sqrt(1.96**2 - 3.0)) / 2))  # amplitude 2 at zeta 0.1: 0.72202


def _amplitude(traj: Trajectory, level: float, zeta: float = 0.1) -> float:
    """A driven damped oscillator's amplitude at traj.omega, minus ``level``."""
    w = traj.omega
    return float(1.0 / np.sqrt((1 - w**2) ** 2 + (2 * zeta * w) ** 2) - level)


def _refine(traj: Trajectory, results: list[tuple[int, Any]], tol: float, brackets: list[tuple[float, float]],
            ) -> dict[str, list[float]] | None:
    """Bracket the sign change of the results; ask for the 3 points inside until it is narrower than tol."""
    pairs = sorted((traj.explored["omega"][i], v) for i, v in results)
    lo, hi = next((a, b) for (a, fa), (b, fb) in zip(pairs, pairs[1:], strict=False) if fa < 0 <= fb)
    brackets.append((lo, hi))
    if hi - lo < tol:
        return None
    return {"omega": [lo + k * (hi - lo) / 4 for k in (1, 2, 3)]}


def _omega_traj() -> Trajectory:
    traj = Trajectory("bisect")
    traj.add_parameter("omega", 0.0)
    traj.explore({"omega": [0.0, 0.25, 0.5, 0.75, 1.0]})
    return traj


def _bisect(env: Environment, traj: Trajectory) -> tuple[list[tuple[int, Any]], list[tuple[float, float]]]:
    brackets: list[tuple[float, float]] = []
    env.add_postprocessing(_refine, 1e-3, brackets)
    results = env.run(_amplitude, 2.0, zeta=0.1)  # one positional and one keyword job argument
    return results, brackets


def _check_bisection(traj: Trajectory, results: list[tuple[int, Any]], brackets: list[tuple[float, float]]) -> None:
    # the bracket shrinks 4-fold per wave: 1/4**5 < 1e-3 after 5 waves of 5 + 3 + 3 + 3 + 3 runs
    assert len(brackets) == 5 and len(traj) == 17
    assert [i for i, _ in results] == list(range(17))
    lo, hi = brackets[-1]
    assert lo < ROOT_OMEGA <= hi and hi - lo == pytest.approx(1 / 4**5)
    omegas = traj.explored["omega"]
    for i, value in results:  # each value is what the job returned for that run's point
        assert value == pytest.approx(1 / np.sqrt((1 - omegas[i] ** 2) ** 2 + (0.2 * omegas[i]) ** 2) - 2.0)


def test_inline_bisection_converges_in_five_waves(tmp_path: Path) -> None:
    traj = _omega_traj()
    env = Environment(traj, storage=HDF5StorageService(tmp_path / "b.h5"))
    results, brackets = _bisect(env, traj)
    _check_bisection(traj, results, brackets)
    assert job_returns(load_trajectory(tmp_path / "b.h5")) == results  # stored with the runs


def test_local_bisection_runs_each_wave_in_the_same_workdir(tmp_path: Path) -> None:
    traj = _omega_traj()
    wd = tmp_path / "wd"
    env = Environment(traj, executor="local", workdir=wd, runs_per_task=4, max_parallel=2)
    results, brackets = _bisect(env, traj)
    _check_bisection(traj, results, brackets)
    jobs = [json.loads(line) for line in (wd / "jobs.jsonl").read_text().splitlines()]
    assert len(jobs) == 5  # one submission per wave, each of only the tasks holding new runs
    assert sweep_status(Workdir(wd)).counts["ok"] == 17
    loaded = load_trajectory(wd / "merged.h5")  # the return values survive the merge
    assert job_returns(loaded) == results
    np.testing.assert_allclose(loaded.get_from_runs("job_return"), [v for _, v in results])


def test_job_arguments_reach_local_workers_and_are_stored_with_the_sweep(tmp_path: Path) -> None:
    traj = _omega_traj()
    results = Environment(traj, executor="local", workdir=tmp_path / "wd").run(_amplitude, 0.5, zeta=0.3)
    assert results[1] == (1, pytest.approx(_amplitude_at(0.25, 0.5, 0.3)))
    assert (tmp_path / "wd" / "args.pkl").is_file()
    assert json.loads((tmp_path / "wd" / "manifest.json").read_text())["function"]["args"] == "args.pkl"


def _amplitude_at(w: float, level: float, zeta: float) -> float:
    return float(1.0 / np.sqrt((1 - w**2) ** 2 + (2 * zeta * w) ** 2) - level)


@pytest.mark.parametrize("given", ["positional", "keyword"])
def test_an_argument_that_cannot_be_pickled_is_named_before_anything_is_written(tmp_path: Path, given: str) -> None:
    env = Environment(_omega_traj(), executor="local", workdir=tmp_path / "wd")
    with pytest.raises(PypetError) as err:
        if given == "positional":
            env.run(_amplitude, threading.Lock())
        else:
            env.run(_amplitude, 2.0, zeta=threading.Lock())
    assert isinstance(err.value, TypeError)
    assert ("job argument 1" if given == "positional" else "job keyword argument 'zeta'") in str(err.value)
    assert "cannot be pickled for the local executor" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "wd").exists()


def test_a_multiprocessing_proxy_given_as_job_argument_is_refused_off_this_process(tmp_path: Path) -> None:
    import multiprocessing

    from pypet_rebuild.errors import LiveObjectError

    with multiprocessing.Manager() as manager:
        shared = manager.list()
        env = Environment(_omega_traj(), executor="local", workdir=tmp_path / "wd")
        with pytest.raises(LiveObjectError, match="is a multiprocessing proxy"):
            env.run(lambda traj, out: out.append(traj.omega), shared)
        assert not (tmp_path / "wd").exists()
        Environment(_omega_traj()).run(lambda traj, out: out.append(traj.omega), shared)  # inline: it works
        assert list(shared) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_inline_jobs_take_any_argument_and_a_wrong_count_is_refused() -> None:
    lock = threading.Lock()
    assert Environment(_omega_traj()).run(lambda traj, held: held is lock, lock)[0] == (0, True)
    with pytest.raises(PypetError, match=r"cannot take the trajectory and the job arguments given \(float, float, float\)"):
        Environment(_omega_traj()).run(_amplitude, 1.0, 2.0, 3.0)


def test_return_values_leave_out_failed_runs_and_unstorable_values_fail_their_run(tmp_path: Path) -> None:
    def job(traj: Trajectory) -> Any:
        if traj.omega == 0.5:
            raise ValueError("no")
        return object() if traj.omega == 1.0 else traj.omega * 2

    traj = _omega_traj()
    results = Environment(traj).run(job)
    assert results == [(0, 0.0), (1, 0.5), (3, 1.5)]
    error = traj.run_info()["error"][4]
    assert error.startswith("UnsupportedValueError: the job's return value cannot be stored") and "Pickled" in error


def test_none_and_added_leaves_are_not_return_values() -> None:
    traj = _omega_traj()
    results = Environment(traj).run(lambda t: t.add_result("z", t.omega) if t.omega < 0.5 else None)
    assert results == [(i, None) for i in range(5)]
    assert "job_return" not in traj.state.run_store.names("results")  # type: ignore[union-attr]
    assert list(traj.get_from_runs("z").compressed()) == [0.0, 0.25]


def test_run_exploration_returns_the_trajectory_and_takes_the_space_by_keyword() -> None:
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    out = Environment(traj).run_exploration(lambda t, k: t.add_result("y", t.x * k), 3, space={"x": [1, 2]})
    assert out is traj and list(traj.get_from_runs("y")) == [3, 6]
    with pytest.raises(PypetError, match=r"pass it by keyword: space="):
        Environment(traj).run_exploration(lambda t: None, {"x": [1, 2]})


def test_post_processing_may_expand_the_trajectory_itself_and_sees_all_results() -> None:
    seen: list[int] = []

    def grow(traj: Trajectory, results: list[tuple[int, Any]]) -> None:
        seen.append(len(results))
        if len(traj) < 4:
            traj.expand({"x": [len(traj)]})  # pypet's way: f_expand inside the post-processing

    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    traj.explore({"x": [0, 1]})
    env = Environment(traj)
    env.add_postprocessing(grow)
    assert env.run(lambda t: t.x * 10) == [(0, 0), (1, 10), (2, 20), (3, 30)]
    assert seen == [2, 3, 4]


def test_post_processing_asking_only_for_known_points_stops(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def again(traj: Trajectory, results: list[tuple[int, Any]]) -> dict[str, list[int]]:
        calls.append(len(results))
        return {"x": [0, 1]}

    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    traj.explore({"x": [0, 1]})
    env = Environment(traj)
    env.add_postprocessing(again)
    assert len(env.run(lambda t: t.x)) == 2 and calls == [2]
    assert "only for points the sweep already has" in caplog.text


def test_post_processing_that_returns_something_else_or_takes_too_few_arguments_is_refused() -> None:
    env = Environment(_omega_traj())
    with pytest.raises(PypetError, match="must take the trajectory, the results and the 0 arguments"):
        env.add_postprocessing(lambda traj: None)
    env.add_postprocessing(lambda traj, results: [0.3])
    with pytest.raises(PypetError, match="returned a value of type list; return a dict of parameter"):
        env.run(lambda t: 1)


@pytest.fixture
def slurm_cluster() -> Iterator[None]:
    from .test_slurm import cluster_problem, hold_cluster

    yield from hold_cluster(cluster_problem(), "local SLURM cluster", "sudo bash slurm/start.sh")


@pytest.mark.slurm
def test_slurm_bisection_converges_in_five_waves(tmp_path: Path, slurm_cluster: None) -> None:
    traj = _omega_traj()
    wd = tmp_path / "wd"
    env = Environment(traj, storage=HDF5StorageService(tmp_path / "b.h5"), executor="slurm", workdir=wd,
                      runs_per_task=2, time_limit="5", job_name="pht-adaptive")
    try:
        results, brackets = _bisect(env, traj)
    finally:
        env.executor.cancel(Workdir(wd))
    _check_bisection(traj, results, brackets)
    assert len((wd / "jobs.jsonl").read_text().splitlines()) == 5
    loaded = load_trajectory(tmp_path / "b.h5")
    assert job_returns(loaded) == results and len(loaded) == 17
    assert set(loaded.run_info()["job"]) != {""}  # the runs ran as SLURM jobs


def _mixed(traj: Trajectory) -> Any:
    return [traj.x, {"a": traj.x}, np.arange(traj.x), f"s{traj.x}", (traj.x, 2.5), True, None][traj.x]


def test_return_values_of_mixed_types_come_back_from_the_merged_file_as_returned(tmp_path: Path) -> None:
    """One name a column for some runs and per-run objects for others: get_from_runs reads both."""
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    traj.explore({"x": list(range(7))})
    results = Environment(traj, executor="local", workdir=tmp_path / "wd").run(_mixed)
    loaded = load_trajectory(tmp_path / "wd" / "merged.h5")
    for got in (results, job_returns(loaded)):
        assert [v for i, v in got if i != 2] == [0, {"a": 1}, "s3", (4, 2.5), True, None]
        np.testing.assert_array_equal(got[2][1], [0, 1])
    column = loaded.get_from_runs("job_return")
    assert column.count() == 6 and column[3] == "s3" and loaded.state.run_store.runs_with(  # type: ignore[union-attr]
        "results", "job_return") == [0, 1, 2, 3, 4, 5]


GROWING_SWEEP = '''
from pypet_rebuild import Trajectory

def make_trajectory():
    traj = Trajectory("grow")
    traj.add_parameter("x", 0)
    return traj

space = {"x": [0, 1]}

def simulate(traj):
    return traj.x ** 2

def postprocess(traj, results):
    return {"x": [len(results), len(results) + 1]} if len(results) < 6 else None
'''


def _follow_log(wd: Path) -> str:
    """The detached follower's log once it says it is done (or what it says after 4 minutes)."""
    log = wd / "logs" / "follow.log"
    deadline = time.monotonic() + 240
    while "done:" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.5)
    return log.read_text() if log.exists() else ""


def test_submit_follow_runs_the_sweep_files_waves_in_a_detached_process(tmp_path: Path) -> None:
    (tmp_path / "grow.py").write_text(GROWING_SWEEP)
    out = cli("submit", "grow.py", "--workdir", "wd", "--follow", "-o", "grown.h5", cwd=tmp_path).stdout
    assert "following in the background (pid" in out  # the command has returned: the follower goes on
    text = _follow_log(tmp_path / "wd")
    assert "done: 6 finished runs merged into" in text, text
    assert "post-processing wave 3: 2 new runs" in text
    assert job_returns(load_trajectory(tmp_path / "grown.h5")) == [(i, i * i) for i in range(6)]
    refused = cli("submit", "grow.py", "--workdir", "wd2", "--follow", "--wait", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "--follow runs in the background" in refused.stderr
    assert not (tmp_path / "wd2").exists()


def test_follow_in_the_foreground_picks_up_a_submitted_sweep_and_runs_its_waves(tmp_path: Path) -> None:
    (tmp_path / "grow.py").write_text(GROWING_SWEEP)
    cli("submit", "grow.py", "--executor", "local", "--workdir", "wd", cwd=tmp_path)
    out = cli("follow", "wd", cwd=tmp_path).stdout
    assert "done: 6 finished runs merged into" in out and "merged.h5" in out
    assert job_returns(load_trajectory(tmp_path / "wd" / "merged.h5")) == [(i, i * i) for i in range(6)]
    assert len((tmp_path / "wd" / "jobs.jsonl").read_text().splitlines()) == 3  # the first wave and two more
    again = cli("follow", "wd", cwd=tmp_path).stdout  # nothing left to do: the same 6 runs, no new wave
    assert "done: 6 finished runs" in again
    assert len((tmp_path / "wd" / "jobs.jsonl").read_text().splitlines()) == 3


def test_follow_without_postprocess_waits_and_merges(tmp_path: Path) -> None:
    (tmp_path / "grow.py").write_text(GROWING_SWEEP.split("def postprocess")[0])
    cli("submit", "grow.py", "--executor", "local", "--workdir", "wd", cwd=tmp_path)
    assert "done: 2 finished runs merged into" in cli("follow", "wd", "-o", "out.h5", cwd=tmp_path).stdout
    assert job_returns(load_trajectory(tmp_path / "out.h5")) == [(0, 0), (1, 1)]


def test_follow_refuses_a_sweep_started_from_python(tmp_path: Path) -> None:
    Environment(_omega_traj(), executor="local", workdir=tmp_path / "wd").run(_amplitude, 2.0)
    refused = cli("follow", "wd", cwd=tmp_path, check=False)
    assert refused.returncode == 2
    assert "follow takes a sweep submitted from a sweep file" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.slurm
def test_submit_follow_on_slurm_runs_the_waves_as_array_jobs(tmp_path: Path, slurm_cluster: None) -> None:
    (tmp_path / "grow.py").write_text(GROWING_SWEEP)
    wd = tmp_path / "wd"
    try:
        out = cli("submit", "grow.py", "--executor", "slurm", "--workdir", "wd", "--follow",
                  "--job-name", "pht-follow", "--time", "5", cwd=tmp_path).stdout
        assert "following in the background (pid" in out
        text = _follow_log(wd)
    finally:
        if (wd / "manifest.json").exists():
            from pypet_rebuild.executors.slurm import SlurmExecutor

            SlurmExecutor().cancel(Workdir(wd))
    assert "done: 6 finished runs merged into" in text, text
    loaded = load_trajectory(wd / "merged.h5")
    assert job_returns(loaded) == [(i, i * i) for i in range(6)]
    assert len((wd / "jobs.jsonl").read_text().splitlines()) == 3
    assert set(loaded.run_info()["job"]) != {""}  # the runs ran as SLURM jobs
