"""SLURM benchmark on the local cluster (slurm/start.sh): submission and end to end.

    uv run python scripts/bench_slurm.py

1. Submit a 100,000-run sweep (100 runs per task: 1,000 tasks) with `pypet-hpc submit` and count
   the sbatch calls. The jobs are submitted held (--sbatch hold) so that they queue without
   running, and are cancelled afterwards. Targets: <= 5 s, <= ceil(tasks / MaxArraySize) calls.
2. End to end for 10,000 trivial runs: submit -> every task done -> merge -> load one column.
3. Against plain submitit (`--compare`, also a row of scripts/bench.py's full run): 1,000 and
   10,000 runs of a 0.3 ms damped oscillator, pypet-hpc with its defaults (`submit --wait`, then
   one column loaded) beside what a user writes without us: submitit's `map_array` over
   hand-made chunks of 100 runs, the results gathered and written as one h5py column, loaded back.

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

OSCILLATOR = textwrap.dedent(
    """
    def oscillator(k):
        # a damped oscillator integrated by Euler steps: about 0.3 ms of plain Python per run
        x, v, dt = 1.0, 0.0, 0.01
        for _ in range(1500):
            v += (-k * x - 0.1 * v) * dt
            x += v * dt
        return x
    """
)
exec(OSCILLATOR)  # the same function for the plain-submitit side (pickled by value below)

OSC_SWEEP = textwrap.dedent(
    """
    from pypet_rebuild import Trajectory
    %s
    def make_trajectory():
        traj = Trajectory("bench_osc")
        traj.add_parameter("k", 1.0)
        return traj

    space = {"k": [1.0 + i / %d for i in range(%d)]}

    def simulate(traj):
        traj.add_result("x", oscillator(traj.k))
    """
)

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


def oscillator_chunk(ks: list[float]) -> list[float]:
    """One hand-made chunk of the plain-submitit side: its runs, in order."""
    return [oscillator(k) for k in ks]  # type: ignore[name-defined]  # noqa: F821 - defined by exec above


def ours_defaults(folder: Path, n_runs: int) -> float:
    """pypet-hpc with its defaults: `submit SWEEP --executor slurm --wait` (it merges), then one
    column loaded; wall seconds."""
    sweep = folder / f"osc_{n_runs}.py"
    sweep.write_text(OSC_SWEEP % (OSCILLATOR, n_runs, n_runs))
    wd = folder / f"osc_wd_{n_runs}"
    t0 = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "pypet_rebuild.cli", "submit", str(sweep), "--executor", "slurm",
                        "--workdir", str(wd), "--time", "10", "--job-name", "bench-ours", "--wait"],
                       check=True, capture_output=True, text=True, cwd=folder, timeout=900)
        x = load_trajectory(wd / "merged.h5").get_from_runs("x")
    finally:
        SlurmExecutor().cancel(Workdir(wd))
    elapsed = time.perf_counter() - t0
    assert x.count() == n_runs, x.count()
    return elapsed


def plain_submitit(folder: Path, n_runs: int, chunk: int = 100) -> float:
    """What a user writes without us: chunks by hand, submitit's map_array, the results gathered
    and written as one h5py column, then loaded back; wall seconds."""
    import cloudpickle
    import h5py
    import submitit

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the node cannot import this script
    ks = [1.0 + i / n_runs for i in range(n_runs)]
    chunks = [ks[i:i + chunk] for i in range(0, n_runs, chunk)]
    t0 = time.perf_counter()
    ex = submitit.AutoExecutor(folder=folder / f"plain_{n_runs}" / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=10, name="bench-plain", slurm_array_parallelism=len(chunks))
    jobs = ex.map_array(oscillator_chunk, chunks)
    try:
        values = [x for job in jobs for x in job.result()]
    finally:
        for job in jobs:
            if not job.done():
                job.cancel(check=False)
    with h5py.File(folder / f"plain_{n_runs}.h5", "w") as f:
        f["x"] = np.asarray(values)
    with h5py.File(folder / f"plain_{n_runs}.h5", "r") as f:
        x = f["x"][...]
    elapsed = time.perf_counter() - t0
    assert len(x) == n_runs
    return elapsed


def compare(folder: Path, sizes: tuple[int, ...] = (1_000, 10_000)) -> list[tuple[int, float, float]]:
    """(runs, ours with defaults, plain submitit over chunks of 100) in seconds, same sitting."""
    out = []
    for n in sizes:
        ours = ours_defaults(folder, n)
        plain = plain_submitit(folder, n)
        out.append((n, ours, plain))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submit-runs", type=int, default=100_000)
    parser.add_argument("--e2e-runs", type=int, default=10_000)
    parser.add_argument("--e2e-runs-per-task", type=int, default=1000)
    parser.add_argument("--compare", action="store_true",
                        help="only pypet-hpc defaults vs plain submitit map_array (1,000 and 10,000 runs)")
    args = parser.parse_args()

    problem = cluster_problem()
    if problem is not None:
        print(f"bench_slurm: the local SLURM cluster is not up ({problem}); nothing measured. "
              "Start it with: sudo bash slurm/start.sh")
        return 0
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-", dir=Path.cwd()))  # shared with the node
    if args.compare:
        try:
            results = compare(folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        print(f"{'runs':>7}  {'pypet-hpc defaults':>18}  {'plain submitit (chunks of 100)':>30}  ratio  target <= 1.0x")
        for n, ours, plain in results:
            print(f"{n:>7,}  {ours:>16.1f} s  {plain:>28.1f} s  {ours / plain:.2f}x")
        return 0
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
