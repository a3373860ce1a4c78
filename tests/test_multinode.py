"""The faults of a real multi-node cluster, on `slurm/start.sh --nodes 3` (node1..node3, each
slurmd in its own network and UTS namespace, one shared filesystem): tasks of one array on
different hosts writing shards to one directory, a node dying under running tasks, a task
killed for exceeding --mem, arrays cut at MaxArraySize=1001, a node drained mid-sweep.

Real arrays, no mocks. Without the 3-node cluster they skip with one line (fail when CI=true).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pypet_rebuild import load_trajectory
from pypet_rebuild.executors.slurm import SlurmExecutor, expand_job_ids
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir

from .conftest import ROOT, cli, write_sweep
from .test_slurm import (
    _sh,
    check_merged,
    cluster_problem,
    hold_cluster,
    jobs,
    node_states,
    shard_runs,
    submit,
    wait_finished,
    wait_for,
)

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

NODES = ("node1", "node2", "node3")
START = ["bash", str(ROOT / "slurm" / "start.sh"), "--nodes", "3"]


@pytest.fixture(scope="module", autouse=True)
def three_nodes() -> Iterator[None]:
    """The 3-node cluster is up, and this session has it to itself."""
    problem = cluster_problem()
    if problem is None and not set(NODES) <= set(node_states()):
        problem = f"the cluster has nodes {', '.join(node_states())}, not {', '.join(NODES)}"
    yield from hold_cluster(problem, "3-node SLURM cluster", "sudo bash slurm/start.sh --nodes 3")


@pytest.fixture
def restore_nodes() -> Iterator[None]:
    """Whatever a test did to the nodes (killed, drained), all three are up again afterwards."""
    yield
    for node in NODES:
        if node_states().get(node, "").startswith("drain"):
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], timeout=20)
    subprocess.run(START, check=True, capture_output=True, timeout=120)
    assert cluster_problem() is None


def task_nodes(array: str) -> dict[int, str]:
    """array index -> the node sacct says the task ran (or runs) on."""
    out = _sh("sacct", "-X", "-n", "-P", "-j", array, "-o", "JobID,NodeList") or _fail("sacct")
    nodes = {}
    for line in out.stdout.split():
        job, _, node = line.partition("|")
        if "_" in job and "[" not in job and node not in ("", "None assigned"):
            nodes[int(job.split("_")[1])] = node
    return nodes


def running_on(array: str) -> dict[int, str]:
    """array index -> node for the tasks squeue lists as RUNNING."""
    out = _sh("squeue", "-h", "-t", "R", "-j", array, "-o", "%i %N") or _fail("squeue")
    return {int(i.split("_")[1]): n for i, n in (line.split() for line in out.stdout.splitlines()) if "_" in i}


def _fail(what: str) -> Any:
    raise AssertionError(f"{what} did not answer")


def netns_workers(node: str, wd: Path) -> list[int]:
    """PIDs of this sweep's task processes inside node's network namespace."""
    out = _sh("ip", "netns", "pids", node) or _fail("ip netns pids")
    pids = []
    for pid in out.stdout.split():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "submitit.core._submit" in cmd and str(wd) in cmd:
            pids.append(int(pid))
    return pids


def run_hosts(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(host, job) of every run of a merged file."""
    info = load_trajectory(path).run_info()
    return np.asarray(info["host"]).astype(str), np.asarray(info["job"]).astype(str)


# ------------------------------------------------------------------------------------------------


