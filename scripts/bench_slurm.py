"""SLURM benchmark on the local cluster (slurm/start.sh): submission and end to end.

    uv run python scripts/bench_slurm.py

1. Submit a 100,000-run sweep (100 runs per task: 1,000 tasks) with `pypet-hpc submit` and count
   the sbatch calls. The jobs are submitted held (--sbatch hold) so that they queue without
   running, and are cancelled afterwards. Targets: <= 5 s, <= ceil(tasks / MaxArraySize) calls.
2. End to end for 10,000 trivial runs: submit -> every task done -> merge -> load one column.

Prints one small table. Says so and exits 0 when the cluster is not up.
"""

from __future__ import annotations

import argparse
import math
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

from pypet_rebuild import load_trajectory
from pypet_rebuild.environment import merge_workdir
from pypet_rebuild.executors.slurm import SlurmExecutor
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir

SWEEP = textwrap.dedent(
    """
    from pypet_rebuild import Trajectory

    def make_trajectory():
        traj = Trajectory("bench_slurm")
        traj.add_parameter("x", 0)
        return traj

    space = {"x": list(range(%d))}

    def simulate(traj):
        traj.add_result("y", traj.x * 2)
    """
)


def cluster_problem() -> str | None:
    """None when slurmctld, every node (localhost, or node1..nodeN) and accounting answer (as
    slurm/status.sh checks)."""
    checks = [(["scontrol", "ping"], "is UP"), (["sinfo", "-h", "-N", "-o", "%N %T"], ""),
              (["sacct", "-n", "-X", "-j", "1"], "")]
    for cmd, needle in checks:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{cmd[0]}: {exc}"
        if res.returncode != 0 or needle not in res.stdout:
            return f"`{' '.join(cmd)}` failed"
        if cmd[0] == "sinfo":
            rows = [line.split() for line in res.stdout.splitlines() if line.strip()]
            bad = [f"node {row[0]} is {row[-1]}" for row in rows
                   if row[-1] not in ("idle", "mixed", "allocated", "completing")]
            if not rows or bad:
                return ", ".join(bad) or "no node is registered"
    return None


def cli_submit(folder: Path, n_runs: int, runs_per_task: int, *extra: str) -> tuple[float, Workdir]:
    """Write a sweep of ``n_runs`` and submit it with the CLI; returns (wall seconds, workdir)."""
    sweep = folder / f"sweep_{n_runs}.py"
    sweep.write_text(SWEEP % n_runs)
    wd = folder / f"wd_{n_runs}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pypet_rebuild.cli", "submit", str(sweep), "--executor", "slurm",
                    "--workdir", str(wd), "--runs-per-task", str(runs_per_task), "--time", "10",
                    "--job-name", "bench-slurm", *extra], check=True, capture_output=True, text=True, cwd=folder,
                   timeout=300)
    return time.perf_counter() - t0, Workdir(wd)


def submission(folder: Path, n_runs: int) -> tuple[float, int, int]:
    """Submit ``n_runs`` (100 runs per task, held so nothing runs), then cancel.

    Returns (CLI wall seconds, sbatch calls made, ceil(tasks / MaxArraySize))."""
    max_array = SlurmExecutor().max_array_size()
    secs, wd = cli_submit(folder, n_runs, 100, "--sbatch", "hold")
    try:
        n_tasks = wd.manifest().plan.n_tasks
        calls = len(wd.jobs())  # one jobs.jsonl record per sbatch answer
        return secs, calls, math.ceil(n_tasks / max_array)
    finally:
        SlurmExecutor().cancel(wd)


def end_to_end(folder: Path, n_runs: int, runs_per_task: int) -> dict[str, float]:
    """Submit -> every task done -> merge -> load one column; seconds of each step."""
    t0 = time.perf_counter()
    _, wd = cli_submit(folder, n_runs, runs_per_task)
    try:
        t_sub = time.perf_counter()
        deadline = t_sub + 600
        while True:
            st = sweep_status(wd)
            if st.finished:
                break
            if time.perf_counter() > deadline:
                raise SystemExit("bench_slurm: the end-to-end sweep did not finish within 10 minutes")
            time.sleep(0.2)
        t_done = time.perf_counter()
        report = merge_workdir(wd, folder / "merged.h5")
        t_merged = time.perf_counter()
        y = load_trajectory(folder / "merged.h5").get_from_runs("y")
        t_loaded = time.perf_counter()
    finally:
        SlurmExecutor().cancel(wd)
    assert report.missing == 0 and st.counts["ok"] == n_runs, (report.summary(), st.counts)
    np.testing.assert_array_equal(y, np.arange(n_runs) * 2)
    return {"submit": t_sub - t0, "done": t_done - t_sub, "merge": t_merged - t_done,
            "load": t_loaded - t_merged, "total": t_loaded - t0, "tasks": wd.manifest().plan.n_tasks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submit-runs", type=int, default=100_000)
    parser.add_argument("--e2e-runs", type=int, default=10_000)
    parser.add_argument("--e2e-runs-per-task", type=int, default=1000)
    args = parser.parse_args()

    problem = cluster_problem()
    if problem is not None:
        print(f"bench_slurm: the local SLURM cluster is not up ({problem}); nothing measured. "
              "Start it with: sudo bash slurm/start.sh")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-", dir=Path.cwd()))  # shared with the node
    try:
        secs, calls, allowed = submission(folder, args.submit_runs)
        e2e = end_to_end(folder, args.e2e_runs, args.e2e_runs_per_task)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rows = [
        (f"submit {args.submit_runs:,} runs, CLI wall", f"{secs:.2f} s", f"<= 5 s  {'ok' if secs <= 5 else 'MISSED'}"),
        ("sbatch calls", str(calls), f"<= {allowed}  {'ok' if calls <= allowed else 'MISSED'}"),
        (f"e2e {args.e2e_runs:,} runs ({e2e['tasks']:.0f} tasks): submit (CLI)", f"{e2e['submit']:.2f} s", ""),
        ("  ... until every task is done", f"{e2e['done']:.2f} s", ""),
        ("  ... merge", f"{e2e['merge']:.2f} s", ""),
        ("  ... load one column", f"{e2e['load']:.2f} s", ""),
        ("  total", f"{e2e['total']:.2f} s", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'measured':>9}  target")
    for what, value, target in rows:
        print(f"{what:<{width}}  {value:>9}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
