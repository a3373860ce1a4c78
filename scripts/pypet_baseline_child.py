"""Time pypet 0.7.0's serial Environment on the baseline sweep; print one JSON object.

Runs inside the pypet venv (Python >= 3.12), started by ``scripts/baselines.py``:

    python pypet_baseline_child.py '{"filename": "...", "xs": [...], "ys": [...]}'

Run ``i`` takes ``x = xs[i // len(ys)]`` and ``y = ys[i % len(ys)]`` (a cartesian product,
``x`` slowest) and adds three scalar results: ``z = x * y``, ``w = x + y``, ``v = float(i)``.
Everything pypet prints goes to stderr; stdout carries only the JSON line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

TRAJECTORY = "sweep"


def simulate(traj: Any) -> None:
    """The trivial per-run simulation: three scalar results, each its own pypet leaf."""
    x = traj.x
    y = traj.y
    traj.f_add_result("z", x * y)
    traj.f_add_result("w", x + y)
    traj.f_add_result("v", float(traj.v_idx))


def run_sweep(filename: str, xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Build and run the sweep with pypet's defaults (serial, HDF5); return (setup s, run s)."""
    from pypet import Environment, cartesian_product

    start = time.perf_counter()
    with Environment(
        trajectory=TRAJECTORY,
        filename=filename,
        overwrite_file=True,
        log_config=None,  # no log files: keep pypet's cost to the sweep itself
        report_progress=False,
    ) as env:
        traj = env.traj
        traj.f_add_parameter("x", 0.0)
        traj.f_add_parameter("y", 0.0)
        traj.f_explore(cartesian_product({"x": xs, "y": ys}, ("x", "y")))
        ready = time.perf_counter()
        env.run(simulate)
        done = time.perf_counter()
    return ready - start, done - ready


def _fresh(filename: str, results: int) -> Any:
    """A new Trajectory loaded from ``filename``: parameters with data, results at ``results``."""
    from pypet import Trajectory

    traj = Trajectory(filename=filename)
    traj.f_load(name=TRAJECTORY, load_parameters=2, load_results=results)
    return traj


def read_full(filename: str) -> list[float]:
    """Load every result with its data, then collect ``z`` from all runs."""
    traj = _fresh(filename, results=2)
    return list(traj.f_get_from_runs("z", fast_access=True).values())


def read_auto_load(filename: str) -> list[float]:
    """Load the results skeleton; let ``f_get_from_runs`` fetch ``z`` leaf by leaf."""
    traj = _fresh(filename, results=1)
    return list(traj.f_get_from_runs("z", fast_access=True, auto_load=True).values())


def read_load_items(filename: str) -> list[float]:
    """Load the results skeleton, then fetch only the ``z`` leaves in one storage call."""
    traj = _fresh(filename, results=1)
    leaves = traj.f_get_from_runs("z", fast_access=False)
    traj.f_load_items(list(leaves.values()))
    return list(traj.f_get_from_runs("z", fast_access=True).values())


READERS: dict[str, Callable[[str], list[float]]] = {
    "f_load(load_results=2)": read_full,
    "skeleton+auto_load": read_auto_load,
    "skeleton+f_load_items": read_load_items,
}


def versions() -> dict[str, str]:
    """Versions of the interpreter and the packages that shape pypet's speed."""
    found = {"python": ".".join(str(part) for part in sys.version_info[:3])}
    for name in ("pypet", "numpy", "tables", "pandas", "scipy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run, then time each read-back route; check every ``z`` against ``x * y``."""
    filename = str(spec["filename"])
    xs = [float(value) for value in spec["xs"]]
    ys = [float(value) for value in spec["ys"]]
    n_runs = len(xs) * len(ys)
    expected = [x * y for x in xs for y in ys]

    setup_s, run_s = run_sweep(filename, xs, ys)
    variants: dict[str, float] = {}
    for label, reader in READERS.items():
        start = time.perf_counter()
        column = reader(filename)
        variants[label] = time.perf_counter() - start
        if column != expected:
            raise SystemExit(f"{label}: read back {len(column)} values that differ from x*y")
    fastest = min(variants, key=variants.__getitem__)
    return {
        "versions": versions(),
        "n_runs": n_runs,
        "setup_seconds": setup_s,
        "run_seconds": run_s,
        "per_run_seconds": run_s / n_runs,
        "load_seconds": variants[fastest],
        "load_method": fastest,
        "load_variants": variants,
        "file_bytes": os.path.getsize(filename),
    }


def main() -> None:
    """Parse the JSON spec from argv, measure with stdout diverted, print the JSON result."""
    spec = json.loads(sys.argv[1])
    with contextlib.redirect_stdout(sys.stderr):
        result = measure(spec)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