def test_one_array_runs_on_all_three_nodes_and_its_shards_merge(tmp_path: Path, sweeps: list[Path]) -> None:
    """Tasks of one array land on node1..node3 (each task process sees its node's hostname),
    write their shards into one shared directory, and merge: run_info names host and job."""
    write_sweep(tmp_path, n=12)
    wd = submit(tmp_path, "--runs-per-task", "2", "--time", "5", env={"SWEEP_DELAY": "0.3"})
    sweeps.append(wd)
    [entry] = jobs(wd)
    array = entry["ids"][0]
    wait_finished(wd, timeout=120)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 12)
    assert sorted(shard_runs(wd)) == list(range(24))
    host, job = run_hosts(tmp_path / "out.h5")
    assert set(host) == set(NODES), host
    # each run's host and job are those SLURM gave its task
    nodes = wait_for(lambda: task_nodes(array) if len(task_nodes(array)) == 12 else None, 30, "sacct's NodeList")
    for run in range(24):
        task = run // 2
        assert job[run] == f"slurm:{array}_{task}", (run, job[run])
        assert host[run] == nodes[task], (run, host[run], nodes[task])
    text = cli("status", str(wd), cwd=tmp_path).stdout
    assert f"job {array}: COMPLETED 12" in text, text


def test_second_partition_uses_only_its_nodes(tmp_path: Path, sweeps: list[Path]) -> None:
    """--partition long (nodes node2, node3): no task runs on node1."""
    write_sweep(tmp_path, n=6)
    wd = submit(tmp_path, "--runs-per-task", "2", "--time", "5", "--partition", "long")
    sweeps.append(wd)
    wait_finished(wd, timeout=120)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 6)
    host, _ = run_hosts(tmp_path / "out.h5")
    assert set(host) <= {"node2", "node3"} and len(host) == 12, host


@pytest.mark.parametrize("requeue", [False, True], ids=["no-requeue", "slurm-requeues"])
def test_node_dies_under_running_tasks(tmp_path: Path, sweeps: list[Path], restore_nodes: None,
                                       requeue: bool) -> None:
    """node2's slurmd and every process of its jobs are SIGKILLed while its tasks run. SLURM
    marks node2 DOWN; its tasks end NODE_FAIL (status says so in words) and a plain resubmit
    completes them on the other nodes; or, when the jobs may requeue, SLURM runs them again
    by itself. Either way every run is in the merged file exactly once."""
    write_sweep(tmp_path, n=24)
    args = ["--runs-per-task", "8", "--time", "5"] + ([] if requeue else ["--sbatch", "no-requeue"])
    wd = submit(tmp_path, *args, env={"SWEEP_DELAY": "0.5"})
    sweeps.append(wd)
    [entry] = jobs(wd)
    array = entry["ids"][0]
    wait_for(lambda: netns_workers("node2", wd), 60, "a task of the sweep running on node2")
    wait_for(lambda: sweep_status(Workdir(wd)).counts["ok"] >= 4, 60, "some runs to finish")
    victims = {i for i, node in running_on(array).items() if node == "node2"}
    assert victims, running_on(array)
    out = subprocess.run(["bash", str(ROOT / "slurm" / "kill-node.sh"), "node2"], capture_output=True,
                         text=True, timeout=30, check=True)
    assert "killed" in out.stdout, out
    assert netns_workers("node2", wd) == []
    # slurmctld notices the silent node (SlurmdTimeout=10) and takes it out
    wait_for(lambda: node_states().get("node2", "").startswith("down"), 120, "node2 to be DOWN")
    reason = (_sh("sinfo", "-h", "-n", "node2", "-o", "%E") or _fail("sinfo")).stdout
    assert "not responding" in reason.lower(), reason

    if requeue:
        # SLURM requeues a node-failed batch job but holds it ~2 minutes (BeginTime): release it
        def requeued() -> Any:
            out = _sh("squeue", "-h", "-t", "PD", "-j", array, "-o", "%i") or _fail("squeue")
            pending = {int(j.split("_")[1]) for line in out.stdout.split() for j in expand_job_ids(line)}
            return pending if victims <= pending else None

        wait_for(requeued, 60, f"tasks {sorted(victims)} to be requeued")
        for index in victims:
            subprocess.run(["scontrol", "update", f"JobId={array}_{index}", "StartTime=now"], check=True, timeout=20)
        wait_finished(wd, timeout=180)
        assert len(jobs(wd)) == 1  # no resubmit: SLURM ran them again by itself
    else:
        st = wait_finished(wd, timeout=120)
        states = {t.task: t.state for t in st.tasks}
        assert {t for t, s in states.items() if s == "NODE_FAIL"} == victims, states
        assert {s for t, s in states.items() if t not in victims} == {"COMPLETED"}, states
        text = cli("status", str(wd), cwd=tmp_path).stdout
        lost = ", ".join(map(str, sorted(victims)))
        assert f"died with the node they ran on (NODE_FAIL): task {lost}; pypet-hpc resubmit" in text, text
        out = cli("resubmit", str(wd), cwd=tmp_path, env={"SWEEP_DELAY": "0"}).stdout
        assert f"resubmitted {len(victims)} tasks: {lost}" in out, out
        wait_finished(wd, timeout=120)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 24)
    assert sorted(shard_runs(wd)) == list(range(48)), "a run was done twice or lost"
    host, _ = run_hosts(tmp_path / "out.h5")
    for task in victims:  # its last run was done after node2 died, elsewhere
        assert host[task * 8 + 7] in ("node1", "node3"), (task, host[task * 8: task * 8 + 8])


