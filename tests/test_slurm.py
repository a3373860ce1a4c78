"""The slurm executor against the real local SLURM cluster (slurm/start.sh): array jobs, array
cutting, cancel, time limit, requeue, failures, dry run and bad input. No mocks.

Every test needs the cluster: without it they skip with one line (or fail when CI=true).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from filelock import FileLock, Timeout

from pypet_rebuild import Environment, HDF5StorageService, Trajectory, load_trajectory
from pypet_rebuild.cli import main as cli_main
from pypet_rebuild.environment import resubmit
from pypet_rebuild.errors import SubmissionError
from pypet_rebuild.executors import slurm as slurm_module
from pypet_rebuild.executors.slurm import (
    SlurmExecutor,
    expand_job_ids,
    parse_state_table,
    resolve_states,
)
from pypet_rebuild.formats.records import JobRecord
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir

from .conftest import ROOT, cli, write_sweep

pytestmark = pytest.mark.slurm


def _sh(*cmd: str, timeout: float = 10) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def node_states() -> dict[str, str]:
    """Every node of the cluster and its state: {"localhost": "idle"}, or node1..nodeN."""
    out = _sh("sinfo", "-h", "-N", "-o", "%N %T")
    rows = [line.split() for line in (out.stdout if out else "").splitlines()]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def layout_args() -> list[str]:
    """The start.sh arguments of the running cluster's layout ([] or ["--nodes", "N"])."""
    nodes = node_states()
    return [] if list(nodes) in ([], ["localhost"]) else ["--nodes", str(len(nodes))]


def cluster_problem() -> str | None:
    """None when the local cluster is usable (the checks of slurm/status.sh), else what is wrong."""
    ping = _sh("scontrol", "ping")
    if ping is None or "is UP" not in ping.stdout:
        return "slurmctld is not answering"
    nodes = node_states()
    if not nodes:
        return "no node is registered"
    bad = [f"node {name} is {state!r}" for name, state in nodes.items()
           if state not in ("idle", "mixed", "allocated", "completing")]
    if bad:
        return ", ".join(bad)
    acct = _sh("sacctmgr", "-n", "-P", "list", "cluster", "format=cluster")
    if acct is None or "localci" not in acct.stdout.split():
        return "slurmdbd accounting does not answer"
    sacct = _sh("sacct", "-n", "-X", "-j", "1")
    if sacct is None or sacct.returncode != 0:
        return "sacct does not answer"
    return None


def hold_cluster(problem: str | None, what: str, start: str) -> Iterator[None]:
    """Skip (or fail when CI=true) with ``problem``; else hold the cluster for this module: one
    test restarts it (cancelling every job), so concurrent test sessions take turns."""
    if problem is not None:
        message = f"{what} not usable ({problem}); start it with: {start}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    lock = FileLock(Path(tempfile.gettempdir()) / "pypet-hpc-slurm-tests.lock")
    try:
        lock.acquire(timeout=900)
    except Timeout:
        pytest.fail(f"another test session has held {lock.lock_file} for 15 minutes")
    try:
        yield
    finally:
        lock.release()


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster() -> Iterator[None]:
    """The cluster is up, and this session has it to itself."""
    yield from hold_cluster(cluster_problem(), "local SLURM cluster", "sudo bash slurm/start.sh")


def scheduler_view() -> str:
    """What squeue and sinfo say now, for a test that gave up waiting on the cluster."""
    out = []
    for cmd in (["squeue", "-o", "%i %j %T %r %N"], ["sinfo", "-N", "-o", "%N %T %E"]):
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            out.append(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}")
        except (OSError, subprocess.TimeoutExpired) as e:
            out.append(f"$ {' '.join(cmd)}: {e}")
    return "\n".join(out)


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}\n{scheduler_view()}")
        time.sleep(poll)


