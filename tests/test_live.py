"""The live view: a sweep's workdir loads like a merged file, read from its shards while it runs."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from pypet_rebuild import Environment, RunStatus, Trajectory, load_trajectory
from pypet_rebuild.environment import merge_workdir
from pypet_rebuild.workdir import Workdir

from .conftest import cli, write_sweep


def make_traj(n: int) -> Trajectory:
    traj = Trajectory("live")
    traj.add_parameter("x", 0.0)
    traj.add_parameter("n", 0)
    traj.explore({"x": [0.5 * i for i in range(n)], "n": list(range(n))})
    return traj


def slow(traj: Trajectory) -> None:
    time.sleep(0.02)
    if traj.n % 7 == 3:
        raise ValueError(f"unlucky {traj.n}")
    traj.add_result("z", traj.x * traj.n)
    traj.add_result("vec", np.arange(3) * traj.n)
    traj.add_result("label", f"run {traj.n}")
    if traj.n % 5 == 0:
        traj.add_result("meta", {"n": traj.n, "tag": "five"})  # not a column: stored per run


def assert_same(live: Trajectory, merged: Trajectory) -> None:
    """Every value the analysis API gives is the same in both."""
    a, b = live.run_info(), merged.run_info()
    for col in ("status", "start", "end", "host", "job", "task", "error"):
        np.testing.assert_array_equal(a[col], b[col], err_msg=col)
    assert sorted(live.state.run_store.names("results")) == sorted(merged.state.run_store.names("results"))
    for name in ("z", "vec", "label", "meta"):
        x, y = live.get_from_runs(name), merged.get_from_runs(name)
        np.testing.assert_array_equal(np.ma.getmaskarray(x), np.ma.getmaskarray(y), err_msg=name)
        assert x.tolist() == y.tolist(), name
    assert live.find_idx("z", lambda z: z is not None and z > 100).tolist() == \
        merged.find_idx("z", lambda z: z is not None and z > 100).tolist()
    assert live.to_pandas().equals(merged.to_pandas())
    assert list(live.iter_runs()) == list(merged.iter_runs())
    for run in (0, 3, 10, len(live) - 1):
        for name in ("z", "label", "meta"):
            one, other = live.results.runs[f"run_{run:08d}"], merged.results.runs[f"run_{run:08d}"]
            assert (name in one) == (name in other), (run, name)
            if name in one:
                assert np.array_equal(one[name].value, other[name].value), (run, name)


def test_a_running_sweep_loads_from_its_workdir_with_a_growing_number_of_runs(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    n = 120
    handle = Environment(make_traj(n), executor="local", workdir=wd, runs_per_task=30,
                         max_parallel=2).submit(slow)
    seen = []
    while not handle.status().finished:
        traj = load_trajectory(wd)  # no merge
        done = int(np.count_nonzero(traj.run_info()["status"] != RunStatus.MISSING))
        z = traj.get_from_runs("z") if "z" in traj.state.run_store.names("results") else None
        if z is not None:  # what the view holds is right, whatever it holds
            ok = np.flatnonzero(~z.mask)
            np.testing.assert_allclose(z.compressed(), 0.5 * ok * ok)
        seen.append(done)
        time.sleep(0.2)
    handle.wait()
    final = load_trajectory(wd)
    seen.append(int(np.count_nonzero(final.run_info()["status"] != RunStatus.MISSING)))
    assert seen[-1] == n
    assert any(0 < s < n for s in seen), seen  # runs seen while tasks were still running
    assert seen == sorted(seen), seen  # never fewer than before
    report = merge_workdir(Workdir(wd), wd / "merged.h5")
    assert report.ok + report.failed == n
    assert_same(final, load_trajectory(wd / "merged.h5"))


def test_a_damaged_shard_is_named_once_and_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wd = tmp_path / "wd"
    Environment(make_traj(40), executor="local", workdir=wd, runs_per_task=10, max_parallel=2).submit(slow).wait()
    victim = wd / "shards" / "task_000001.h5"
    victim.write_bytes(b"not hdf5 at all")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        traj = load_trajectory(wd)
        z = traj.get_from_runs("z")
        traj.get_from_runs("label")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "task_000001.h5" in warnings[0], warnings
    status = traj.run_info()["status"]
    assert (status[10:20] == RunStatus.MISSING).all()
    assert (status[:10] != RunStatus.MISSING).all() and (status[20:] != RunStatus.MISSING).all()
    assert z.mask[10:20].all()


def test_the_committed_runs_of_a_partial_shard_are_in_the_view(tmp_path: Path) -> None:
    """A task stopped half-way leaves a .partial shard; the view holds exactly its committed runs."""
    wd = tmp_path / "wd"
    Environment(make_traj(20), executor="local", workdir=wd, runs_per_task=10, max_parallel=1).submit(slow).wait()
    final = wd / "shards" / "task_000000.h5"
    merged = load_trajectory(wd)
    final.rename(final.with_name(final.name + ".partial"))  # as if its task had not ended: no commit record
    traj = load_trajectory(wd)
    assert (traj.run_info()["status"][:10] == RunStatus.MISSING).all()  # nothing committed: nothing shown
    assert (traj.run_info()["status"][10:] == merged.run_info()["status"][10:]).all()


def test_show_prints_a_running_sweeps_workdir(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=10)
    cli("submit", str(sweep), "--workdir", "wd", "--executor", "local", "--wait", cwd=tmp_path)
    out = cli("show", "wd", cwd=tmp_path).stdout
    assert "runs: missing 0, ok 20, failed 0" in out, out
    assert "results.runs.z: column float" in out, out
    assert "live view of 2 shards" in out or "live view of" in out, out