OOM_SWEEP = textwrap.dedent(
    '''
    import numpy as np

    from pypet_rebuild import Trajectory

    def make_trajectory():
        traj = Trajectory("mem")
        traj.add_parameter("n", 0)
        return traj

    space = {"n": list(range(8))}

    def simulate(traj):
        if traj.n == 3:  # task 1 (runs 2, 3) touches 400 MiB
            big = np.ones(400 * 131072)
            traj.add_result("z", float(big[::4096].sum()))
        else:
            traj.add_result("z", float(traj.n))
    '''
)


def test_task_over_its_memory_limit_is_killed_then_resubmit_with_more(tmp_path: Path, sweeps: list[Path]) -> None:
    """A task that touches more than its --mem is killed by its cgroup: status shows
    OUT_OF_MEMORY with the task and the limit; resubmit --mem 1G completes it; every run once."""
    (tmp_path / "sweep.py").write_text(OOM_SWEEP)
    wd = submit(tmp_path, "--runs-per-task", "2", "--time", "5", "--mem", "250M")
    sweeps.append(wd)
    st = wait_finished(wd, timeout=120)
    states = {t.task: t.state for t in st.tasks}
    assert states == {0: "COMPLETED", 1: "OUT_OF_MEMORY", 2: "COMPLETED", 3: "COMPLETED"}, states
    text = cli("status", str(wd), cwd=tmp_path).stdout
    assert ("1 task was killed by SLURM for using more memory than the limit (OUT_OF_MEMORY, --mem 250M): "
            f"task 1; resubmit with more memory, e.g. pypet-hpc resubmit {wd} --mem 500M") in text, text
    data = json.loads(cli("status", str(wd), "--json", cwd=tmp_path).stdout)
    assert data["counts"]["ok"] < 8 and data["tasks"][1]["state"] == "OUT_OF_MEMORY"
    log = (wd / "logs" / "task_000001.log").read_text()
    assert "oom" in log.lower(), log[-2000:]
    out = cli("resubmit", str(wd), "--mem", "1G", cwd=tmp_path).stdout
    assert "resubmitted 1 tasks: 1" in out, out
    assert jobs(wd)[-1]["mem"] == "1G"
    wait_finished(wd, timeout=120)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    traj = load_trajectory(tmp_path / "out.h5")
    np.testing.assert_allclose(traj.get_from_runs("z"), [0, 1, 2, 400 * 131072 / 4096, 4, 5, 6, 7])
    assert sorted(shard_runs(wd)) == list(range(8)), "a run was done twice or lost"


