"""An adaptive sweep: refine a grid wave by wave until a threshold is bracketed tightly.

    python examples/adaptive_bisection.py [--executor local|slurm|inline] [--workdir runs/adaptive]

A driven, damped oscillator's steady-state amplitude grows with the drive frequency omega below
resonance. Where does it reach LEVEL? Each wave evaluates 5 points of a bracket (the first wave
0, 0.25, ..., 1); post-processing finds the two neighbouring points between which the amplitude
crosses LEVEL and asks for the 3 points inside them, so the bracket shrinks 4-fold per wave. With
the defaults it closes below 1e-3 after 5 waves and 17 runs, around omega = 0.72202 (the exact
root of 1 / sqrt((1 - w^2)^2 + (2 zeta w)^2) = 2 at zeta = 0.1).

Every wave runs in the same workdir and is merged into the same file; the post-processing runs
here, in this process. On SLURM (``--executor slurm``) this script must keep running while the
waves go (a login shell, tmux or screen, or `nohup python ... &`); each wave's jobs are ordinary
array jobs that `pypet-hpc status WORKDIR` shows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pypet_rebuild import Environment, HDF5StorageService, Trajectory, load_trajectory
from pypet_rebuild.workdir import Workdir

POINTS_PER_WAVE = 5  # the bracket's ends and 3 points inside


def simulate(traj: Trajectory, level: float) -> float:
    """The amplitude at this drive frequency, minus ``level`` (a job argument): its sign says on
    which side of the threshold omega lies. The return value is stored as the result job_return."""
    omega, zeta = traj.omega, traj.zeta
    amplitude = 1.0 / np.sqrt((1 - omega**2) ** 2 + (2 * zeta * omega) ** 2)
    traj.add_result("amplitude", float(amplitude))
    return float(amplitude - level)


def bracket(traj: Trajectory, results: list[tuple[int, Any]]) -> tuple[float, float]:
    """The narrowest pair of neighbouring points between which the sign of the results changes."""
    omegas = traj.explored["drive.omega"]
    pairs = sorted((omegas[i], value) for i, value in results)
    for (lo, f_lo), (hi, f_hi) in zip(pairs, pairs[1:], strict=False):
        if f_lo < 0 <= f_hi:
            return lo, hi
    raise SystemExit("the amplitude does not cross the level inside the first bracket")


def refine(traj: Trajectory, results: list[tuple[int, Any]], tol: float, waves: list[float]) -> dict[str, list[float]] | None:
    """Post-processing after each wave: the 3 points inside the bracket, or None once it is narrow."""
    lo, hi = bracket(traj, results)
    waves.append(hi - lo)
    print(f"wave {len(waves)}: {len(results)} runs, bracket [{lo:.6f}, {hi:.6f}] (width {hi - lo:.2g})")
    if hi - lo < tol:
        return None
    step = (hi - lo) / (POINTS_PER_WAVE - 1)
    return {"drive.omega": [lo + k * step for k in range(1, POINTS_PER_WAVE - 1)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--executor", default="local", choices=["local", "slurm", "inline"])
    ap.add_argument("--workdir", default="runs/adaptive")
    ap.add_argument("--level", type=float, default=2.0, help="the amplitude to find")
    ap.add_argument("--tol", type=float, default=1e-3, help="stop when the bracket is narrower")
    args = ap.parse_args()
    if Workdir(args.workdir).exists():
        sys.exit(f"{args.workdir} holds a sweep already; remove it or pass another --workdir")

    traj = Trajectory("adaptive_bisection")
    traj.add_parameter("drive.omega", 0.0, comment="drive frequency / natural frequency")
    traj.add_parameter("drive.zeta", 0.1, comment="damping ratio")
    traj.explore({"drive.omega": [k / (POINTS_PER_WAVE - 1) for k in range(POINTS_PER_WAVE)]})

    output = Path(f"{args.workdir}.h5")
    options: dict[str, Any] = {"time_limit": "0:05:00", "job_name": "adaptive"} if args.executor == "slurm" else {}
    env = Environment(traj, storage=HDF5StorageService(output), executor=args.executor, workdir=args.workdir,
                      **options)
    waves: list[float] = []
    env.add_postprocessing(refine, args.tol, waves)
    results = env.run(simulate, args.level)  # pypet's [(run_idx, value), ...]

    lo, hi = bracket(traj, results)
    print(f"omega where the amplitude reaches {args.level}: {(lo + hi) / 2:.5f} (bracket width {hi - lo:.2g}) "
          f"after {len(waves)} waves, {len(results)} runs")
    stored = load_trajectory(output)  # the return values are in the file too, as the result job_return
    returned = stored.get_from_runs("job_return")
    print(f"{output}: {len(stored)} runs, job_return stored for {returned.count()}")


if __name__ == "__main__":
    main()
