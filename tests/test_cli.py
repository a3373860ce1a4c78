"""The CLI end to end (subprocess) and its error paths (CliRunner)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pypet_rebuild import load_trajectory
from pypet_rebuild.cli import main

from .conftest import ROOT, cli, write_sweep


def test_submit_wait_status_show_end_to_end(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=30, fail_n=4)
    out = cli("submit", str(sweep), "--runs-per-task", "7", "-p", "x=1,2,3", "--wait", "-o", "res.h5",
              cwd=tmp_path, check=False)
    assert out.returncode == 1, out.stderr  # two runs failed
    assert "87 ok, 3 failed, 0 missing of 90 runs" in out.stdout
    traj = load_trajectory(tmp_path / "res.h5")
    assert traj.explored["x"][:3] == [1.0, 1.0, 1.0]
    status = cli("status", "runs/sq", "--json", cwd=tmp_path)
    data = json.loads(status.stdout)
    assert data["counts"]["ok"] == 87 and data["counts"]["failed"] == 3 and len(data["tasks"]) == 13
    failed = cli("status", "runs/sq", "--failed", cwd=tmp_path).stdout
    assert "3 runs failed with ValueError: unlucky 4 (runs 4, 34, 64)" in failed  # one group, one message as it is
    assert failed.count("Traceback") == 1
    shown = cli("show", "res.h5", cwd=tmp_path).stdout
    assert "results.runs.z: column float" in shown and "x: float" in shown and "[explored]" in shown
    assert "provenance" in shown and "pypet-hpc 0.1.0" in shown
    logs = cli("logs", "runs/sq", "--run", "4", cwd=tmp_path).stdout
    assert "unlucky 4" in logs and "task_000000.log" in logs
    again = cli("merge", "runs/sq", "-o", "res.h5", cwd=tmp_path).stdout
    assert "(0 new shards merged)" in again
    assert "nothing to resubmit" not in cli("resubmit", "runs/sq", cwd=tmp_path).stdout


def test_dry_run_submits_nothing(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=10)
    out = cli("submit", str(sweep), "--dry-run", "--tasks", "3", cwd=tmp_path).stdout
    assert "20 runs in 3 tasks of up to 7 runs" in out and "nothing submitted" in out
    assert not (tmp_path / "runs").exists()


def test_help_texts_end_with_an_example() -> None:
    runner = CliRunner()
    for cmd in ([], ["submit"], ["status"], ["merge"], ["resubmit"], ["cancel"], ["show"], ["logs"], ["combine"]):
        out = runner.invoke(main, [*cmd, "--help"])
        assert out.exit_code == 0
        assert "Example: pypet-hpc" in out.output, cmd


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "{sweep}", "-p", "nope=1"], "unknown parameter 'nope'"),
        (["submit", "{sweep}", "-p", "n=1,x"], "'x' is not an int"),
        (["submit", "{sweep}", "-p", "n"], "write -p name=value1"),
        (["submit", "{sweep}", "-p", "n=1", "-p", "n=2"], "given twice"),
        (["submit", "{sweep}", "--runs-per-task", "0"], "--runs-per-task must be at least 1"),
        (["submit", "{sweep}", "--max-parallel", "0"], "--max-parallel must be at least 1"),
        (["submit", "{sweep}", "--time", "soon"], "bad time limit 'soon'"),
        (["submit", "{sweep}", "--partition", "debug"], "executor 'local' has no option partition"),
        (["submit", "{tmp}/missing.py"], "no such sweep file"),
        (["submit", "{bad}"], "does not import: SyntaxError"),
        (["submit", "{sweep}", "--function", "nothing"], "has no function 'nothing'"),
        (["submit", "{twoargs}"], "must take exactly one argument"),
        (["merge", "{tmp}"], "is not a sweep directory"),
        (["status", "{tmp}/nowhere"], "is not a sweep directory"),
        (["show", "{tmp}/missing.h5"], "no such file"),
        (["show", "{sweep}"], "not an HDF5 file"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    sweep = write_sweep(tmp_path, n=3)
    (tmp_path / "bad.py").write_text("def simulate(traj):\n  return (\n")
    (tmp_path / "twoargs.py").write_text(write_sweep(tmp_path, n=2, name="_t.py").read_text()
                                         .replace("def simulate(traj):", "def simulate(traj, other):"))
    fmt = {"sweep": str(sweep), "tmp": str(tmp_path), "bad": str(tmp_path / "bad.py"),
           "twoargs": str(tmp_path / "twoargs.py")}
    result = CliRunner().invoke(main, [a.format(**fmt) for a in args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "runs").exists()


def test_submit_expand_runs_only_new_points(tmp_path: Path) -> None:
    sweep = write_sweep(tmp_path, n=6)
    cli("submit", str(sweep), "--workdir", "wd", "--runs-per-task", "4", "--wait", cwd=tmp_path)
    before = load_trajectory(tmp_path / "wd" / "merged.h5")
    out = cli("submit", str(sweep), "--workdir", "wd", "--expand", "-p", "n=0,1,2,3,4,5,6,7", "--wait",
              cwd=tmp_path).stdout
    assert "added 4 runs" in out and "submitted tasks 3\n" in out  # 12 old runs in tasks 0-2, 4 new in task 3
    assert "(1 new shard merged)" in out, out  # the merged file grows in place; old shards are not merged again
    after = load_trajectory(tmp_path / "wd" / "merged.h5")
    assert after.explored["n"][:12] == before.explored["n"] and sorted(after.explored["n"][12:]) == [6, 6, 7, 7]
    assert after.get_from_runs("z").count() == 16
    again = cli("submit", str(sweep), "--workdir", "wd", "--expand", cwd=tmp_path).stdout
    assert "added 0 runs" in again and "submitted tasks none" in again


SHORT = '''
from pypet_rebuild import Trajectory

def make_trajectory():
    traj = Trajectory("short")
    traj.add_parameter("noise.sigma", 0.5)
    traj.add_parameter("a.gain", 1)
    traj.add_parameter("b.gain", 2)
    return traj

space = {"noise.sigma": [0.1]}

def simulate(traj):
    traj.add_result("y", traj.sigma)
'''


def test_p_takes_unique_short_names_like_the_python_api(tmp_path: Path) -> None:
    (tmp_path / "short.py").write_text(SHORT)
    runner = CliRunner()
    out = runner.invoke(main, ["submit", str(tmp_path / "short.py"), "-p", "sigma=1,2", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert "noise.sigma (2 values)" in out.output  # it replaced the file's noise.sigma, not added to it
    amb = runner.invoke(main, ["submit", str(tmp_path / "short.py"), "-p", "gain=1,2", "--dry-run"])
    assert amb.exit_code == 2 and "'gain' is ambiguous: it could be a.gain, b.gain" in amb.output
    from pypet_rebuild import Trajectory

    traj = Trajectory("t")
    traj.add_parameter("noise.sigma", 0.5)
    traj.explore({"sigma": [1.0, 2.0]})
    assert traj.explored == {"noise.sigma": [1.0, 2.0]}


COMMANDS = ["", "submit", "status", "merge", "resubmit", "cancel", "logs", "show", "combine"]


@pytest.fixture(scope="module")
def examples_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of examples/ and a finished sweep in runs/mysweep (merged)."""
    base = tmp_path_factory.mktemp("help")
    shutil.copytree(ROOT / "examples", base / "examples")
    cli("submit", "examples/first_steps.py", "--workdir", "runs/mysweep", "--wait", cwd=base)
    return base


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_example_runs(command: str, examples_copy: Path, tmp_path: Path) -> None:
    out = CliRunner().invoke(main, [*command.split(), "--help"])
    assert out.exit_code == 0
    examples = re.findall(r"^\s*Example: pypet-hpc (.+)$", out.output, re.MULTILINE)
    assert len(examples) == 1, out.output
    where = tmp_path / "w"
    if command in ("", "submit"):  # a first sweep: only the examples
        shutil.copytree(examples_copy / "examples", where / "examples")
    else:
        shutil.copytree(examples_copy, where)
    if command == "combine":
        for name in ("week1.h5", "week2.h5", "week3.h5"):
            shutil.copyfile(where / "runs" / "mysweep" / "merged.h5", where / name)
    proc = cli(*shlex.split(examples[0]), cwd=where, check=False)
    assert proc.returncode == 0, f"pypet-hpc {examples[0]}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