@pytest.mark.slow
def test_sweep_of_more_than_max_array_size_tasks_is_cut_and_completes(tmp_path: Path, sweeps: list[Path]) -> None:
    """1,100 one-run tasks on a cluster with MaxArraySize=1001: two arrays (two sbatch calls)
    of 1001 and 99 tasks, spread over the three nodes; all complete and merge."""
    assert SlurmExecutor().max_array_size() == 1001
    write_sweep(tmp_path, n=550)
    wd = submit(tmp_path, "--runs-per-task", "1", "--time", "5")
    sweeps.append(wd)
    entries = jobs(wd)
    assert [e["tasks"] for e in entries] == [list(range(1001)), list(range(1001, 1100))]
    assert len({e["ids"][0] for e in entries}) == 2
    assert len(list((wd / "slurm").glob(".submission_file_*.sh"))) == 2
    wait_finished(wd, timeout=1500)
    text = cli("status", str(wd), cwd=tmp_path).stdout
    for entry, n in zip(entries, (1001, 99), strict=True):
        assert f"job {entry['ids'][0]}: COMPLETED {n}" in text, text
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 550)
    host, job = run_hosts(tmp_path / "out.h5")
    assert set(host) == set(NODES)
    assert len(set(job)) == 1100


def test_node_drained_mid_sweep_gets_no_new_tasks(tmp_path: Path, sweeps: list[Path], restore_nodes: None) -> None:
    """node3 is drained while the sweep runs (3 tasks at a time): the task running there
    finishes there, and every task still pending then runs on node1 or node2."""
    write_sweep(tmp_path, n=15)
    wd = submit(tmp_path, "--runs-per-task", "2", "--time", "5", "--max-parallel", "3",
                env={"SWEEP_DELAY": "0.5"})
    sweeps.append(wd)
    [entry] = jobs(wd)
    array = entry["ids"][0]
    on3 = wait_for(lambda: [i for i, n in running_on(array).items() if n == "node3"], 60, "a task running on node3")
    subprocess.run(["scontrol", "update", "nodename=node3", "state=drain", "reason=pypet-hpc test drain"],
                   check=True, timeout=20)
    wait_for(lambda: node_states().get("node3", "").startswith("drain"), 30, "node3 to be draining")
    out = _sh("squeue", "-h", "-t", "PD", "-j", array, "-o", "%i") or _fail("squeue")
    pending = sorted({int(j.split("_")[1]) for line in out.stdout.split() for j in expand_job_ids(line)})
    assert len(pending) >= 6, pending  # mid-sweep: most of it still to run
    wait_finished(wd, timeout=180)
    cli("merge", str(wd), "-o", str(tmp_path / "out.h5"), "--require-complete", cwd=tmp_path)
    check_merged(tmp_path / "out.h5", 15)
    assert sorted(shard_runs(wd)) == list(range(30))
    host, _ = run_hosts(tmp_path / "out.h5")
    for task in on3:  # drain lets running jobs finish
        assert list(host[2 * task: 2 * task + 2]) == ["node3", "node3"], (task, host)
    for task in pending:
        assert set(host[2 * task: 2 * task + 2]) <= {"node1", "node2"}, (task, host)
    assert node_states()["node3"] == "drained"



def test_sweep_of_5000_tasks_goes_out_as_5_arrays(tmp_path: Path, sweeps: list[Path]) -> None:
    """5,000 tasks at MaxArraySize=1001: five sbatch calls (1001 x 4 + 996), each array taken by
    slurmctld with all its tasks; then cancelled (the 1,100-task test above runs a cut sweep
    to the end; running 5,000 Python tasks on 2 cores would take ~35 minutes)."""
    write_sweep(tmp_path, n=2500)
    wd = submit(tmp_path, "--runs-per-task", "1", "--time", "5", "--max-parallel", "1")
    sweeps.append(wd)
    entries = jobs(wd)
    sizes = [len(e["tasks"]) for e in entries]
    assert sizes == [1001, 1001, 1001, 1001, 996], sizes
    assert [t for e in entries for t in e["tasks"]] == list(range(5000))
    assert len(list((wd / "slurm").glob(".submission_file_*.sh"))) == 5
    out = _sh("squeue", "-h", "-r", "-t", "all", "-o", "%i", "-j", ",".join(e["ids"][0] for e in entries),
              timeout=30) or _fail("squeue")
    assert len(set(out.stdout.split())) == 5000, len(set(out.stdout.split()))
    out = cli("cancel", str(wd), cwd=tmp_path).stdout
    assert "cancelled" in out, out
