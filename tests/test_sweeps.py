"""Sweeps cut into tasks on the local executor: shards, kill and resume, merge semantics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from pypet_rebuild import (
    Environment,
    HDF5StorageService,
    StorageError,
    Trajectory,
    WorkdirError,
    load_trajectory,
)
from pypet_rebuild.environment import SweepHandle, merge_workdir, resubmit
from pypet_rebuild.formats import trajfile
from pypet_rebuild.workdir import Workdir

from .conftest import children_of, cli, write_sweep


def check_values(path: Path, n_per_x: int, xs: tuple[float, ...] = (0.5, 1.5), fail_n: int = -1) -> None:
    """Every run exactly once with z == x * n, and the failing runs recorded as failed."""
    traj = load_trajectory(path)
    assert len(traj) == len(xs) * n_per_x
    x = np.array(traj.explored["x"])
    n = np.array(traj.explored["n"])
    status = traj.run_info()["status"]
    expect_fail = n == fail_n
    assert (status[expect_fail] == 2).all()
    assert (status[~expect_fail] == 1).all(), np.flatnonzero(status != 1)
    z = traj.get_from_runs("z")
    assert (z.mask == expect_fail).all()
    np.testing.assert_allclose(z.compressed(), (x * n)[~expect_fail])
    vec = traj.get_from_runs("vec")
    np.testing.assert_array_equal(vec[~expect_fail][:, 2], 2 * n[~expect_fail])


def make_traj(n: int = 150) -> Trajectory:
    traj = Trajectory("sq")
    traj.add_parameter("x", 0.0)
    traj.add_parameter("n", 0)
    traj.explore({"x": [0.5, 1.5] * n, "n": [i // 2 for i in range(2 * n)]})
    return traj


def simulate(traj: Trajectory) -> None:
    if traj.n == 7:
        raise ValueError("seven")
    traj.add_result("z", traj.x * traj.n)
    traj.add_result("vec", np.arange(3) * traj.n)


def test_local_sweep_of_hundreds_of_runs_python_api(tmp_path: Path) -> None:
    traj = make_traj(150)
    env = Environment(traj, storage=HDF5StorageService(tmp_path / "out.h5"), executor="local",
                      workdir=tmp_path / "wd", runs_per_task=23, max_parallel=2)
    env.run_exploration(simulate)
    loaded = load_trajectory(tmp_path / "out.h5")
    z = loaded.get_from_runs("z")
    x, n = np.array(loaded.explored["x"]), np.array(loaded.explored["n"])
    assert (z.mask == (n == 7)).all()
    np.testing.assert_allclose(z.compressed(), (x * n)[n != 7])
    # the live trajectory reads the merged file after the sweep
    assert traj.results.runs.run_00000004.z.value == 1.0
    assert len(list((tmp_path / "wd" / "shards").glob("*.h5"))) == 14
    assert (tmp_path / "wd" / "logs" / "task_000000.log").read_text().count("done") == 1


def test_function_from_main_is_pickled_by_value(tmp_path: Path) -> None:
    """A closure (like a function from a notebook) runs in local workers."""
    factor = 3.0

    def closure(traj: Trajectory) -> None:
        traj.add_result("z", traj.x * factor)

    traj = make_traj(4)
    env = Environment(traj, executor="local", workdir=tmp_path / "wd", runs_per_task=2)
    env.run_exploration(closure)
    assert traj.get_from_runs("z").tolist() == [1.5, 4.5] * 4


def test_workdir_refuses_another_sweep_and_points_at_resubmit(tmp_path: Path) -> None:
    Environment(make_traj(3), executor="local", workdir=tmp_path / "wd").submit(simulate).wait()
    with pytest.raises(WorkdirError, match="already holds this sweep.*resubmit"):
        Environment(make_traj(3), executor="local", workdir=tmp_path / "wd").submit(simulate)
    with pytest.raises(WorkdirError, match="holds another sweep"):
        Environment(make_traj(4), executor="local", workdir=tmp_path / "wd").submit(simulate)


def test_sigkill_mid_task_then_resubmit_runs_everything_once(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=200)
    wd = tmp_path / "wd"
    env = {"SWEEP_DELAY": "0.01"}
    cli("submit", str(sweep), "--workdir", str(wd), "--runs-per-task", "100", "--max-parallel", "2", cwd=tmp_path, env=env)
    # wait until each task has flushed some runs into its .partial shard, then kill the workers
    deadline = time.time() + 60
    partials: list[Path] = []
    while time.time() < deadline:
        # a .commit record appears with a task's first durable flush (the .partial alone may be empty)
        partials = list((wd / "shards").glob("*.partial.commit"))
        if len(partials) >= 2:
            break
        time.sleep(0.05)
    assert partials, "no task started"
    pids = _worker_pids(wd)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    handle = SweepHandle(Workdir(wd))
    handle.wait(timeout=60)
    st = handle.status()
    assert st.counts["ok"] < 400
    done_before = st.counts["ok"]
    assert resubmit(Workdir(wd))
    handle.wait(timeout=120)
    report = handle.merge()
    assert report.ok == 400 and report.missing == 0
    check_values(wd / "merged.h5", 200)
    logs = "".join(p.read_text() for p in (wd / "logs").glob("task_*.log"))
    assert "resuming" in logs
    assert done_before > 0


def _worker_pids(wd: Path) -> list[int]:
    """The forked workers of the local controller (children of the controller pid)."""
    jobs = [json.loads(line) for line in (wd / "jobs.jsonl").read_text().splitlines()]
    return children_of(jobs[-1]["pid"])


def test_merge_twice_is_idempotent_and_incremental(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    traj = make_traj(20)
    handle = Environment(traj, executor="local", workdir=tmp_path / "wd", runs_per_task=10).submit(simulate)
    handle.wait(timeout=60)
    wd = Workdir(tmp_path / "wd")
    shards = wd.shard_files()
    # merge only part of the shards first: incremental
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for s in shards[2:]:
        s.rename(hidden / s.name)
    first = merge_workdir(wd, tmp_path / "m.h5")
    assert first.ok == 18 and first.failed == 2 and first.missing == 20
    for s in hidden.iterdir():
        s.rename(wd.shards / s.name)
    opened: list[str] = []
    real_init = trajfile.ShardReader.__init__

    def counting_init(self: trajfile.ShardReader, path: Path, *args: object, **kwargs: object) -> None:
        opened.append(Path(path).name)
        real_init(self, path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trajfile.ShardReader, "__init__", counting_init)
    second = merge_workdir(wd, tmp_path / "m.h5")
    assert second.merged_shards == [s.name for s in shards[2:]] and len(second.skipped_shards) == 2
    # the shards the target already holds are known by name, size and mtime: never opened again
    assert set(opened) == {s.name for s in shards[2:]}
    monkeypatch.undo()
    third = merge_workdir(wd, tmp_path / "m.h5")
    assert third.merged_shards == [] and third.ok == 38 and third.failed == 2
    a = load_trajectory(tmp_path / "m.h5").get_from_runs("z")
    merge_workdir(wd, tmp_path / "fresh.h5")
    b = load_trajectory(tmp_path / "fresh.h5").get_from_runs("z")
    np.testing.assert_array_equal(a.filled(-1), b.filled(-1))


def test_concurrent_merges_serialise(tmp_path: Path) -> None:
    handle = Environment(make_traj(50), executor="local", workdir=tmp_path / "wd", runs_per_task=5).submit(simulate)
    handle.wait(timeout=60)
    wd = Workdir(tmp_path / "wd")
    errors: list[BaseException] = []

    def go() -> None:
        try:
            merge_workdir(wd, tmp_path / "m.h5")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    loaded = load_trajectory(tmp_path / "m.h5")
    assert int((loaded.run_info()["status"] == 1).sum()) == 98


def test_shards_of_another_sweep_are_refused(tmp_path: Path) -> None:
    for name, n in (("a", 3), ("b", 4)):
        Environment(make_traj(n), executor="local", workdir=tmp_path / name, runs_per_task=2).submit(simulate).wait()
    foreign = next((tmp_path / "b" / "shards").glob("*.h5"))
    target = tmp_path / "a" / "shards" / "task_000099.h5"
    target.write_bytes(foreign.read_bytes())
    with pytest.raises(StorageError, match="task_000099.h5: shard of another sweep"):
        merge_workdir(Workdir(tmp_path / "a"), tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


def test_failed_runs_are_retried_on_resubmit(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=10, fail_n=3)
    wd = tmp_path / "wd"
    cli("submit", str(sweep), "--workdir", str(wd), "--runs-per-task", "4", "--wait", cwd=tmp_path, check=False)
    st = SweepHandle(Workdir(wd)).status()
    assert st.counts["failed"] == 2 and st.counts["ok"] == 18
    # fix the bug, resubmit: only the task with failed runs goes again
    write_sweep(tmp_path, n=10, fail_n=-1)
    assert resubmit(Workdir(wd)) == [0, 3]  # runs 3 and 13 failed
    handle = SweepHandle(Workdir(wd))
    handle.wait(timeout=60)
    handle.merge()
    check_values(wd / "merged.h5", 10)


def test_partial_shard_that_is_garbage_is_set_aside(tmp_path: Path) -> None:
    traj = make_traj(4)
    handle = Environment(traj, executor="local", workdir=tmp_path / "wd", runs_per_task=4).submit(simulate)
    handle.wait(timeout=60)
    wd = Workdir(tmp_path / "wd")
    shard = wd.shard(0)
    partial = shard.with_name(shard.name + ".partial")
    shard.rename(partial)
    partial.write_bytes(b"\x89HDF garbage" * 10)
    assert resubmit(wd) == [0]
    handle.wait(timeout=60)
    assert shard.exists()
    assert list(wd.shards.glob("*.partial.broken-*"))
    rep = handle.merge()
    assert rep.ok == 8 and rep.missing == 0


def test_time_limit_on_local_executor(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=20)
    wd = tmp_path / "wd"
    cli("submit", str(sweep), "--workdir", str(wd), "--runs-per-task", "40", "--time", "0:02",
        cwd=tmp_path, env={"SWEEP_DELAY": "0.2"})
    handle = SweepHandle(Workdir(wd))
    st = handle.wait(timeout=60)
    assert st.tasks[0].state == "TIMEOUT"
    assert 0 < st.counts["ok"] < 40  # the worker flushed what it had on SIGTERM


def test_merged_file_is_a_valid_hdf5_after_merge(tmp_path: Path) -> None:
    handle = Environment(make_traj(5), executor="local", workdir=tmp_path / "wd").submit(simulate)
    handle.wait(timeout=60)
    handle.merge()
    with h5py.File(tmp_path / "wd" / "merged.h5", "r") as f:
        assert "trajectories/sq/results/runs/columns/z" in f


def test_a_second_worker_on_a_running_task_leaves_its_shard_alone(tmp_path: Path) -> None:
    """Resubmitting a task that still runs must not set its live shard aside or run it twice."""
    sweep = write_sweep(tmp_path, n=40)
    wd = tmp_path / "wd"
    cli("submit", str(sweep), "--workdir", str(wd), "--tasks", "1", cwd=tmp_path, env={"SWEEP_DELAY": "0.05"})
    partial = wd / "shards" / "task_000000.h5.partial"
    deadline = time.time() + 30
    while not partial.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    second = subprocess.run([sys.executable, "-m", "pypet_rebuild.worker", str(wd), "0"], capture_output=True,
                            text=True, timeout=60)
    assert second.returncode != 0
    assert "is open in another worker" in second.stderr
    handle = SweepHandle(Workdir(wd))
    handle.wait(timeout=60)
    assert not list((wd / "shards").glob("*broken*"))
    assert handle.merge().ok == 80


def test_resubmit_retries_failed_runs_of_an_unfinished_task(tmp_path: Path) -> None:
    """A task stopped after a failed run leaves both in its .partial; resubmit runs the failed
    one again (a plain restart of the same submission would keep it failed)."""
    (tmp_path / "stop.py").write_text(textwrap.dedent('''
        import os, signal
        from pypet_rebuild import Trajectory

        def make_trajectory():
            traj = Trajectory("stop")
            traj.add_parameter("n", 0)
            return traj

        space = {"n": list(range(6))}

        def simulate(traj):
            if traj.n == 1 and os.environ.get("BUGGY"):
                raise ValueError("bug")
            if traj.n == 3 and os.environ.get("BUGGY"):
                os.kill(os.getpid(), signal.SIGTERM)  # stop the task here, as SLURM would
            traj.add_result("z", traj.n * 2)
    '''))
    wd = tmp_path / "wd"
    cli("submit", "stop.py", "--workdir", str(wd), "--tasks", "1", "--wait", cwd=tmp_path, env={"BUGGY": "1"},
        check=False)
    st = SweepHandle(Workdir(wd)).status()
    assert st.tasks[0].shard == "task_000000.h5.partial" and st.counts["failed"] == 1
    cli("resubmit", str(wd), "--wait", cwd=tmp_path)
    traj = load_trajectory(wd / "merged.h5")
    assert traj.get_from_runs("z").tolist() == [0, 2, 4, 6, 8, 10]


def test_a_merge_with_nothing_new_leaves_the_target_untouched(tmp_path: Path) -> None:
    traj = make_traj(30)
    handle = Environment(traj, executor="local", workdir=tmp_path / "wd", runs_per_task=10).submit(simulate)
    handle.wait(timeout=60)
    wd = Workdir(tmp_path / "wd")
    target = tmp_path / "m.h5"
    first = merge_workdir(wd, target)
    before = (target.stat().st_mtime_ns, target.stat().st_ino, target.read_bytes())
    again = merge_workdir(wd, target)
    assert (target.stat().st_mtime_ns, target.stat().st_ino, target.read_bytes()) == before
    assert again.merged_shards == [] and again.skipped_shards == [s.name for s in wd.shard_files()]
    assert (again.ok, again.failed, again.n_runs, again.missing) == (first.ok, first.failed, first.n_runs, 0)
    # a shard that changed (a retry rewrote it) is looked at again, through the full path: in
    # place (the same file, never a copy), committed (no journal left)
    shard = wd.shard_files()[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    third = merge_workdir(wd, target)
    assert target.stat().st_ino == before[1] and third.ok == first.ok
    assert not (tmp_path / ".m.h5.journal").exists()