def wait_finished(wd: Path, timeout: float = 60) -> Any:
    def done() -> Any:
        st = sweep_status(Workdir(wd))
        return st if st.finished else None

    return wait_for(done, timeout, f"the sweep in {wd} to finish")


def submit(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Path:
    wd = tmp / "W"
    cli("submit", "sweep.py", "--executor", "slurm", "--workdir", str(wd), "--job-name", "pht-test", *args,
        cwd=tmp, env=env)
    return wd


def check_merged(path: Path, n_per_x: int, fail_n: int = -1) -> None:
    """Every run exactly once, z == x * n and vec[2] == 2 n; runs with n == fail_n failed."""
    traj = load_trajectory(path)
    assert len(traj) == 2 * n_per_x
    x, n = np.array(traj.explored["x"]), np.array(traj.explored["n"])
    status = traj.run_info()["status"]
    fails = n == fail_n
    assert (status[fails] == 2).all()
    assert (status[~fails] == 1).all(), np.flatnonzero(status[~fails] != 1)
    z = traj.get_from_runs("z")
    assert (z.mask == fails).all()
    np.testing.assert_allclose(z.compressed(), (x * n)[~fails])
    np.testing.assert_array_equal(traj.get_from_runs("vec")[~fails][:, 2], 2 * n[~fails])


def shard_runs(wd: Path) -> list[int]:
    """Every run index written to any shard (a run done twice would appear twice)."""
    out: list[int] = []
    for path in sorted((wd / "shards").glob("task_*.h5*")):
        with h5py.File(path, "r", locking=False) as f:
            out.extend(f["run_info/idx"][()].tolist())
    return out


def jobs(wd: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (wd / "jobs.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------------------


def test_job_id_parsing() -> None:
    assert expand_job_ids("123_[4-6,9%2]") == ["123_4", "123_5", "123_6", "123_9"]
    assert expand_job_ids("123_7") == ["123_7"] and expand_job_ids("123") == ["123"]
    assert expand_job_ids("123.batch") == []
    table = parse_state_table("5_0|COMPLETED\n5_[1-2]|PENDING\n6|CANCELLED by 0\n")
    assert table == {"5_0": "COMPLETED", "5_1": "PENDING", "5_2": "PENDING", "6": "CANCELLED"}


def test_bare_array_rows_and_single_jobs_resolve_to_task_states() -> None:
    """Which task states a sacct/squeue table tells. Right after sbatch sacct has no row, or one
    bare row for the array (``661|PENDING``), or rows for some tasks only: the tasks without a
    row of their own are asked of squeue. A bare row is the array's meta record (one task of
    unknown index; it was seen COMPLETED while its siblings ran), so it counts for the other
    tasks only when squeue cannot be asked (``bare_arrays``), and only if PENDING or RUNNING."""
    wanted = {"661_0", "661_1", "661_2"}
    every = dict.fromkeys(wanted, "PENDING")
    bare = parse_state_table("661|PENDING\n")
    assert bare == {"661": "PENDING"}
    assert resolve_states(wanted, bare) == {}  # nothing of their own: the caller asks squeue
    assert resolve_states(wanted, bare, bare_arrays=True) == every
    both = parse_state_table("661_2|RUNNING\n661|PENDING\n")
    assert resolve_states(wanted, both) == {"661_2": "RUNNING"}
    assert resolve_states(wanted, both, bare_arrays=True) == {**every, "661_2": "RUNNING"}
    for text in ("661_[0-2]|PENDING", "661_[0-2%3]|PENDING", "661_[0,1-2]|REQUEUED", "661_[0-1]|PENDING\n661_2|PENDING"):
        assert resolve_states(wanted, parse_state_table(text)) == every, text
    rows = parse_state_table("661_0|COMPLETED\n661_[1-2%1]|PENDING\n661|RUNNING\n")
    assert resolve_states(wanted, rows) == {**every, "661_0": "COMPLETED"}
    # a finished bare row is one task's end, not the array's
    for word in ("COMPLETED", "FAILED", "CANCELLED by 0", "TIMEOUT"):
        assert resolve_states(wanted, parse_state_table(f"661|{word}"), bare_arrays=True) == {}, word
    # a plain single job (index 0) is its bare row, whatever it says, in sacct and in squeue
    assert resolve_states({"700_0"}, parse_state_table("700|CANCELLED by 0"), single={"700"}) == {"700_0": "CANCELLED"}
    assert resolve_states({"700_0"}, parse_state_table("700|OUT_OF_MEMORY"), single={"700"}) == {"700_0": "OUT_OF_MEMORY"}
    assert resolve_states({"700_0"}, parse_state_table("700|COMPLETED")) == {}  # not known as single
    # other jobs' rows, job steps and words we do not know tell nothing
    other = parse_state_table("66|PENDING\n6610|RUNNING\n6610_1|RUNNING\n661.batch|RUNNING\n661_1|NEWSTATE\n")
    assert resolve_states(wanted, other, bare_arrays=True) == {}


def test_sweep_of_200_runs_in_10_tasks(tmp_path: Path, sweeps: list[Path]) -> None:
    """Submit, poll `status --json` until done, merge, load: the values are right."""
    write_sweep(tmp_path, n=100)
    wd = submit(tmp_path, "--runs-per-task", "20", "--time", "5")
    sweeps.append(wd)
    [entry] = jobs(wd)
    assert entry["executor"] == "slurm" and entry["tasks"] == list(range(10))

    def done() -> Any:
        data = json.loads(cli("status", str(wd), "--json", cwd=tmp_path).stdout)
        return data if {t["state"] for t in data["tasks"]} == {"COMPLETED"} else None

    data = wait_for(done, 90, "every task COMPLETED in status --json", poll=0.5)
    assert data["counts"]["ok"] == 200 and all(t["shard"].endswith(".h5") for t in data["tasks"])
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 100)
    assert sorted(shard_runs(wd)) == list(range(200))
    log = cli("logs", str(wd), "--task", "3", cwd=tmp_path).stdout
    assert "task 3: 20 runs to do of 20" in log and "task 3: done" in log
    # the scheduler's view (sacct) agrees once the processes have exited
    wait_for(lambda: set(SlurmExecutor().states(Workdir(wd)).values()) == {"COMPLETED"}, 30,
             "sacct to say COMPLETED")


def test_arrays_are_cut_at_max_array_size(tmp_path: Path, sweeps: list[Path]) -> None:
    """With MaxArraySize=5, 12 tasks go out as 3 arrays (3 sbatch calls) and complete; an array
    larger than the cluster allows is refused with one clear line and leaves nothing behind."""
    start = ROOT / "slurm" / "start.sh"
    layout, before = layout_args(), SlurmExecutor().max_array_size()
    try:
        subprocess.run(["bash", str(start), *layout, "--restart"], env={**os.environ, "MAX_ARRAY_SIZE": "5"},
                       check=True, capture_output=True, timeout=120)
        assert SlurmExecutor().max_array_size() == 5
        write_sweep(tmp_path, n=12)
        wd = submit(tmp_path, "--runs-per-task", "2", "--time", "5")
        sweeps.append(wd)
        entries = jobs(wd)
        assert [e["tasks"] for e in entries] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
        assert len({e["ids"][0] for e in entries}) == 3
        assert len(list((wd / "slurm").glob(".submission_file_*.sh"))) == 3  # one sbatch per array
        wait_finished(wd)
        text = cli("status", str(wd), cwd=tmp_path).stdout  # a line per array with its tasks' states
        for entry, n in zip(entries, (5, 5, 2), strict=True):
            assert f"job {entry['ids'][0]}: COMPLETED {n}" in text, text
        cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
        check_merged(tmp_path / "out.h5", 12)

        # an executor that believes the cluster takes 50 per array: sbatch says no, in one line
        traj = Trajectory("big")
        traj.add_parameter("x", 0)
        traj.explore({"x": list(range(8))})
        ex = SlurmExecutor(time_limit=5)
        ex._max_array = 50
        env = Environment(traj, executor=ex, workdir=tmp_path / "big", runs_per_task=1)
        with pytest.raises(SubmissionError) as err:
            env.submit(_square)
        assert "\n" not in str(err.value) and "array" in str(err.value).lower(), err.value
        assert not list((tmp_path / "big" / "slurm").glob("*.pkl"))
        assert Workdir(tmp_path / "big").jobs() == []
    finally:
        subprocess.run(["bash", str(start), *layout], check=True, capture_output=True, timeout=120)
    assert SlurmExecutor().max_array_size() == before


def _square(traj: Trajectory) -> None:
    traj.add_result("y", traj.x ** 2)


def test_cancel_then_resubmit_runs_every_run_once(tmp_path: Path, sweeps: list[Path]) -> None:
    write_sweep(tmp_path, n=40)
    # 1.5 s a run: `pypet-hpc cancel` must start (seconds on a busy machine) before the tasks end
    # (with 0.4 s, a loaded run saw all 8 shards final 1 s before scancel ran: "cancelled 3")
    wd = submit(tmp_path, "--runs-per-task", "10", "--time", "5", env={"SWEEP_DELAY": "1.5"})
    sweeps.append(wd)
    wait_for(lambda: sweep_status(Workdir(wd)).counts["ok"] >= 8, 60, "some runs to finish")
    out = cli("cancel", str(wd), cwd=tmp_path).stdout
    assert "cancelled 8 task(s)" in out, out

    def all_cancelled() -> Any:
        data = json.loads(cli("status", str(wd), "--json", cwd=tmp_path).stdout)
        return data if {t["state"] for t in data["tasks"]} == {"CANCELLED"} else None

    data = wait_for(all_cancelled, 40, "status to show CANCELLED", poll=0.5)
    assert 0 < data["counts"]["ok"] < 80
    text = cli("status", str(wd), cwd=tmp_path).stdout
    assert "CANCELLED" in text and "resubmit resumes it" in text
    out = cli("resubmit", str(wd), cwd=tmp_path, env={"SWEEP_DELAY": "0"}).stdout
    assert "resubmitted 8 tasks" in out
    wait_finished(wd)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 40)
    runs = shard_runs(wd)
    assert sorted(runs) == list(range(80)), "a run was done twice or lost"
    assert len(jobs(wd)) == 2


def test_status_right_after_submit_is_never_unknown(tmp_path: Path, sweeps: list[Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's bug: `status` at once after `submit` said UNKNOWN (and resubmit then ran the
    tasks twice) when sacct had only a bare row for the new array. Several submissions, each
    asked at once and again while its tasks start and end (sacct's rows lag behind: none, a bare
    ``ID|PENDING``, rows for some tasks): every task is PENDING, RUNNING or COMPLETED."""
    for knob, value in (("QUERY_MIN_S", 0.0), ("QUERY_RATE", 1e9), ("QUERY_BURST", 1e9)):
        monkeypatch.setattr(slurm_module, knob, value)  # every status asks the scheduler
    bare_rows = 0
    for k in range(6):
        traj = Trajectory(f"fresh{k}")
        traj.add_parameter("x", 0)
        env = Environment(traj, executor="slurm", workdir=tmp_path / f"w{k}", runs_per_task=2, time_limit="5",
                          job_name="pht-fresh")
        sweeps.append(tmp_path / f"w{k}")
        wd = env.submit(_square, space={"x": list(range(6))}).workdir
        [entry] = wd.jobs()
        deadline = time.monotonic() + 2.5
        while True:
            st = sweep_status(wd)
            sacct = (_sh("sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", entry.ids[0]) or _none()).stdout
            bare_rows += any(line.split("|")[0].isdigit() for line in sacct.split())
            states = [t.state for t in st.tasks]
            assert set(states) <= {"PENDING", "RUNNING", "COMPLETED"}, (k, states, sacct)
            assert st.counts["missing"] == 0, (k, st.counts, sacct)
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        SlurmExecutor().cancel(wd)
    print(f"sacct showed a bare array row in {bare_rows} of the checks")


def test_resubmit_right_after_submit_submits_nothing(tmp_path: Path, sweeps: list[Path]) -> None:
    """Resubmit at once after submit: every task is queued or running, so nothing is submitted
    again (the CLI says why), and the sweep completes with every run exactly once."""
    write_sweep(tmp_path, n=10)
    wd = submit(tmp_path, "--runs-per-task", "4", "--time", "5", "--max-parallel", "2",
                env={"SWEEP_DELAY": "0.4"})
    sweeps.append(wd)
    todo = resubmit(Workdir(wd))  # in-process: nothing between the two
    assert todo == [] and todo.unknown == [] and todo.alive == [0, 1, 2, 3, 4], (todo, todo.alive, todo.unknown)
    out = cli("resubmit", str(wd), cwd=tmp_path).stdout
    assert out.splitlines() == ["5 tasks are still queued or running: not resubmitted"], out
    assert len(jobs(wd)) == 1
    wait_finished(wd)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 10)
    assert sorted(shard_runs(wd)) == list(range(20)), "a run was done twice or lost"
    assert "nothing to resubmit: every task is complete" in cli("resubmit", str(wd), cwd=tmp_path).stdout


def test_resubmit_skips_unknown_tasks_unless_forced(tmp_path: Path, sweeps: list[Path]) -> None:
    """Tasks whose latest job the scheduler does not know (UNKNOWN) may still run somewhere:
    resubmit leaves them alone and says so; --force submits them. A task with failed runs whose
    retry is UNKNOWN stays UNKNOWN (not COMPLETED from its older shard), so it is skipped too."""
    write_sweep(tmp_path, n=4, fail_n=3)
    wd = submit(tmp_path, "--runs-per-task", "2", "--time", "5")
    sweeps.append(wd)
    st = wait_finished(wd)
    failing = [t.task for t in st.tasks if t.failed]
    clean = [t.task for t in st.tasks if not t.failed]
    assert failing and len(clean) >= 2, st.tasks
    lost = clean[0]
    (wd / "shards" / f"task_{lost:06d}.h5").unlink()
    # the latest submission of these tasks is a job neither sacct nor squeue knows
    Workdir(wd).record_jobs(JobRecord("slurm", ["999999999"], [lost, *failing]))
    states = {t.task: t.state for t in sweep_status(Workdir(wd)).tasks}
    assert {states[t] for t in [lost, *failing]} == {"UNKNOWN"}, states
    assert {states[t] for t in clean[1:]} == {"COMPLETED"}, states
    out = cli("resubmit", str(wd), cwd=tmp_path).stdout
    n = 1 + len(failing)
    assert out.splitlines() == [f"{n} tasks are in an unknown state (the scheduler does not know them): "
                                "not resubmitted; pass --force if they are gone"], out
    assert len(jobs(wd)) == 2
    out = cli("resubmit", str(wd), "--force", cwd=tmp_path).stdout
    assert f"resubmitted {n} tasks: {', '.join(map(str, sorted([lost, *failing])))}" in out, out
    st = wait_finished(wd)
    assert st.counts["ok"] == 6 and st.counts["failed"] == 2, st.counts
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), cwd=tmp_path, check=False)
    check_merged(tmp_path / "out.h5", 4, fail_n=3)


def test_requeued_task_resumes_without_doubling(tmp_path: Path, sweeps: list[Path]) -> None:
    """`scontrol requeue` kills a running task (SIGTERM: it flushes) and SLURM starts it again:
    it resumes from its .partial shard; no run is lost or done twice."""
    write_sweep(tmp_path, n=20)
    wd = submit(tmp_path, "--runs-per-task", "40", "--time", "5", env={"SWEEP_DELAY": "0.25"})
    sweeps.append(wd)
    [entry] = jobs(wd)
    job = entry["ids"][0]  # one task: submitit sends a plain job, not an array
    wait_for(lambda: sweep_status(Workdir(wd)).counts["ok"] >= 5, 60, "some runs of task 0")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=20)
    release_requeued(job)
    wait_finished(wd)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 20)
    assert sorted(shard_runs(wd)) == list(range(40)), "a run was done twice or lost"
    log = (wd / "logs" / "task_000000.log").read_text()
    assert "DUE TO JOB REQUEUE" in log
    starts = [line for line in log.splitlines() if "runs to do of 40" in line]
    assert len(starts) == 2 and "task 0: 40 runs to do" in starts[0]
    assert "task 0: 40 runs to do" not in starts[1], starts


def release_requeued(job: str) -> None:
    """SLURM holds a requeued batch job for ~2 minutes (BeginTime); release it sooner (test time),
    but not within the second of the requeue: slurmd refuses a credential as old as the revoked
    one, and the job ends FAILED before it starts."""
    wait_for(lambda: "PENDING" in (_sh("squeue", "-h", "-j", job, "-o", "%T") or _none()).stdout,
             60, "the requeued task to be pending")
    time.sleep(3)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=20)


def _none() -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess([], 1, "", "")


def test_failing_runs_show_their_traceback(tmp_path: Path, sweeps: list[Path]) -> None:
    write_sweep(tmp_path, n=10, fail_n=3)
    wd = submit(tmp_path, "--runs-per-task", "5", "--time", "5")
    sweeps.append(wd)
    st = wait_finished(wd)
    assert st.counts["failed"] == 2 and st.counts["ok"] == 18
    out = cli("status", str(wd), "--all", cwd=tmp_path).stdout
    headers = [line for line in out.splitlines() if line.startswith("--- run ")]
    assert len(headers) == 2 and all(h.endswith(": ValueError: unlucky 3") for h in headers), out
    assert "Traceback (most recent call last)" in out and "in simulate" in out
    grouped = cli("status", str(wd), "--failed", cwd=tmp_path).stdout
    assert "2 runs failed with ValueError: unlucky 3 (runs 3, 13)" in grouped and grouped.count("Traceback") == 1
    # the SLURM jobs themselves succeed: a failing run is data, not a crashed task
    wait_for(lambda: set(SlurmExecutor().states(Workdir(wd)).values()) == {"COMPLETED"}, 30,
             "sacct to say COMPLETED")


def test_a_typo_stops_the_sweep_and_cancels_the_other_tasks(tmp_path: Path, sweeps: list[Path]) -> None:
    """Every run fails alike: the waiting side cancels what is queued and exits 1, saying why."""
    (tmp_path / "typo.py").write_text(
        "from pypet_rebuild import Trajectory\n"
        "def make_trajectory():\n    t = Trajectory('typo')\n    t.add_parameter('x', 0)\n    return t\n"
        "space = {'x': list(range(400))}\n"
        "def simulate(traj):\n    traj.add_result('y', traj.x * sigmaa)\n")
    wd = tmp_path / "wd"
    sweeps.append(wd)
    proc = cli("submit", str(tmp_path / "typo.py"), "--executor", "slurm", "--workdir", str(wd), "--runs-per-task",
               "25", "--max-parallel", "2", "--time", "5", "--wait", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "stopped early: the first" in proc.stderr, proc.stderr
    st = sweep_status(Workdir(wd))
    assert st.counts["ok"] == 0 and st.counts["failed"] < 400 and st.finished
    assert any(t.state == "CANCELLED" for t in st.tasks), st.tasks


def test_python_api_runs_on_slurm(tmp_path: Path, sweeps: list[Path]) -> None:
    traj = Trajectory("api")
    traj.add_parameter("x", 0)
    env = Environment(traj, storage=HDF5StorageService(tmp_path / "api.h5"), executor="slurm",
                      workdir=tmp_path / "wd", runs_per_task=5, time_limit="5", job_name="pht-api")
    sweeps.append(tmp_path / "wd")
    env.run_exploration(_square, space={"x": list(range(12))})
    loaded = load_trajectory(tmp_path / "api.h5")
    np.testing.assert_array_equal(loaded.get_from_runs("y"), np.arange(12) ** 2)


def test_dry_run_prints_plan_and_script_and_submits_nothing(tmp_path: Path) -> None:
    write_sweep(tmp_path, n=30)
    name = f"pht-{uuid.uuid4().hex[:8]}"
    out = cli("submit", "sweep.py", "--executor", "slurm", "--workdir", "W", "--runs-per-task", "4",
              "--dry-run", "--job-name", name, "--max-parallel", "3", "--mem", "1G",
              "--setup", "echo hello", "--sbatch", "comment=pypet hpc", cwd=tmp_path).stdout
    assert "60 runs in 15 tasks" in out and "dry run: nothing submitted" in out
    for line in ("#SBATCH --array=0-14%3", f"#SBATCH --job-name={name}", "#SBATCH --mem=1G",
                 "#SBATCH --signal=B:USR2@90", "#SBATCH --time=60", "echo hello",
                 "#SBATCH --comment='pypet hpc'", "exec "):
        assert line in out, line
    assert not (tmp_path / "W").exists()
    assert _sh("squeue", "-h", "-n", name, "-o", "%i").stdout.strip() == ""


NL = "\n"


@pytest.mark.parametrize(("args", "code", "needle"), [
    (["--partition", "nope"], 2, "unknown partition 'nope'"),
    (["--time", "1:xx"], 2, "bad time limit"),
    (["--time", "0"], 2, "time limit"),
    (["--job-name", "a;b"], 2, "--job-name"),
    (["--job-name", f"a{NL}#SBATCH --x"], 2, "--job-name"),
    (["--job-name", "$(touch pwned)"], 2, "--job-name"),
    (["--partition", f"debug{NL}touch pwned"], 2, "--partition"),
    (["--partition", "debug;touch pwned"], 2, "--partition"),
    (["--sbatch", "comment=$(touch pwned)"], 2, "--sbatch comment"),
    (["--sbatch", f"comment=a{NL}touch pwned"], 2, "--sbatch comment"),
    (["--sbatch", "comment=a;touch pwned"], 2, "--sbatch comment"),
    (["--sbatch", f"x{NL}touch pwned=1"], 2, "--sbatch"),
    (["--sbatch", "a;b=1"], 2, "--sbatch"),
    (["--sbatch", "output=/tmp/x"], 2, "sets it itself"),
    (["--setup", f"module load x{NL}touch pwned"], 2, "--setup"),
    (["--mem", "4Q"], 2, "--mem"),
    (["--mem", "100000G"], 2, "sbatch refused the job: Requested node configuration is not available"),
    (["--sbatch", "no-such-option=1"], 2, "sbatch refused the job: unrecognized option"),
])
def test_bad_input_is_one_line_and_submits_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   args: list[str], code: int, needle: str) -> None:
    """In-process CLI (same code path, no interpreter start-up per case)."""
    write_sweep(tmp_path, n=4)
    name = f"pht-{uuid.uuid4().hex[:8]}"
    if "--job-name" not in args:
        args = [*args, "--job-name", name]
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_main, ["submit", "sweep.py", "--executor", "slurm", "--workdir", "W",
                                           "--runs-per-task", "2", *args])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], result.stderr
    assert not (tmp_path / "W").exists() and not (tmp_path / "pwned").exists()
    assert _sh("squeue", "-h", "-n", name, "-o", "%i").stdout.strip() == ""


def test_a_task_warned_of_its_time_limit_requeues_itself_and_finishes(tmp_path: Path, sweeps: list[Path]) -> None:
    """A 1-minute task of 50 one-second runs gets SIGUSR2 before its limit: it flushes its shard,
    submitit's checkpointing requeues it, and the requeued task resumes from its .partial shard and
    finishes, with no resubmit. Every run exactly once; the first attempt's runs are not redone."""
    write_sweep(tmp_path, n=25)
    wd = submit(tmp_path, "--runs-per-task", "50", "--time", "1", env={"SWEEP_DELAY": "1"})
    sweeps.append(wd)
    [entry] = jobs(wd)
    job = entry["ids"][0]  # one task: a plain job
    log_path = wd / "logs" / "task_000000.log"
    wait_for(lambda: log_path.exists() and "Requeued job" in log_path.read_text(), 120,
             "the task to requeue itself")
    release_requeued(job)
    st = wait_finished(wd, timeout=120)
    [task] = st.tasks
    assert task.state == "COMPLETED" and task.complete, task
    assert len(jobs(wd)) == 1  # nothing was resubmitted
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 25)
    assert sorted(shard_runs(wd)) == list(range(50)), "a run was done twice or lost"
    log = log_path.read_text()
    assert "checkpointed (its finished runs are in its shard)" in log and "Traceback" not in log
    starts = [line for line in log.splitlines() if "runs to do of 50" in line]
    assert len(starts) == 2 and "task 0: 50 runs to do" in starts[0], starts
    left = int(starts[1].split("task 0: ")[1].split()[0])
    assert 0 < left < 50, starts
    assert f"resuming task_000000.h5.partial: {50 - left} runs already done" in log


def test_slurm_example_runs_with_resources_and_setup_line(tmp_path: Path) -> None:
    """examples/slurm_sweep.py as its docstring says: resources, a setup line seen by the jobs."""
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "slurm_sweep.py"),
                          "--workdir", str(tmp_path / "walk"), "--time", "0:10:00"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    try:
        assert out.returncode == 0, out.stderr
        assert "60 ok, 0 failed, 0 missing of 60 runs" in out.stdout
        assert "OMP_NUM_THREADS in the jobs: 1" in out.stdout
        spread = load_trajectory(tmp_path / "walk.h5").get_from_runs("spread")
        assert spread.count() == 60
    finally:
        if (tmp_path / "walk" / "manifest.json").exists():
            SlurmExecutor().cancel(Workdir(tmp_path / "walk"))


