"""Numpy arrays per run: the Lorenz attractor integrated over a (rho, sigma) grid.

    pypet-hpc submit examples/lorenz.py --executor local --wait -o lorenz.h5
    python -c "from pypet_rebuild import load_trajectory; t = load_trajectory('lorenz.h5'); \\
               print(t.get_from_runs('orbit').shape)"     # (runs, 200, 3): one array per run

Each run stores its orbit (an array of shape (200, 3)), its final state and the largest |x|.
Same-shaped arrays from every run become one column with a leading run axis in the merged file.
"""

from __future__ import annotations

import numpy as np

from pypet_rebuild import Trajectory


def make_trajectory() -> Trajectory:
    traj = Trajectory("lorenz", comment="dx/dt = sigma (y - x), dy/dt = x (rho - z) - y, dz/dt = x y - beta z")
    traj.add_parameter("lorenz.sigma", 10.0)
    traj.add_parameter("lorenz.rho", 28.0)
    traj.add_parameter("lorenz.beta", 8.0 / 3.0)
    traj.add_parameter("integration.dt", 0.01)
    traj.add_parameter("integration.steps", 4000)
    traj.add_parameter("integration.start", np.array([1.0, 1.0, 1.0]), comment="initial state")
    return traj


space = {"lorenz.rho": [0.5, 10.0, 24.0, 28.0, 99.96], "lorenz.sigma": [8.0, 10.0, 12.0]}


def derivative(state: np.ndarray, sigma: float, rho: float, beta: float) -> np.ndarray:
    x, y, z = state
    return np.array([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])


def simulate(traj: Trajectory) -> None:
    """Fourth-order Runge-Kutta; keeps every 20th state."""
    sigma, rho, beta = traj.sigma, traj.rho, traj.beta
    dt, steps = traj.dt, traj.steps
    state = np.array(traj.start, dtype=float)
    orbit = np.empty((steps // 20, 3))
    for i in range(steps):
        k1 = derivative(state, sigma, rho, beta)
        k2 = derivative(state + dt / 2 * k1, sigma, rho, beta)
        k3 = derivative(state + dt / 2 * k2, sigma, rho, beta)
        k4 = derivative(state + dt * k3, sigma, rho, beta)
        state = state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if i % 20 == 0:
            orbit[i // 20] = state
    traj.add_result("orbit", orbit, comment="every 20th state, shape (steps/20, 3)")
    traj.add_result("final", state)
    traj.add_result("max_abs_x", float(np.abs(orbit[:, 0]).max()))
