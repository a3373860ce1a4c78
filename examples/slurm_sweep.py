"""A sweep on SLURM: job arrays with resources and a setup line, from Python.

    python examples/slurm_sweep.py --workdir runs/slurm-demo [--partition debug] [--time 0:10:00]

The same from the command line:

    pypet-hpc submit examples/lorenz.py --executor slurm --workdir runs/lorenz --runs-per-task 5 \\
        --partition debug --time 0:10:00 --mem 1G --setup "export OMP_NUM_THREADS=1" --wait

Submitting returns at once with the array job ids recorded in the workdir; `pypet-hpc status
WORKDIR` works from any shell in the meantime. Here the script waits, merges and prints a summary.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pypet_rebuild import (
    Environment,
    HDF5StorageService,
    SweepHandle,
    Trajectory,
    cartesian_product,
    load_trajectory,
)
from pypet_rebuild.workdir import Workdir


def simulate(traj: Trajectory) -> None:
    """A noisy random walk: its spread grows like sqrt(steps) * sigma."""
    import os

    rng = np.random.default_rng(traj.seed)
    walk = np.cumsum(rng.normal(0.0, traj.sigma, size=traj.steps))
    traj.add_result("spread", float(walk.std()))
    traj.add_result("threads", os.environ.get("OMP_NUM_THREADS", "unset"))  # set by the setup line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="runs/slurm-demo")
    ap.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    ap.add_argument("--time", default="0:10:00", help="time limit per task")
    args = ap.parse_args()

    traj = Trajectory("random_walk")
    traj.add_parameter("seed", 0)
    traj.add_parameter("sigma", 1.0)
    traj.add_parameter("steps", 1000)
    traj.explore(cartesian_product({"sigma": [0.5, 1.0, 2.0], "seed": list(range(20))}))

    env = Environment(
        traj, storage=HDF5StorageService(f"{args.workdir}.h5"), executor="slurm", workdir=args.workdir,
        runs_per_task=6, partition=args.partition, time_limit=args.time, mem="1G", cpus_per_task=1,
        job_name="random-walk", setup=["export OMP_NUM_THREADS=1"],
    )
    if Workdir(args.workdir).exists():  # run again: finish what is missing instead of starting over
        handle = SweepHandle(Workdir(args.workdir), Path(f"{args.workdir}.h5"))
        print(f"{args.workdir} exists; resubmitted tasks {handle.resubmit() or 'none (all complete)'}")
    else:
        handle = env.submit(simulate)
        print(f"submitted {len(traj)} runs; status: pypet-hpc status {args.workdir}")
    handle.wait(progress=True)
    print(handle.merge().summary())

    merged = load_trajectory(f"{args.workdir}.h5")
    sigma = np.array(merged.explored["sigma"])
    spread = merged.get_from_runs("spread")
    for s in np.unique(sigma):
        print(f"sigma={s}: mean spread {spread[sigma == s].mean():.2f}")
    print(f"OMP_NUM_THREADS in the jobs: {merged.results.runs.run_00000000.threads.value}")


if __name__ == "__main__":
    main()