def _slurm_workers(wd: Path) -> list[int]:
    """PIDs of the Python processes running this sweep's SLURM tasks (their command line names
    the task's submitit folder inside the workdir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "submitit.core._submit" in cmd and str(wd) in cmd:
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("seed", [1, 2, 3], ids=lambda s: f"seed={s}")
def test_sigkill_of_slurm_tasks_at_random_moments(tmp_path: Path, sweeps: list[Path], seed: int) -> None:
    """A task killed with SIGKILL (no chance to flush) mid-array: status shows it failed, resubmit
    resumes from the last committed flush, and every run is in the merged file exactly once."""
    import random

    rng = random.Random(seed)
    write_sweep(tmp_path, n=30)
    wd = submit(tmp_path, "--runs-per-task", "20", "--time", "5", env={"SWEEP_DELAY": "0.05"})
    sweeps.append(wd)
    pids = wait_for(lambda: _slurm_workers(wd) if len(_slurm_workers(wd)) == 3 else None, 60, "3 running tasks")
    time.sleep(rng.uniform(0.2, 0.9))
    victims = rng.sample(pids, rng.randint(1, 3))
    for pid in victims:
        os.kill(pid, 9)
    st = wait_finished(wd)
    states = {t.task: t.state for t in st.tasks}
    assert sum(s != "COMPLETED" for s in states.values()) >= 1, states
    cli("resubmit", str(wd), cwd=tmp_path, env={"SWEEP_DELAY": "0"})
    wait_finished(wd)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 30)
