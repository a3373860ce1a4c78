"""Reliability: faults (killed workers and merges, damaged shards, a full disk, concurrent merges),
the complete table of bad inputs, what loading a file may execute, and file permissions.

Every randomised test takes its seed from its test id (``[seed=17]``), so a failure replays with
``uv run pytest "tests/test_reliability.py::test_sigkill_worker_then_resubmit[seed=17]"``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pypet_rebuild import (
    Environment,
    HDF5StorageService,
    Pickled,
    PypetError,
    Result,
    StorageError,
    Trajectory,
    load_trajectory,
)
from pypet_rebuild.cli import main as cli_main
from pypet_rebuild.environment import SweepHandle, merge_workdir, resubmit
from pypet_rebuild.executors.local import LocalExecutor, _child
from pypet_rebuild.exploration import Plan
from pypet_rebuild.formats import shard as shards
from pypet_rebuild.status import sweep_status
from pypet_rebuild.taskstate import TaskState
from pypet_rebuild.workdir import Workdir

from .conftest import children_of

FORK = multiprocessing.get_context("fork")

# A sweep file: every run writes a column (z), a fixed-shape array column (vec) and, for some runs,
# a per-run dict (odd). In a worker process started with FLUSH_EVERY_RUN=1 it flushes its shard
# after every run, so that a kill at a random moment often lands in the middle of an HDF5 flush
# (the hardest moment to survive). Forked workers get the same from monkeypatching this process.
FLUSH_EVERY_RUN = "RELIABILITY_FLUSH_EVERY_RUN"
SWEEP = textwrap.dedent(
    """
    import os
    import time

    import numpy as np

    from pypet_rebuild import Trajectory
    from pypet_rebuild.formats import shard as shards

    if os.environ.get("RELIABILITY_FLUSH_EVERY_RUN"):
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


def write_rel_sweep(folder: Path, n: int, delay: float = 0.0, big: int = 0) -> Path:
    """The sweep file above, as ``relsweep.py`` in ``folder``."""
    path = folder / "relsweep.py"
    path.write_text(SWEEP % {"n": n, "delay": delay, "big": big})
    return path


