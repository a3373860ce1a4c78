"""pypet-hpc clean: shards go only once their runs are in a verified merged file; status, show
and the workdir's trajectory still work afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from pypet_rebuild import Environment, Trajectory, load_trajectory
from pypet_rebuild.clean import clean_workdir
from pypet_rebuild.environment import merge_workdir
from pypet_rebuild.errors import CleanRefused
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir

from .conftest import cli, write_sweep


def simulate(traj: Trajectory) -> None:
    if traj.n == 5:
        raise ValueError("unlucky 5")
    traj.add_result("z", traj.x * traj.n)


def run_sweep(tmp_path: Path, n: int = 40) -> Workdir:
    traj = Trajectory("c")
    traj.add_parameter("x", 0.0)
    traj.add_parameter("n", 0)
    traj.explore({"x": [0.5 * i for i in range(n)], "n": list(range(n))})
    wd = tmp_path / "wd"
    Environment(traj, executor="inline", workdir=wd, runs_per_task=10).submit(simulate).wait()
    return Workdir(wd)


def test_clean_refuses_before_any_merge_and_removes_nothing(tmp_path: Path) -> None:
    wd = run_sweep(tmp_path)
    with pytest.raises(CleanRefused, match="no merged file; nothing removed; run pypet-hpc merge"):
        clean_workdir(wd)
    assert len(wd.shard_files()) == 4


def test_clean_refuses_while_a_shard_holds_runs_the_merged_file_lacks(tmp_path: Path) -> None:
    wd = run_sweep(tmp_path)
    late = wd.shard(2)
    aside = tmp_path / late.name
    late.rename(aside)  # as if its task finished after the merge
    merge_workdir(wd, wd.default_output)
    aside.rename(late)
    with pytest.raises(CleanRefused, match=r"1 of 4 shards hold runs not in .*task_000002\.h5.*nothing removed") as exc:
        clean_workdir(wd)
    assert "\n" not in str(exc.value)
    assert len(wd.shard_files()) == 4 and wd.cleaned() is None
    merge_workdir(wd, wd.default_output)  # merged now: clean goes ahead
    assert len(clean_workdir(wd).removed) == 4


def test_clean_refuses_a_damaged_merged_file(tmp_path: Path) -> None:
    wd = run_sweep(tmp_path)
    merge_workdir(wd, wd.default_output)
    with h5py.File(wd.default_output) as f:  # where the stored values of the column z lie
        found: list[h5py.Dataset] = []
        f.visititems(lambda name, obj: found.append(obj) if name.endswith("columns/z") else None)
        info = found[0].id.get_chunk_info(0)
        offset, size = info.byte_offset, info.size
    with open(wd.default_output, "r+b") as fh:  # overwrite them: the checksum no longer matches
        fh.seek(offset)
        fh.write((bytes(range(1, 251)) * (size // 250 + 1))[:size])  # (not 0xff: fletcher32 cannot tell 0xffff from 0)
    with pytest.raises(CleanRefused, match="nothing removed"):
        clean_workdir(wd)
    assert len(wd.shard_files()) == 4


def test_clean_refuses_an_unfinished_shard(tmp_path: Path) -> None:
    wd = run_sweep(tmp_path)
    merge_workdir(wd, wd.default_output)
    wd.shard(3).rename(wd.shard(3).with_name(wd.shard(3).name + ".partial"))
    with pytest.raises(CleanRefused, match=r"1 unfinished shard\(s\) \(task_000003\.h5\.partial\)"):
        clean_workdir(wd)
    assert len(wd.shard_files()) == 3


def test_after_clean_status_show_and_the_workdir_trajectory_still_work(tmp_path: Path) -> None:
    wd = run_sweep(tmp_path)
    before = sweep_status(wd)
    merged = merge_workdir(wd, wd.default_output)
    assert merged.ok == 39 and merged.failed == 1
    report = clean_workdir(wd)
    assert sorted(report.removed) == [f"task_{t:06d}.h5" for t in range(4)] and report.freed_bytes > 0
    assert wd.shard_files() == [] and (wd.path / "manifest.json").exists() and wd.skeleton.exists()
    assert (wd.path / "provenance.json").exists()
    after = sweep_status(wd)
    assert after.counts == before.counts and after.finished
    assert [t.state for t in after.tasks] == [t.state for t in before.tasks]
    traj = load_trajectory(wd.path)  # no shards left: the merged file
    np.testing.assert_allclose(traj.get_from_runs("z").compressed(), [0.5 * i * i for i in range(40) if i != 5])
    again = merge_workdir(wd, wd.default_output)  # nothing new: the file keeps every run
    assert again.ok == 39 and again.failed == 1
    assert len(clean_workdir(wd).removed) == 0  # nothing left to remove: fine, not an error


def test_clean_on_the_command_line(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=10)
    cli("submit", str(sweep), "--workdir", "wd", "--executor", "local", "--runs-per-task", "5", "--wait",
        cwd=tmp_path)
    refused = cli("clean", "wd", "-o", "other.h5", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "no merged file" in refused.stderr
    out = cli("clean", "wd", cwd=tmp_path).stdout  # --wait merged into wd/merged.h5
    assert "removed 4 shards" in out, out
    assert not list((tmp_path / "wd" / "shards").glob("task_*"))
    status = json.loads(cli("status", "wd", "--json", cwd=tmp_path).stdout)
    assert status["counts"]["ok"] == 20, status["counts"]
    shown = cli("show", "wd", cwd=tmp_path).stdout
    assert "runs: missing 0, ok 20, failed 0" in shown and "shards removed by clean" in shown, shown
    assert "clean" in cli("--help", cwd=tmp_path).stdout
