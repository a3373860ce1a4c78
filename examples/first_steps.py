"""First steps, pypet style: a damped, driven oscillator swept over drive frequency and damping.

Run it on local worker processes and merge the shards into one file:

    pypet-hpc submit examples/first_steps.py --executor local --wait -o oscillator.h5

`make_trajectory()` declares the parameters with their defaults, `space` is explored as a
cartesian product (override or add values with `-p omega=0.5,1.0`), and `simulate(traj)` runs
once per point, adding results that land in the trajectory file.
"""

from __future__ import annotations

import numpy as np

from pypet_rebuild import Parameter, Trajectory


def make_trajectory() -> Trajectory:
    traj = Trajectory("oscillator", comment="x'' + 2 zeta x' + x = cos(omega t)")
    traj.add_parameter(Parameter(name="drive.omega", value=1.0, comment="drive frequency / natural frequency"))
    traj.add_parameter("drive.zeta", 0.1, comment="damping ratio")
    traj.add_parameter("sim.dt", 0.05, comment="time step")
    traj.add_parameter("sim.steps", 2000, comment="number of steps")
    return traj


space = {
    "drive.omega": list(np.round(np.linspace(0.5, 1.5, 21), 3)),
    "drive.zeta": [0.05, 0.1, 0.2, 0.4, 0.8],
}


def simulate(traj: Trajectory) -> None:
    """Integrate the oscillator (semi-implicit Euler) and record the steady-state amplitude."""
    omega, zeta = traj.omega, traj.zeta
    dt, steps = traj.parameters.sim.dt.value, traj.parameters.sim.steps.value
    x, v = 0.0, 0.0
    trace = np.empty(steps)
    for i in range(steps):
        v += dt * (np.cos(omega * i * dt) - 2 * zeta * v - x)
        x += dt * v
        trace[i] = x
    steady = trace[steps // 2:]
    traj.add_result("amplitude", float(np.abs(steady).max()), comment="max |x| in the second half")
    traj.add_result("energy", float(0.5 * (v**2 + x**2)))
    traj.add_result("trace", trace[::40].copy(), comment="x(t), every 40th step")
