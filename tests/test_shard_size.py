"""The compact parts of a shard (coded host and job, the counts a finished task records) give
back exactly what the runs were, and a stale record never wins over the file."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import h5py

from pypet_rebuild import Environment, Trajectory, load_trajectory
from pypet_rebuild.environment import merge_workdir
from pypet_rebuild.formats.shard import CountsCache, rows_per_chunk
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir


def simulate(traj: Trajectory) -> None:
    if traj.n == 3:
        raise ValueError("three")
    traj.add_result("z", 2.0 * traj.n)


def run(tmp_path: Path) -> Workdir:
    traj = Trajectory("s")
    traj.add_parameter("n", 0)
    traj.explore({"n": list(range(20))})
    Environment(traj, executor="inline", workdir=tmp_path / "wd", runs_per_task=10).submit(simulate).wait()
    return Workdir(tmp_path / "wd")


def test_host_and_job_read_back_as_words_in_the_live_view_and_the_merged_file(tmp_path: Path) -> None:
    wd = run(tmp_path)
    with h5py.File(wd.shard(0)) as f:
        assert f["run_info/host"].dtype.kind == "i"  # stored as codes
        assert json.loads(f["run_info/host"].attrs["labels"]) == [socket.gethostname()]
    merge_workdir(wd, wd.default_output)
    for traj in (load_trajectory(wd.path), load_trajectory(wd.default_output)):
        info = traj.run_info()
        assert set(info["host"].tolist()) == {socket.gethostname()}
        assert all(isinstance(j, str) and j for j in info["job"].tolist())


def test_status_reads_a_shard_again_when_its_recorded_counts_are_for_another_file(tmp_path: Path) -> None:
    wd = run(tmp_path)
    assert sweep_status(wd).counts["ok"] == 19
    cache = wd.shards / CountsCache.NAME
    assert cache.exists() and not (wd.shards / CountsCache.DONE).exists()  # the finished tasks' lines folded in
    st = wd.shard(0).stat()
    stale = {wd.shard(0).name: [st.st_size, st.st_mtime_ns - 1, 0, 10]}  # another mtime: not this file
    cache.write_text(json.dumps(stale))
    (wd.shards / CountsCache.DONE).write_text("not json\n")  # a torn line is skipped
    status = sweep_status(wd)
    assert (status.counts["ok"], status.counts["failed"]) == (19, 1)


def test_a_small_task_writes_small_chunks_and_a_small_file(tmp_path: Path) -> None:
    assert [rows_per_chunk(n) for n in (None, 1, 10, 100, 1000, 5000)] == [1024, 16, 16, 128, 1024, 1024]
    wd = run(tmp_path)  # 10 runs per task
    shard = wd.shard_files()[0]
    with h5py.File(shard) as f:
        assert f.attrs["rows_per_chunk"] == 16
        assert f["columns/results.z/values"].chunks == (16,) and f["run_info/status"].chunks == (16,)
    # 1024-row chunks and HDF5's oldest object format made such a shard about 70 KB
    assert shard.stat().st_size < 45_000
    z = load_trajectory(merge_workdir(wd, tmp_path / "m.h5").target).get_from_runs("z")
    assert z.count() == 19 and z[19] == 38.0
