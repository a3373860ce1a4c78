"""What a new user meets first: readable outputs, help that tells the truth, -v anywhere."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pypet_rebuild import Environment, HDF5StorageService, RunStatus, Trajectory, load_trajectory
from pypet_rebuild.cli import main

from .conftest import cli, write_sweep


def half(traj: Trajectory) -> None:
    if traj.x < 0:
        raise ValueError("negative")
    traj.add_result("y", traj.x * 2)


def small(tmp_path: Path) -> Trajectory:
    traj = Trajectory("half")
    traj.add_parameter("x", 0.0)
    traj.explore({"x": [-0.5, 0.5, 1.5]})
    Environment(traj, storage=HDF5StorageService(tmp_path / "half.h5"), workdir=tmp_path / "wd").run_exploration(half)
    return load_trajectory(tmp_path / "half.h5")


def test_runs_per_task_help_states_the_rule_the_local_executor_uses(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["submit", "--help"], terminal_width=200).output
    assert "local 4 tasks per worker" in out and "up to 100]" not in out.replace("slurm up to 100", "")
    sweep = write_sweep(tmp_path, n=1000)  # 2,000 runs
    dry = CliRunner().invoke(main, ["submit", str(sweep), "--max-parallel", "2", "--dry-run"]).output
    assert "2000 runs in 8 tasks of up to 250 runs" in dry  # 4 tasks for each of 2 workers


def test_run_status_is_readable(tmp_path: Path) -> None:
    t = small(tmp_path)
    info = t.run_info()
    assert list(info["status"]) == [RunStatus.FAILED, RunStatus.OK, RunStatus.OK]
    assert str(RunStatus(info["status"][0])) == "failed"
    pd = pytest.importorskip("pandas")
    frame = t.to_pandas()
    assert isinstance(frame["status"].dtype, pd.CategoricalDtype)
    assert list(frame["status"]) == ["failed", "ok", "ok"]


def test_repr_counts_per_run_results_and_status_is_short(tmp_path: Path) -> None:
    t = small(tmp_path)
    assert "results: 0 + 1 per run" in repr(t)
    from pypet_rebuild.environment import SweepHandle
    from pypet_rebuild.workdir import Workdir

    st = SweepHandle(Workdir(tmp_path / "wd")).status()
    assert len(repr(st)) < 250 and "ok 2, failed 1" in repr(st)
    assert "  task " in str(st) and "task_000000.h5" in str(st)


def test_failed_runs_and_dry_run_print_plain_values(tmp_path: Path) -> None:
    small(tmp_path)
    out = cli("status", "wd", "--failed", cwd=tmp_path).stdout
    assert "run 0 (x=-0.5), task 0: ValueError: negative" in out and "np.float64" not in out
    sweep = write_sweep(tmp_path, n=3)
    dry = cli("submit", str(sweep), "--max-parallel", "2", "--dry-run", cwd=tmp_path).stdout
    assert "executor: local (max_parallel=2)" in dry and "{" not in dry


def test_verbose_after_the_subcommand_and_normalised_paths(tmp_path: Path) -> None:
    small(tmp_path)
    (tmp_path / "p").mkdir()
    out = cli("status", "p/../wd", "-v", cwd=tmp_path)
    assert out.stdout.startswith(f"{tmp_path / 'wd'}: 3 runs in 1 task\n"), out.stdout
    sweep = write_sweep(tmp_path, n=2)
    sub = cli("submit", str(sweep), "--executor", "inline", "--workdir", "p/../wd2", "-v", cwd=tmp_path)
    assert "INFO pypet_rebuild.worker: task 0: done" in sub.stderr
    assert f"workdir: {tmp_path / 'wd2'}\n" in sub.stdout


def test_show_quotes_the_command_line_and_combine_says_files(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=2)
    cli("submit", str(sweep), "--workdir", "my wd", "--wait", "-o", "a.h5", cwd=tmp_path)
    shown = cli("show", "a.h5", cwd=tmp_path, env={"COLUMNS": "1000"}).stdout
    line = next(x for x in shown.splitlines() if "submitted by" in x)
    argv = shlex.split(line.split(": ", 1)[1])
    assert argv[argv.index("--workdir") + 1] == "my wd"
    narrow = cli("show", "a.h5", cwd=tmp_path, env={"COLUMNS": "60"}).stdout
    assert max(len(x) for x in narrow.splitlines() if " " in x.strip()) <= 60  # a word longer than 60 may stay
    assert "versions: python" in narrow
    both = cli("combine", "a.h5", "a.h5", "-o", "ab.h5", cwd=tmp_path).stdout
    assert "2 new files merged" in both and "shard" not in both


def test_status_says_runs_in_running_tasks(tmp_path: Path) -> None:
    small(tmp_path)
    out = cli("status", "wd", cwd=tmp_path).stdout
    assert "to do in running tasks 0" in out and "  running " not in out
    assert np.all(load_trajectory(tmp_path / "half.h5").run_info()["status"] != RunStatus.MISSING)


def test_status_merge_and_require_complete_agree_after_a_stopped_task(tmp_path: Path) -> None:
    import re

    from pypet_rebuild.environment import SweepHandle
    from pypet_rebuild.workdir import Workdir

    sweep = write_sweep(tmp_path, n=10)  # 20 runs in one task that hits its time limit
    cli("submit", str(sweep), "--workdir", "wd", "--runs-per-task", "20", "--time", "0:02",
        cwd=tmp_path, env={"SWEEP_DELAY": "0.2"})
    st = SweepHandle(Workdir(tmp_path / "wd")).wait(timeout=120)
    kept = st.counts["ok"]
    assert 0 < kept < 20 and st.counts["unmerged"] == kept
    status = cli("status", "wd", cwd=tmp_path).stdout
    assert f"ok {kept} " in status and f"{kept} finished run" in status and "of these" in status
    merged = cli("merge", "wd", cwd=tmp_path).stdout
    assert "0 ok, 0 failed, 20 missing of 20 runs" in merged
    assert f"not in the file: {kept} finished run" in merged  # the same number, said the same way
    strict = cli("merge", "wd", "--require-complete", cwd=tmp_path, check=False)
    assert strict.returncode == 1
    assert re.search(rf"20 of 20 runs are not complete \(0 failed, {kept} finished in unfinished shards, "
                     rf"{20 - kept} not run", strict.stderr), strict.stderr
    cli("resubmit", "wd", "--time", "10:00", "--wait", cwd=tmp_path)
    assert "20 ok, 0 failed, 0 missing of 20 runs" in cli("merge", "wd", cwd=tmp_path).stdout


def test_progress_bar_shows_counts_on_a_terminal_and_is_quiet_otherwise() -> None:
    import io
    import os
    import pty

    from pypet_rebuild.progress import Progress

    quiet = io.StringIO()
    bar = Progress(10, "runs", stream=quiet)
    bar.update_to(5, "5 ok, 0 failed")
    bar.close()
    assert quiet.getvalue() == ""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a bar on its terminal
        with open("/dev/tty", "w") as tty:
            loud = Progress(10, "runs", stream=tty)
            for i in range(11):
                loud.update_to(i, f"{i} ok, 0 failed")
            loud.close()
        os._exit(0)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    assert b"10/10" in out and b"10 ok, 0 failed" in out and b"[####" in out
