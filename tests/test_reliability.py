"""Reliability: faults (killed workers and merges, damaged shards, a full disk, concurrent merges),
the complete table of bad inputs, what loading a file may execute, and file permissions.

Every randomised test takes its seed from its test id (``[seed=17]``), so a failure replays with
``uv run pytest "tests/test_reliability.py::test_sigkill_worker_then_resubmit[seed=17]"``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

from pypet_rebuild import (
    Trajectory,
    load_trajectory,
    shards,
)
from pypet_rebuild.environment import SweepHandle, merge_workdir, resubmit
from pypet_rebuild.executors.local import LocalExecutor, _child
from pypet_rebuild.exploration import Plan
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir

FORK = multiprocessing.get_context("fork")

# A sweep file: every run writes a column (z), a fixed-shape array column (vec) and, for some runs,
# a per-run dict (odd). It flushes its shard after every run, so that a kill at a random moment
# often lands in the middle of an HDF5 flush (the hardest moment to survive).
SWEEP = textwrap.dedent(
    """
    import time

    import numpy as np

    from pypet_rebuild import Trajectory, shards

    shards.FLUSH_SECONDS = 0.0
    DELAY = %(delay)r
    BIG = %(big)d

    def make_trajectory():
        traj = Trajectory("rel")
        traj.add_parameter("x", 0)
        return traj

    space = {"x": list(range(%(n)d))}

    def simulate(traj):
        if DELAY:
            time.sleep(DELAY)
        traj.add_result("z", 3 * traj.x + 1)
        traj.add_result("vec", np.full(4, traj.x, dtype=np.int64))
        if traj.x %% 7 == 0:
            traj.add_result("odd", {"x": [traj.x], "s": "run %%d" %% traj.x})
        if BIG:
            traj.add_result("big", np.full(BIG, float(traj.x)))
    """
)


def write_sweep(folder: Path, n: int, delay: float = 0.0, big: int = 0) -> Path:
    path = folder / "relsweep.py"
    path.write_text(SWEEP % {"n": n, "delay": delay, "big": big})
    return path


def make_workdir(folder: Path, n: int, runs_per_task: int, executor: str = "local", delay: float = 0.0,
                 big: int = 0) -> Workdir:
    """A sweep directory of ``n`` runs whose function is ``relsweep.py:simulate`` (nothing submitted)."""
    sweep = write_sweep(folder, n, delay, big)
    traj = Trajectory("rel")
    traj.add_parameter("x", 0)
    traj.explore({"x": list(range(n))})
    wd = Workdir(folder / "wd")
    options: dict[str, Any] = {"max_parallel": 2, "time_limit": None} if executor == "local" else {}
    wd.create(traj, Plan.make(n, runs_per_task), f"{sweep}:simulate", {"name": executor, "options": options})
    return wd


def fork_worker(wd: Workdir, task: int, retry_failed: bool = False) -> Any:
    """Start task ``task`` exactly as the local executor does: a forked process running its worker entry."""
    proc = FORK.Process(target=_child, args=(str(wd.path), task, retry_failed, str(wd.task_log(task))))
    proc.start()
    return proc


def check_merged(path: Path, wd: Workdir) -> None:
    """Every run of the sweep exactly once in the merged file, ok, with the values it computed."""
    plan = wd.manifest().plan
    n = plan.n_runs
    traj = load_trajectory(path)
    x = np.array(traj.explored["x"])
    np.testing.assert_array_equal(x, np.arange(n))
    info = traj.run_info()
    assert (info["status"] == 1).all(), f"runs not ok: {np.flatnonzero(info['status'] != 1).tolist()}"
    np.testing.assert_array_equal(info["task"], np.arange(n) // plan.runs_per_task)
    assert not any(info["error"]), "a run carries an error"
    z = traj.get_from_runs("z")
    assert not z.mask.any()
    np.testing.assert_array_equal(z.data, 3 * x + 1)
    vec = traj.get_from_runs("vec")
    np.testing.assert_array_equal(vec.data, np.repeat(x[:, None], 4, axis=1))
    odd = traj.get_from_runs("odd")
    assert np.flatnonzero(~odd.mask).tolist() == list(range(0, n, 7))
    for r in range(0, n, 7):
        assert odd[r] == {"x": [r], "s": f"run {r}"}
    # each run's last row lives in exactly one final shard
    owners: dict[int, int] = {}
    for shard in wd.shard_files():
        with h5py.File(shard, "r") as f:
            for r in set(f["run_info/idx"][()].tolist()):
                assert r not in owners, f"run {r} in two shards"
                owners[r] = int(f.attrs["task"])
    assert sorted(owners) == list(range(n))


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def one_line(text: str) -> str:
    """The output of a failed command: exactly one line, no traceback."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert "Traceback" not in text, text
    assert len(lines) == 1, text
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Faults: workers killed with SIGKILL


SEEDS = int(os.environ.get("RELIABILITY_SEEDS", "24"))  # raise it for a soak run


@pytest.mark.parametrize("seed", range(SEEDS), ids=lambda s: f"seed={s}")
def test_sigkill_worker_then_resubmit(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tasks on forked local workers; SIGKILL one or both at a random moment; resubmit; merge."""
    rng = random.Random(seed)
    n = rng.randint(40, 100)
    monkeypatch.setattr(shards, "FLUSH_SECONDS", 0.0)  # inherited by the forked workers
    wd = make_workdir(tmp_path, n, runs_per_task=(n + 1) // 2, executor="inline", delay=0.001)
    procs = [fork_worker(wd, task) for task in range(2)]
    time.sleep(rng.uniform(0.0, 0.3))
    victims = rng.choice([[0], [1], [0, 1]])
    for v in victims:
        if procs[v].is_alive():
            os.kill(procs[v].pid, signal.SIGKILL)
    for p in procs:
        p.join(30)
    st = sweep_status(wd)  # reads the shards the kill left behind, never raises
    assert st.counts["ok"] + st.counts["missing"] == n
    todo = resubmit(wd)  # the inline executor: run_task in this process, same shard code
    assert set(todo) == {t.task for t in st.tasks if not t.complete}
    assert not list(wd.shards.glob("*.partial")) and all(t.complete for t in sweep_status(wd).tasks)
    report = merge_workdir(wd, tmp_path / "merged.h5")
    assert report.ok == n and report.missing == 0
    check_merged(tmp_path / "merged.h5", wd)


@pytest.mark.parametrize("seed", range(3), ids=lambda s: f"seed={s}")
def test_sigkill_local_executor_end_to_end(tmp_path: Path, seed: int) -> None:
    """The real local executor (controller and workers); kill a worker, both, or the whole group."""
    rng = random.Random(1000 + seed)
    n = rng.randint(60, 100)
    wd = make_workdir(tmp_path, n, runs_per_task=(n + 1) // 2, delay=0.002)
    LocalExecutor(max_parallel=2).submit(wd, [0, 1])
    controller = wd.jobs()[-1]["pid"]
    deadline = time.monotonic() + 30
    while not children_of(controller) and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.25))
    how = ["one worker", "both workers", "controller and workers"][seed % 3]
    if how == "controller and workers":
        os.killpg(controller, signal.SIGKILL)
    else:
        for pid in children_of(controller)[: 1 if how == "one worker" else 2]:
            os.kill(pid, signal.SIGKILL)
    handle = SweepHandle(wd)
    handle.wait(timeout=60)  # must not hang when the controller is gone
    resubmit(wd)
    handle.wait(timeout=60)
    report = handle.merge()
    assert report.ok == n and report.missing == 0, (how, report.summary())
    check_merged(wd.default_output, wd)
