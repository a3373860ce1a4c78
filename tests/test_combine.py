"""Joining two trajectory files (pypet's f_merge) and growing a sweep (pypet's f_expand)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pypet_rebuild import (
    Environment,
    ExplorationError,
    HDF5StorageService,
    Trajectory,
    load_trajectory,
)
from pypet_rebuild.combine import combine
from pypet_rebuild.storage import get_attr, open_h5, trajectory_group


def run_sweep(path: Path, xs: list[int], trials: list[int] | None = None, extra: str | None = None) -> Path:
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    traj.add_parameter("trial", 0)
    if extra:
        traj.add_parameter(extra, 1.0)

    def simulate(t: Trajectory) -> None:
        t.add_result("z", t.x * 10 + t.trial)
        t.add_result("vec", np.arange(4) * t.x)
        if t.x == 2:
            t.add_result("only2", "two")
        if t.x == 3:
            raise ValueError("three")

    points = {"x": xs} if trials is None else {"x": xs, "trial": trials}
    traj.explore(points)
    Environment(traj, storage=HDF5StorageService(path)).run_exploration(simulate)
    return path


def test_combine_renumbers_runs_and_records_the_merge(tmp_path: Path) -> None:
    a = run_sweep(tmp_path / "a.h5", [1, 2, 3])
    b = run_sweep(tmp_path / "b.h5", [2, 4])
    report = combine([a, b], tmp_path / "ab.h5")
    assert report.ok == 4 and report.failed == 1
    traj = load_trajectory(tmp_path / "ab.h5")
    assert traj.explored["x"] == [1, 2, 3, 2, 4]
    assert traj.get_from_runs("z").tolist() == [10, 20, None, 20, 40]
    assert traj.get_from_runs("vec")[4].tolist() == [0, 4, 8, 12]
    assert traj.results.runs.run_00000003.only2.value == "two"
    assert "ValueError: three" in traj.run_info()["error"][2]
    with open_h5(tmp_path / "ab.h5") as f:
        record = json.loads(get_attr(trajectory_group(f), "merged_from"))
    assert [r["runs"] for r in record] == [3, 2] and record[1]["offset"] == 3


def test_combine_drops_duplicates_and_renumbers_trials(tmp_path: Path) -> None:
    a = run_sweep(tmp_path / "a.h5", [1, 2], trials=[0, 1])
    b = run_sweep(tmp_path / "b.h5", [1, 2], trials=[0, 1])
    combine([a, b], tmp_path / "trials.h5", trial_parameter="trial")
    traj = load_trajectory(tmp_path / "trials.h5")
    assert traj.explored["trial"] == [0, 1, 2, 3]
    run_sweep(tmp_path / "c.h5", [1, 5])
    combine([tmp_path / "c.h5", run_sweep(tmp_path / "d.h5", [5, 6])], tmp_path / "dedup.h5", remove_duplicates=True)
    assert load_trajectory(tmp_path / "dedup.h5").explored["x"] == [1, 5, 6]


def test_combine_refuses_different_parameter_sets(tmp_path: Path) -> None:
    a = run_sweep(tmp_path / "a.h5", [1])
    b = run_sweep(tmp_path / "b.h5", [1], extra="gain")
    with pytest.raises(ExplorationError, match=r"only in the second: \['gain'\]"):
        combine([a, b], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_trajectory_expand_appends_only_new_points() -> None:
    traj = Trajectory("e")
    traj.add_parameter("x", 0)
    traj.add_parameter("y", 0.0)
    traj.explore({"x": [1, 2], "y": [0.5, 0.5]})
    assert traj.expand({"x": [2, 3, 4], "y": [0.5, 0.5, 1.5]}) == 2
    assert traj.explored == {"x": [1, 2, 3, 4], "y": [0.5, 0.5, 0.5, 1.5]}
    with pytest.raises(ExplorationError, match="expand must give the explored parameters"):
        traj.expand({"x": [9]})


def _grid_traj() -> Trajectory:
    traj = Trajectory("grow")
    traj.add_parameter("x", 0)
    traj.add_parameter("y", 0)
    return traj


def _product(t: Trajectory) -> None:
    t.add_result("z", t.x * t.y)


def test_expand_a_finished_sweep_runs_only_the_new_points(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    env = Environment(_grid_traj(), executor="local", workdir=wd, runs_per_task=4)
    env.run_exploration(_product, space={"x": [1, 2, 3], "y": [10, 20, 30]})  # 9 runs, tasks of 4
    first = load_trajectory(wd / "merged.h5")
    starts = first.run_info()["start"].copy()
    inode = (wd / "merged.h5").stat().st_ino
    # grow both axes; the 9 old points keep their indices, 7 new ones follow
    env = Environment(_grid_traj(), executor="local", workdir=wd)
    handle = env.expand(_product, space={"x": [1, 2, 3, 4], "y": [10, 20, 30, 40]})
    handle.wait(timeout=60)
    report = handle.merge()
    assert report.ok == 16 and report.missing == 0
    # the merged file grows in place: only the shards of the tasks that ran (2, again, and 3)
    assert report.merged_shards == ["task_000002.h5", "task_000003.h5"], report.merged_shards
    assert (wd / "merged.h5").stat().st_ino == inode
    grown = load_trajectory(wd / "merged.h5")
    x, y = np.array(grown.explored["x"]), np.array(grown.explored["y"])
    assert list(zip(x[:9], y[:9], strict=True)) == list(zip(first.explored["x"], first.explored["y"], strict=True))
    assert sorted(zip(x[9:], y[9:], strict=True)) == [(1, 40), (2, 40), (3, 40), (4, 10), (4, 20), (4, 30), (4, 40)]
    np.testing.assert_array_equal(grown.get_from_runs("z"), x * y)
    np.testing.assert_array_equal(grown.run_info()["start"][:8], starts[:8])  # full old tasks did not run again
    # expanding by points the sweep already has submits nothing
    jobs = (wd / "jobs.jsonl").read_text()
    Environment(_grid_traj(), executor="local", workdir=wd).expand(_product, space={"x": [1], "y": [10]})
    assert (wd / "jobs.jsonl").read_text() == jobs


def test_expand_refuses_a_different_sweep(tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    Environment(_grid_traj(), executor="local", workdir=wd).run_exploration(_product, space={"x": [1, 2], "y": [1]})
    other = _grid_traj()
    other.add_parameter("gain", 1.0)
    with pytest.raises(Exception, match="other parameters"):
        Environment(other, executor="local", workdir=wd).expand(_product, space={"x": [3], "y": [1]})
