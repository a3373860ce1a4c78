"""Failing runs: one error repeated stops the sweep early; failures are grouped by signature."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pypet_rebuild import Environment, Trajectory
from pypet_rebuild.errors import PypetError, SweepStopped
from pypet_rebuild.failures import WINDOW, FailureRule, FailureWatch, group_failures, signature
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir

from .conftest import cli

TYPO = textwrap.dedent(
    '''
    from pypet_rebuild import Trajectory

    def make_trajectory():
        traj = Trajectory("typo")
        traj.add_parameter("x", 0)
        return traj

    space = {"x": list(range(2000))}

    def simulate(traj):
        traj.add_result("y", traj.x * sigmaa)  # the typo: a NameError in every run
    '''
)


def typo(traj: Trajectory) -> None:
    traj.add_result("y", traj.x * undefined_name)  # type: ignore[name-defined]  # noqa: F821


def sweep_of(n: int) -> Trajectory:
    traj = Trajectory("typo")
    traj.add_parameter("x", 0)
    traj.explore({"x": list(range(n))})
    return traj


def test_signature_masks_numbers() -> None:
    assert signature("KeyError", "'x_17' at 3.5e-3") == signature("KeyError", "'x_18' at 0.25")
    assert signature("KeyError", "'x_17'") != signature("ValueError", "'x_17'")


def test_rule_parses_counts_fractions_and_off() -> None:
    assert FailureRule.parse("40").max_count(2000) == 40
    assert FailureRule.parse("0.1").max_count(2000) == 200
    assert str(FailureRule.parse("off")) == "off" and not FailureRule.parse("off").same_error
    with pytest.raises(PypetError, match="max failures"):
        FailureRule.parse("many")


def test_watch_trips_on_one_repeated_error_only() -> None:
    watch = FailureWatch(FailureRule(), 2000)
    reasons = [watch.record(False, "NameError", f"name 'x{i}' is not defined") for i in range(WINDOW)]
    assert reasons[:-1] == [None] * (WINDOW - 1) and "NameError" in str(reasons[-1])
    mixed = FailureWatch(FailureRule(), 2000)
    assert not any(mixed.record(False, "E", "a" if i % 2 else "b") for i in range(100))
    some_ok = FailureWatch(FailureRule(), 2000)
    some_ok.record(True)
    assert not any(some_ok.record(False, "E", "a") for i in range(100))
    limited = FailureWatch(FailureRule(5), 2000)
    assert [limited.record(False, "E", "a" if i % 2 else "b") is not None for i in range(6)] == [False] * 5 + [True]


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_a_typo_stops_a_2000_run_sweep_after_a_few_dozen_failures(tmp_path: Path, executor: str) -> None:
    options = {"max_parallel": 2} if executor == "local" else {}
    env = Environment(sweep_of(2000), executor=executor, workdir=tmp_path / "wd", **options)
    with pytest.raises(SweepStopped, match="first 20 finished runs all failed with NameError"):
        env.run_exploration(typo)
    wd = Workdir(tmp_path / "wd")
    st = sweep_status(wd)
    assert st.finished
    assert WINDOW <= st.counts["failed"] <= 3 * WINDOW, st.counts
    assert st.counts["ok"] == 0
    assert wd.stopped() is not None


def test_max_failures_off_runs_every_run(tmp_path: Path) -> None:
    env = Environment(sweep_of(60), workdir=tmp_path / "wd", max_failures="off")
    env.run_exploration(typo)
    assert sweep_status(Workdir(tmp_path / "wd")).counts["failed"] == 60


def test_cli_stops_early_exits_1_and_resubmit_clears_the_stop(tmp_path: Path) -> None:
    (tmp_path / "typo.py").write_text(TYPO)
    proc = cli("submit", "typo.py", "--executor", "local", "--max-parallel", "2", "--workdir", "wd", "--wait",
               cwd=tmp_path, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "stopped early: the first" in proc.stderr and "Traceback" not in proc.stderr
    st = sweep_status(Workdir(tmp_path / "wd"))
    assert st.counts["failed"] <= 3 * WINDOW and st.finished
    status = cli("status", "wd", cwd=tmp_path)
    assert "stopped early" in status.stdout
    proc = cli("submit", "typo.py", "--workdir", "wd2", "--max-failures", "off", "--tasks", "2",
               "-p", "x=1,2,3", cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    inline = cli("submit", "typo.py", "--executor", "inline", "--workdir", "wd3", cwd=tmp_path, check=False)
    assert inline.returncode == 1 and len(inline.stderr.strip().splitlines()) == 1, inline.stderr
    assert inline.stderr.startswith("Error: stopped early") and "pypet-hpc status" in inline.stderr
    bad = cli("submit", "typo.py", "--max-failures", "lots", "--dry-run", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "max failures 'lots'" in bad.stderr


def flaky(traj: Trajectory) -> None:
    if traj.x % 3 == 0:
        raise KeyError(f"x_{traj.x}")
    if traj.x % 3 == 1:
        raise ValueError("bad value")
    traj.add_result("y", traj.x)


def test_status_failed_groups_2000_identical_failures(tmp_path: Path) -> None:
    Environment(sweep_of(2000), workdir=tmp_path / "wd", max_failures="off").submit(typo)
    out = cli("status", "wd", "--failed", cwd=tmp_path).stdout
    assert "2000 failed runs in 1 group" in out, out
    assert out.count("Traceback") == 1
    assert len(out.splitlines()) < 40
    assert "2000 runs failed with NameError: name 'undefined_name' is not defined (runs 0, 1, 2, 3, 4 ..." in out
    one = cli("status", "wd", "--run", "17", cwd=tmp_path).stdout
    assert "run 17 (x=17), task 0: NameError" in one and one.count("Traceback") == 1
    every = cli("status", "wd", "--all", cwd=tmp_path).stdout
    assert every.count("Traceback") == 2000


def test_groups_mask_numbers_and_warn_once_per_group(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        Environment(sweep_of(30), workdir=tmp_path / "wd").run_exploration(flaky)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("10 runs failed with KeyError: 'x_#' (runs 0, 3, 6, 9, 12 ... (10 in all))")
    out = cli("status", "wd", "--failed", cwd=tmp_path).stdout
    assert "20 failed runs in 2 groups" in out and out.count("Traceback") == 2


def test_a_group_of_one_message_shows_it_unmasked() -> None:
    same = [{"run": r, "type": "AttributeError", "message": "no node named 'mylink2'"} for r in (4, 1)]
    other = [{"run": r, "type": "KeyError", "message": f"'x_{r}'"} for r in (2, 5)]
    summaries = [g.summary() for g in group_failures(same + other)]
    assert summaries == ["2 runs failed with AttributeError: no node named 'mylink2' (runs 1, 4)",
                         "2 runs failed with KeyError: 'x_#' (runs 2, 5)"]


def test_fail_on_error_raises_runs_failed_with_the_runs(tmp_path: Path) -> None:
    from pypet_rebuild.errors import RunsFailed

    env = Environment(sweep_of(9), workdir=tmp_path / "wd", fail_on_error=True)
    with pytest.raises(RunsFailed, match="6 of 9 runs failed with 2 distinct errors") as info:
        env.run_exploration(flaky)
    assert sorted(r["run"] for r in info.value.failed) == [0, 1, 3, 4, 6, 7]


def test_a_stopped_inline_sweep_leaves_no_temporary_workdir(tmp_path: Path) -> None:
    from pypet_rebuild import HDF5StorageService

    env = Environment(sweep_of(100), storage=HDF5StorageService(tmp_path / "out.h5"))
    with pytest.raises(SweepStopped):
        env.run_exploration(typo)
    assert not list(tmp_path.glob(".pypet-sweep-*"))