def make_workdir(folder: Path, n: int, runs_per_task: int, executor: str = "local", delay: float = 0.0,
                 big: int = 0) -> Workdir:
    """A sweep directory of ``n`` runs whose function is ``relsweep.py:simulate`` (nothing submitted)."""
    sweep = write_rel_sweep(folder, n, delay, big)
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
def test_sigkill_local_executor_end_to_end(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real local executor (controller and workers); kill a worker, both, or the whole group."""
    rng = random.Random(1000 + seed)
    n = rng.randint(60, 100)
    monkeypatch.setenv(FLUSH_EVERY_RUN, "1")  # the local executor's processes inherit it
    wd = make_workdir(tmp_path, n, runs_per_task=(n + 1) // 2, delay=0.002)
    LocalExecutor(max_parallel=2).submit(wd, [0, 1])
    controller = wd.jobs()[-1].pid
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


# ---------------------------------------------------------------------------------------------
# Faults: damaged shards


def run_inline(wd: Workdir) -> None:
    """Run (or resubmit) every incomplete task of an inline workdir in this process."""
    resubmit(wd)
    assert all(t.complete for t in sweep_status(wd).tasks)


def kill_after_first_commit(wd: Workdir, task: int) -> None:
    """Run ``task`` on a forked worker and SIGKILL it once its shard holds committed runs."""
    proc = fork_worker(wd, task)
    commit = shards.commit_path(shards.partial_path(wd.shard(task)))
    deadline = time.monotonic() + 30
    while not commit.exists() and proc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert shards.partial_path(wd.shard(task)).exists()


DAMAGES: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "truncated": lambda data, rng: data[: len(data) // 2],
    "random bytes": lambda data, rng: rng.randbytes(len(data)),
    "empty": lambda data, rng: b"",
    "tail overwritten": lambda data, rng: data[:4096] + rng.randbytes(len(data) - 4096),
}


@pytest.mark.parametrize("where", ["final", "partial"])
@pytest.mark.parametrize(("damage", "seed"), [(d, i) for i, d in enumerate(DAMAGES)],
                         ids=[f"{d}-seed={i}" for i, d in enumerate(DAMAGES)])
def test_damaged_shard_is_named_never_crashes_and_is_recomputed(
        tmp_path: Path, damage: str, seed: int, where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "FLUSH_SECONDS", 0.0)
    wd = make_workdir(tmp_path, 30, runs_per_task=10, executor="inline", delay=0.005 if where == "partial" else 0.0)
    if where == "final":
        run_inline(wd)
        victim = wd.shard(1)
    else:
        for task in (0, 2):
            fork_worker(wd, task).join(30)
        kill_after_first_commit(wd, 1)
        victim = shards.partial_path(wd.shard(1))
    victim.write_bytes(DAMAGES[damage](victim.read_bytes(), random.Random(seed)))
    runner = CliRunner()

    # status names the file and what is wrong, from Python and from the CLI (exit 0)
    task1 = sweep_status(wd).tasks[1]
    assert task1.problem is not None and victim.name in task1.problem
    if where == "final":
        assert task1.state is TaskState.DAMAGED
    out = runner.invoke(cli_main, ["status", str(wd.path)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if ln.split()[:1] == ["1"])
    assert victim.name in line and "Traceback" not in out.output

    # merge takes every sound final shard and names the damaged one: API, then CLI (exit 1)
    report = merge_workdir(wd, tmp_path / "m.h5")
    assert report.ok == 20 and report.missing == 10
    if where == "final":
        assert [d.split(":")[0] for d in report.damaged_shards] == [victim.name]
        assert len(report.damaged_shards[0]) > len(victim.name) + 5  # says what is wrong
    else:
        assert report.damaged_shards == []  # a .partial is never merged
    out = runner.invoke(cli_main, ["merge", str(wd.path), "-o", str(tmp_path / "m2.h5")], catch_exceptions=False)
    assert "Traceback" not in out.output
    if where == "final":
        assert out.exit_code == 1 and f"damaged shard {victim.name}" in out.output, out.output
    else:
        assert out.exit_code == 0, out.output
    assert load_trajectory(tmp_path / "m2.h5").run_info()["status"].tolist() == [1] * 10 + [0] * 10 + [1] * 10

    # resubmit sets the damaged file aside and computes its runs again
    run_inline(wd)
    assert len(list(wd.shards.glob(f"{victim.name}.broken-*"))) == 1
    report = merge_workdir(wd, tmp_path / "m.h5")
    assert report.ok == 30 and report.damaged_shards == []
    check_merged(tmp_path / "m.h5", wd)


# ---------------------------------------------------------------------------------------------
# Faults: merges killed, merges at once, a merge while tasks still write

MERGE_RUNS, MERGE_TASKS = 400, 8


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A finished inline sweep of 400 runs in 8 shards with 16 KB per run (a merge has work to
    do), and how long merging it takes here."""
    base = tmp_path_factory.mktemp("finished")
    wd = make_workdir(base, MERGE_RUNS, runs_per_task=MERGE_RUNS // MERGE_TASKS, executor="inline", big=2000)
    run_inline(wd)
    t0 = time.monotonic()
    merge_workdir(wd, base / "timing.h5")
    return wd.path, time.monotonic() - t0


def copy_sweep(finished: Path, dest: Path) -> Workdir:
    """A copy of the finished sweep's workdir under ``dest``."""
    shutil.copytree(finished, dest / "wd")
    return Workdir(dest / "wd")


def cli_merge_process(wd: Workdir, target: Path, kill_at: str | None = None) -> subprocess.Popen[str]:
    """``pypet-hpc merge`` in a subprocess; ``kill_at``: it SIGKILLs itself at that named step."""
    env = {**os.environ, "PYPET_HPC_KILL_AT": kill_at} if kill_at else None
    return subprocess.Popen([sys.executable, "-m", "pypet_rebuild.cli", "merge", str(wd.path), "-o", str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def half_merged_sweep(finished: Path, tmp_path: Path) -> tuple[Workdir, Path, list[int]]:
    """A copy of the finished sweep whose first half is merged into ``out.h5`` (the runs it holds)."""
    wd = copy_sweep(finished, tmp_path)
    target = tmp_path / "out.h5"
    hidden = [wd.shard(t) for t in range(MERGE_TASKS // 2, MERGE_TASKS)]
    for s in hidden:
        s.rename(tmp_path / s.name)
    merge_workdir(wd, target)  # the previous, valid content: half of the runs
    for s in hidden:
        (tmp_path / s.name).rename(s)
    return wd, target, merged_runs(target)


def merged_runs(path: Path) -> list[int]:
    """The runs a trajectory file holds as ok, after checking their values."""
    traj = load_trajectory(path)
    ok = np.flatnonzero(traj.run_info()["status"] == 1)
    z = traj.get_from_runs("z")
    np.testing.assert_array_equal(z.data[ok], 3 * ok + 1)
    assert not z.mask[ok].any() and z.mask.sum() == MERGE_RUNS - len(ok)
    big = traj.get_from_runs("big")
    np.testing.assert_array_equal(big.data[ok][:, -1], ok.astype(float))
    return ok.tolist()


def merged_runs_of(path: Path) -> list[int]:
    """The runs a trajectory file holds as ok."""
    return np.flatnonzero(load_trajectory(path).run_info()["status"] == 1).tolist()


@pytest.mark.parametrize("seed", range(int(os.environ.get("RELIABILITY_MERGE_SEEDS", "10"))),
                         ids=lambda s: f"seed={s}")
def test_merge_killed_at_random_moment_leaves_old_or_new_target(
        tmp_path: Path, seed: int, finished_sweep: tuple[Path, float]) -> None:
    rng = random.Random(seed)
    wd, target, before = half_merged_sweep(finished_sweep[0], tmp_path)
    assert before == list(range(MERGE_RUNS // 2))

    proc = cli_merge_process(wd, target)
    deadline = time.monotonic() + 30  # wait until the merge really works (its journal exists)
    while not (tmp_path / ".out.h5.journal").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    delay = rng.uniform(0.0, 1.2 * finished_sweep[1])
    time.sleep(delay)
    proc.kill()
    proc.wait(10)

    after = merged_runs(target)  # opens and loads: never a broken file
    assert after in (before, list(range(MERGE_RUNS))), f"killed after {delay:.3f} s"
    report = merge_workdir(wd, target)
    assert report.ok == MERGE_RUNS
    assert merged_runs(target) == list(range(MERGE_RUNS))
    assert not list(tmp_path.glob(".out.h5.merging-*")), "a killed merge's temp file was left behind"
    assert not (tmp_path / ".out.h5.journal").exists()


@pytest.mark.parametrize("step", ["journal-open", "shard-merged", "closed", "journaled", "applying", "applied"])
def test_merge_killed_at_each_step_of_its_commit_leaves_the_old_target(
        tmp_path: Path, step: str, finished_sweep: tuple[Path, float]) -> None:
    """SIGKILL at each named step of an in-place merge (up to the journal's removal, the commit):
    whoever opens the target next (here `verify`) rolls the change back; values are the old ones."""
    wd, target, before = half_merged_sweep(finished_sweep[0], tmp_path)
    size = target.stat().st_size
    proc = cli_merge_process(wd, target, kill_at=step)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / ".out.h5.journal").exists(), "killed before its commit: the journal stays"
    out = CliRunner().invoke(cli_main, ["verify", str(target)], catch_exceptions=False)
    assert out.exit_code == 0 and "1 file checked, 0 damaged" in out.output, out.output
    assert not (tmp_path / ".out.h5.journal").exists() and target.stat().st_size == size
    assert merged_runs(target) == before
    report = merge_workdir(wd, target)
    assert (report.ok, len(report.merged_shards)) == (MERGE_RUNS, MERGE_TASKS // 2)
    assert merged_runs(target) == list(range(MERGE_RUNS))


@pytest.mark.parametrize("n_merges", [2, 4])
def test_merges_at_once_serialise(tmp_path: Path, n_merges: int, finished_sweep: tuple[Path, float]) -> None:
    """N merge processes of one workdir into one file: all succeed, every shard merged once."""
    wd = copy_sweep(finished_sweep[0], tmp_path)
    target = tmp_path / "out.h5"
    procs = [cli_merge_process(wd, target) for _ in range(n_merges)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err
    merged = [int(out.split("(")[1].split()[0]) for out, _ in outs]  # "(N new shard(s) merged)"
    assert sum(merged) == MERGE_TASKS and sorted(merged)[-1] == MERGE_TASKS
    assert merged_runs(target) == list(range(MERGE_RUNS))
    with h5py.File(target, "r") as f:
        assert len(json.loads(f["trajectories/rel/merge_log"].attrs["shard_ids"])) == MERGE_TASKS


def test_merge_while_tasks_write_takes_only_final_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "FLUSH_SECONDS", 0.0)
    wd = make_workdir(tmp_path, 100, runs_per_task=25, executor="inline", delay=0.04)
    for task in (0, 1):
        fork_worker(wd, task).join(30)
    writers = [fork_worker(wd, task) for task in (2, 3)]
    commits = [shards.commit_path(shards.partial_path(wd.shard(t))) for t in (2, 3)]
    deadline = time.monotonic() + 30
    while not all(c.exists() for c in commits) and time.monotonic() < deadline:
        time.sleep(0.005)
    first = merge_workdir(wd, tmp_path / "m.h5")
    assert all(w.is_alive() for w in writers), "the tasks ended before the merge: nothing was tested"
    assert first.merged_shards == ["task_000000.h5", "task_000001.h5"] and first.ok == 50
    assert merged_runs_of(tmp_path / "m.h5") == list(range(50))
    for w in writers:
        w.join(60)
        assert w.exitcode == 0
    second = merge_workdir(wd, tmp_path / "m.h5")
    assert second.merged_shards == ["task_000002.h5", "task_000003.h5"] and second.ok == 100
    check_merged(tmp_path / "m.h5", wd)



# ---------------------------------------------------------------------------------------------
# Faults: the disk fills up while a shard is written


def test_disk_full_while_writing_a_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker whose files may not grow past 2.5 MB (RLIMIT_FSIZE, as a full disk or quota would
    stop it) writes 100 KB per run: it fails with a clear line in its log, the complete task and
    the runs it committed are kept, and a resubmit without the limit completes the sweep."""
    monkeypatch.setenv(FLUSH_EVERY_RUN, "1")
    wd = make_workdir(tmp_path, 60, runs_per_task=30, big=12_500)
    fork_worker(wd, 0).join(60)
    complete = wd.shard(0).read_bytes()
    limit = 2_500_000

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with open(wd.task_log(1), "ab") as log:
        proc = subprocess.run([sys.executable, "-m", "pypet_rebuild.worker", str(wd.path), "1"],
                              stdout=log, stderr=log, preexec_fn=small_disk, timeout=120)
    text = wd.task_log(1).read_text()
    assert proc.returncode == 1, text
    assert "ERROR" in text and "task_000001.h5.partial cannot be written: File too large" in text
    committed = json.loads(shards.commit_path(shards.partial_path(wd.shard(1))).read_text())["run_info"]
    assert 0 < committed < 30
    assert wd.shard(0).read_bytes() == complete and not wd.shard(1).exists()
    st = sweep_status(wd)  # the cut-short .partial is named, not read: resubmit salvages it
    assert st.tasks[0].complete and st.counts["ok"] == 30
    assert st.tasks[1].problem is not None and "task_000001.h5.partial" in st.tasks[1].problem

    resubmit(wd)  # the local executor, without the limit
    SweepHandle(wd).wait(timeout=60)
    assert f"resuming task_000001.h5.partial: {committed} runs already done" in wd.task_log(1).read_text()
    report = merge_workdir(wd, tmp_path / "m.h5")
    assert report.ok == 60
    check_merged(tmp_path / "m.h5", wd)
    big = load_trajectory(tmp_path / "m.h5").get_from_runs("big")
    np.testing.assert_array_equal(big.data[:, ::1000], np.repeat(np.arange(60.0)[:, None], 13, axis=1))


# ---------------------------------------------------------------------------------------------
# Bad input: one table for the CLI and the Python API. Each case fails with one line naming the bad
# thing (CLI: exit code 2, no traceback; API: a PypetError whose message is one line), and nothing
# is submitted or written: every file under the test folder is as it was before.


def sweep_variant(tmp: Path, name: str, old: str, new: str) -> str:
    """A copy of the valid sweep file with ``old`` replaced by ``new``."""
    text = (tmp / "sweep.py").read_text()
    assert old in text
    (tmp / name).write_text(text.replace(old, new))
    return str(tmp / name)


def bad_input_world(tmp: Path) -> dict[str, str]:
    """The files the bad-input cases point at; returns names for ``str.format`` of CLI args."""
    from .conftest import write_sweep as write_cli_sweep

    write_cli_sweep(tmp, n=3)
    (tmp / "broken.py").write_text("def simulate(traj):\n    return (\n")
    (tmp / "notes.txt").write_text("not HDF5\n")
    (tmp / "a_file").write_text("a regular file\n")
    (tmp / "outdir").mkdir()
    with h5py.File(tmp / "plain.h5", "w") as f:
        f["x"] = 1
    traj = Trajectory("other")
    traj.add_parameter("secret", Pickled({"a": 1}))
    traj.add_parameter("k", 0)
    Environment(traj, storage=HDF5StorageService(tmp / "pickled.h5"), executor="inline",
                workdir=tmp / "other_wd").run_exploration(lambda t: None, space={"k": [1, 2]})
    with h5py.File(tmp / "pickled.h5", "r") as src, h5py.File(tmp / "newer.h5", "w") as dst:
        src.copy("trajectories", dst)
        dst["trajectories/other"].attrs["format_version"] = 99
    return {
        "tmp": str(tmp),
        "sweep": str(tmp / "sweep.py"),
        "empty_space": sweep_variant(tmp, "empty_space.py", 'space = {"x": [0.5, 1.5], "n": list(range(3))}',
                                     'space = {"x": []}'),
        "zipped": sweep_variant(tmp, "zipped.py", 'space = {"x": [0.5, 1.5], "n": list(range(3))}',
                                'space = {"x": [0.5, 1.5], "n": [1, 2, 3]}\ncombined = [("x", "n")]'),
        "unknown_in_space": sweep_variant(tmp, "unknown_in_space.py", 'space = {"x"', 'space = {"nope": [1], "x"'),
        "wrong_kind": sweep_variant(tmp, "wrong_kind.py", '"x": [0.5, 1.5]', '"x": ["fast", "slow"]'),
        "keyword_name": sweep_variant(tmp, "keyword_name.py", 'traj.add_parameter("n", 0)',
                                      'traj.add_parameter("lambda", 0)'),
        "dup_param": sweep_variant(tmp, "dup_param.py", 'traj.add_parameter("n", 0)',
                                   'traj.add_parameter("n", 0)\n    traj.add_parameter("n", 1)'),
        "maker_fails": sweep_variant(tmp, "maker_fails.py", 'traj = Trajectory("sq", comment="test sweep")',
                                     'traj = Trajectory("sq", comment=undefined_name)'),
        "no_maker": sweep_variant(tmp, "no_maker.py", "def make_trajectory():", "def make_other():"),
        "no_sim": sweep_variant(tmp, "no_sim.py", "def simulate(traj):", "def simulation(traj):"),
        "two_args": sweep_variant(tmp, "two_args.py", "def simulate(traj):", "def simulate(traj, other):"),
        "import_fails": sweep_variant(tmp, "import_fails.py", "import numpy as np", "import numpy_not_installed"),
    }


@dataclass(frozen=True)
class Bad:
    """One bad input: how to give it (CLI arguments, or a Python call) and what the message names."""

    name: str
    match: str
    cli: tuple[str, ...] = ()
    api: Callable[[Path], Any] | None = None


def _env(tmp: Path, **kw: Any) -> Environment:
    traj = Trajectory("sq")
    traj.add_parameter("x", 0.0)
    traj.add_parameter("n", 0)
    kw.setdefault("executor", "local")
    kw.setdefault("workdir", tmp / "wd_api")
    return Environment(traj, **kw)


def _sim(traj: Trajectory) -> None:
    traj.add_result("z", traj.x)


def _explore(space: dict[str, Any], combined: Any = None) -> Callable[[Path], Any]:
    return lambda tmp: _env(tmp).run_exploration(_sim, space=space, combined=combined)


def _name(name: str) -> Callable[[Path], Any]:
    return lambda tmp: Trajectory("t").add_parameter(name, 1)


BAD_INPUTS = [
    # the exploration space
    Bad("cli: empty value list in the space", "the list of explored values is empty", cli=("submit", "{empty_space}")),
    Bad("api: empty space", "the exploration space is empty", api=_explore({})),
    Bad("api: empty value list", "'x': the list of explored values is empty", api=_explore({"x": []})),
    Bad("cli: zipped group of unequal lengths", r"equal lengths \(x: 2, n: 3\)", cli=("submit", "{zipped}")),
    Bad("api: zipped group of unequal lengths", r"equal lengths \(x: 2, n: 1\)",
        api=_explore({"x": [1.0, 2.0], "n": [1]}, combined=[("x", "n")])),
    Bad("cli: unknown parameter in the space", "unknown parameter 'nope'", cli=("submit", "{unknown_in_space}")),
    Bad("cli: unknown parameter in -p", "unknown parameter 'nope'", cli=("submit", "{sweep}", "-p", "nope=1")),
    Bad("api: unknown parameter in the space", "unknown parameter 'nope'", api=_explore({"nope": [1]})),
    Bad("cli: explored values of the wrong kind (file)", "'fast' is a str, but the default 0.0 is a float",
        cli=("submit", "{wrong_kind}")),
    Bad("cli: explored values of the wrong kind (-p)", "'x' is not an int", cli=("submit", "{sweep}", "-p", "n=1,x")),
    Bad("api: explored values of the wrong kind", "explored value 'fast' is a str", api=_explore({"x": ["fast"]})),
    Bad("api: explored values not a list", "explored values must be a list", api=_explore({"x": 1.5})),
    Bad("cli: a parameter given twice in -p", "-p n is given twice", cli=("submit", "{sweep}", "-p", "n=1", "-p", "n=2")),
    Bad("cli: a duplicate parameter", "parameters.n already exists", cli=("submit", "{dup_param}")),
    Bad("api: a duplicate parameter", "parameters.x already exists",
        api=lambda tmp: _env(tmp).trajectory.add_parameter("x", 1.0)),
    Bad("api: a parameter twice in the space", "'x' appears twice", api=_explore({"x": [1.0], "parameters.x": [2.0]})),
    # names
    Bad("cli: a keyword as a name", "segment 'lambda' is a Python keyword", cli=("submit", "{keyword_name}")),
    Bad("api: a keyword as a name", "'class' is a Python keyword", api=_name("class")),
    Bad("api: a leading underscore", "segment '_x' starts with an underscore", api=_name("a._x")),
    Bad("api: an empty segment", "name 'a..b' has an empty segment", api=_name("a..b")),
    Bad("api: a name clashing with the API", "segment 'keys' clashes with a method", api=_name("traffic.keys")),
    Bad("api: a non-ASCII name", "segment 'größe' may only hold ASCII", api=_name("größe")),
    # values
    Bad("api: a result of an unsupported type", "result 'r': values of type object are not supported",
        api=lambda tmp: Result(name="r", value=object())),
    Bad("api: a parameter of an unsupported type", r"parameter 's': values of type set",
        api=lambda tmp: Trajectory("t").add_parameter("s", {1, 2})),
    Bad("api: dict keys that are not strings", "dict keys must be strings",
        api=lambda tmp: Trajectory("t").add_parameter("d", {1: 2})),
    Bad("api: an int beyond 64 bits", "does not fit in 64 bits", api=lambda tmp: Trajectory("t").add_parameter("i", 2**64)),
    # the sweep file and its function
    Bad("cli: a sweep file that does not import (syntax)", "broken.py does not import: SyntaxError", cli=("submit", "{tmp}/broken.py")),
    Bad("cli: a sweep file that does not import (missing module)",
        "does not import: ModuleNotFoundError: No module named 'numpy_not_installed'", cli=("submit", "{import_fails}")),
    Bad("cli: a missing sweep file", "missing.py: no such sweep file", cli=("submit", "{tmp}/missing.py")),
    Bad("cli: a sweep file without the function", "has no function 'simulate'", cli=("submit", "{no_sim}")),
    Bad("cli: --function names no function", "has no function 'nothing'", cli=("submit", "{sweep}", "--function", "nothing")),
    Bad("cli: a function with the wrong signature", "must take exactly one argument", cli=("submit", "{two_args}")),
    Bad("api: a function with the wrong signature", "must take exactly one argument",
        api=lambda tmp: _env(tmp).run_exploration(lambda a, b: None, space={"x": [1.0]})),
    Bad("cli: a sweep file without make_trajectory", "must define make_trajectory()", cli=("submit", "{no_maker}")),
    Bad("cli: make_trajectory() raises", "NameError: name 'undefined_name' is not defined", cli=("submit", "{maker_fails}")),
    # the workdir and the output
    Bad("cli: a workdir holding another sweep", r"holds another sweep \('other', 2 runs\)",
        cli=("submit", "{sweep}", "--workdir", "{tmp}/other_wd")),
    Bad("api: a workdir holding another sweep", r"holds another sweep \('other', 2 runs\)",
        api=lambda tmp: _env(tmp, workdir=tmp / "other_wd").run_exploration(_sim, space={"x": [1.0]})),
    # tests run as root, so chmod cannot make a folder unwritable: a path under a regular file
    # (and one in /proc) cannot be created by anyone
    Bad("cli: a workdir that cannot be written (under a file)", "cannot create the sweep directory .*a_file/wd",
        cli=("submit", "{sweep}", "--workdir", "{tmp}/a_file/wd")),
    Bad("cli: a workdir that cannot be written (/proc)", "cannot create the sweep directory /proc/pypet-hpc-wd",
        cli=("submit", "{sweep}", "--workdir", "/proc/pypet-hpc-wd")),
    Bad("api: a workdir that cannot be written", "cannot create the sweep directory .*a_file/wd",
        api=lambda tmp: _env(tmp, workdir=tmp / "a_file" / "wd").run_exploration(_sim, space={"x": [1.0]})),
    Bad("api: the local executor without a workdir", "needs a workdir=",
        api=lambda tmp: _env(tmp, workdir=None).run_exploration(_sim, space={"x": [1.0]})),
    Bad("cli: merge of a folder that is not a workdir", "is not a sweep directory", cli=("merge", "{tmp}/outdir")),
    Bad("api: merge of a folder that is not a workdir", "is not a sweep directory",
        api=lambda tmp: SweepHandle(Workdir(tmp / "outdir")).merge()),
    Bad("cli: status of a folder that is not a workdir", "is not a sweep directory", cli=("status", "{tmp}/nowhere")),
    Bad("cli: resubmit of a folder that is not a workdir", "is not a sweep directory", cli=("resubmit", "{tmp}/outdir")),
    Bad("cli: a merge output that is a directory", "outdir: is a directory",
        cli=("merge", "{tmp}/other_wd", "-o", "{tmp}/outdir")),
    Bad("api: a merge output that is a directory", "the merge target is a directory",
        api=lambda tmp: merge_workdir(Workdir(tmp / "other_wd"), tmp / "outdir")),
    Bad("cli: a merge output in a missing folder", "no such directory for the merge target",
        cli=("merge", "{tmp}/other_wd", "-o", "{tmp}/nowhere/m.h5")),
    Bad("cli: a merge output that is another file", "not a pypet-hpc trajectory file",
        cli=("merge", "{tmp}/other_wd", "-o", "{tmp}/notes.txt")),
    # sizes and limits
    Bad("cli: --runs-per-task 0", "--runs-per-task must be at least 1, got 0", cli=("submit", "{sweep}", "--runs-per-task", "0")),
    Bad("cli: --runs-per-task -3", "--runs-per-task must be at least 1, got -3", cli=("submit", "{sweep}", "--runs-per-task", "-3")),
    Bad("cli: --tasks 0", "--tasks must be at least 1, got 0", cli=("submit", "{sweep}", "--tasks", "0")),
    Bad("cli: --runs-per-task and --tasks", "not both", cli=("submit", "{sweep}", "--runs-per-task", "2", "--tasks", "2")),
    Bad("api: runs_per_task=0", "runs_per_task must be a whole number of at least 1, got 0",
        api=lambda tmp: _env(tmp, runs_per_task=0).run_exploration(_sim, space={"x": [1.0]})),
    Bad("api: n_tasks=-1", "n_tasks must be a whole number of at least 1, got -1",
        api=lambda tmp: _env(tmp, n_tasks=-1).run_exploration(_sim, space={"x": [1.0]})),
    Bad("cli: --max-parallel 0", "--max-parallel must be at least 1, got 0", cli=("submit", "{sweep}", "--max-parallel", "0")),
    Bad("cli: --max-parallel -2", "--max-parallel must be at least 1, got -2", cli=("submit", "{sweep}", "--max-parallel", "-2")),
    Bad("api: max_parallel=0", "max_parallel must be a whole number of at least 1, got 0",
        api=lambda tmp: _env(tmp, max_parallel=0)),
    Bad("cli: a time limit in a bad format", "bad time limit '1h'", cli=("submit", "{sweep}", "--time", "1h")),
    Bad("cli: a time limit of zero", "bad time limit '0:00'", cli=("submit", "{sweep}", "--time", "0:00")),
    Bad("api: a time limit in a bad format", "bad time limit 'soon'", api=lambda tmp: _env(tmp, time_limit="soon")),
    Bad("api: an unknown executor", "unknown executor 'cloud'", api=lambda tmp: _env(tmp, executor="cloud")),
    Bad("api: an unknown executor option", "executor 'local' has no option partition",
        api=lambda tmp: _env(tmp, partition="gpu")),
    # files to load
    Bad("cli: show a file that is not HDF5", "notes.txt: not an HDF5 file", cli=("show", "{tmp}/notes.txt")),
    Bad("api: load a file that is not HDF5", "notes.txt: not an HDF5 file", api=lambda tmp: load_trajectory(tmp / "notes.txt")),
    Bad("cli: show an HDF5 file without a trajectory", "HDF5 file without a trajectory", cli=("show", "{tmp}/plain.h5")),
    Bad("api: load an HDF5 file without a trajectory", "HDF5 file without a trajectory",
        api=lambda tmp: load_trajectory(tmp / "plain.h5")),
    Bad("cli: show a missing file", "missing.h5: no such file", cli=("show", "{tmp}/missing.h5")),
    Bad("api: load a missing file", "missing.h5: no such file", api=lambda tmp: load_trajectory(tmp / "missing.h5")),
    Bad("api: load a file of a newer format", "format version 99 is newer", api=lambda tmp: load_trajectory(tmp / "newer.h5")),
    Bad("api: a pickled value without allow_pickle", "parameters.secret holds a pickled value; load the file with allow_pickle=True",
        api=lambda tmp: load_trajectory(tmp / "pickled.h5")),
]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def bad_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("bad")
    return tmp, bad_input_world(tmp)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c.name for c in BAD_INPUTS])
def test_bad_input_fails_cleanly_and_writes_nothing(case: Bad, bad_world: tuple[Path, dict[str, str]],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    tmp, names = bad_world
    monkeypatch.chdir(tmp)  # the CLI's default workdir (runs/<name>) would land here
    before = snapshot(tmp)
    if case.cli:
        result = CliRunner().invoke(cli_main, [a.format(**names) for a in case.cli], catch_exceptions=False)
        assert result.exit_code == 2, result.output
        message = one_line(result.output)
    else:
        assert case.api is not None
        with pytest.raises(PypetError) as info:
            case.api(tmp)
        message = str(info.value)
        assert "\n" not in message, message
    assert re.search(case.match, message), message
    assert snapshot(tmp) == before, "something was written"
    assert not Path("/proc/pypet-hpc-wd").exists()


def test_bad_input_table_is_complete() -> None:
    """At least 30 cases, both ways in, every case named once."""
    assert len(BAD_INPUTS) >= 30
    assert len({c.name for c in BAD_INPUTS}) == len(BAD_INPUTS)
    assert {c.name.split(":")[0] for c in BAD_INPUTS} == {"cli", "api"}


def test_unsupported_result_in_a_run_is_recorded_not_fatal(tmp_path: Path) -> None:
    """A run that adds a result of an unsupported type fails alone, with the name and type."""
    traj = Trajectory("t")
    traj.add_parameter("k", 0)

    def simulate(t: Trajectory) -> None:
        t.add_result("r", object() if t.k == 1 else t.k)

    Environment(traj, storage=HDF5StorageService(tmp_path / "t.h5")).run_exploration(simulate, space={"k": [0, 1, 2]})
    info = load_trajectory(tmp_path / "t.h5").run_info()
    assert info["status"].tolist() == [1, 2, 1]
    assert info["error"][1] == ("UnsupportedValueError: result 'r': values of type object are not supported (bool, "
                                "int, float, complex, str, bytes, None, numpy scalars and arrays, lists, tuples, "
                                "dicts with string keys); wrap it in Pickled(...) to store it pickled")


# ---------------------------------------------------------------------------------------------
# Security: loading never runs code from the file unless allow_pickle=True


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_loading_never_unpickles_without_allow_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    traj = Trajectory("evil")
    traj.add_parameter("k", 0)
    # run 0 stores the payload per run; the other runs store a float under the same name, so the
    # merge folds the name into a column and meets the pickled item on its way
    def simulate(t: Trajectory) -> None:
        t.add_result("r", Pickled(Payload(marker)) if t.k == 0 else float(t.k))
        t.add_result("p", Pickled(Payload(marker)))

    env = Environment(traj, storage=HDF5StorageService(tmp_path / "runs.h5"), executor="inline",
                      workdir=tmp_path / "wd", runs_per_task=1)
    env.run_exploration(simulate, space={"k": [0, 1, 2, 3]})
    assert not marker.exists()
    loaded = load_trajectory(tmp_path / "runs.h5")  # run data is lazy: this reads no pickle
    assert loaded.get_from_runs("r")[1:].tolist() == [1.0, 2.0, 3.0]
    for touch in (lambda: loaded.results.runs.run_00000000.r.value, lambda: loaded.get_from_runs("p"),
                  lambda: loaded.results.runs.run_00000002.p.value):
        with pytest.raises(StorageError, match="holds a pickled value; load the file with allow_pickle=True"):
            touch()
    out = CliRunner().invoke(cli_main, ["show", str(tmp_path / "runs.h5")], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert not marker.exists()

    # a pickled trajectory-level parameter: load_trajectory itself refuses, naming it
    traj2 = Trajectory("evil2")
    traj2.add_parameter("payload", Pickled(Payload(marker)))
    Environment(traj2, storage=HDF5StorageService(tmp_path / "param.h5")).run(lambda t: None)
    with pytest.raises(StorageError, match="parameters.payload holds a pickled value"):
        load_trajectory(tmp_path / "param.h5")
    assert not marker.exists()

    # the payload is real: opting in runs it (this is what the refusal protects from)
    load_trajectory(tmp_path / "param.h5", allow_pickle=True)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# Security: files get the user's umask


def test_workdir_and_merged_file_follow_a_restrictive_umask(tmp_path: Path) -> None:
    from .conftest import write_sweep as write_cli_sweep

    sweep = write_cli_sweep(tmp_path, n=6)
    proc = subprocess.run([sys.executable, "-m", "pypet_rebuild.cli", "submit", str(sweep), "--executor", "local",
                           "--runs-per-task", "4", "--workdir", "wd", "--wait", "-o", "out.h5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: os.umask(0o077))
    assert proc.returncode == 0, proc.stderr
    paths = [tmp_path / "wd", *(tmp_path / "wd").rglob("*"), *tmp_path.glob("out.h5*")]
    assert len(paths) > 15 and tmp_path / "out.h5" in paths
    loose = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in paths
             if p.stat().st_mode & 0o077}
    assert not loose, f"group/other may access (umask was 077): {loose}"


def test_a_shard_whose_root_attributes_cannot_be_read_is_an_unreadable_shard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live .partial caught mid-flush can open but fail on its root attribute ("len not positive
    after adjustment for EOA", seen in CI): status must report it, not crash. The torn moment
    cannot be hit on purpose, so the attribute read fails here by hand."""
    path = tmp_path / "task_000000.h5"
    shards.create_shard(path, "hash", 0).close()
    real = shards.get_attr

    def torn(obj: Any, key: str, default: Any = None) -> Any:
        if key == "kind":
            raise OSError("Can't synchronously read data (len not positive after adjustment for EOA)")
        return real(obj, key, default)

    monkeypatch.setattr(shards, "get_attr", torn)
    with pytest.raises(StorageError, match="task_000000.h5: unreadable shard"):
        shards.ShardReader(path, live=True)
