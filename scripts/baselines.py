"""Baselines for the benchmark: the bare h5py floor and pypet 0.7.0, measured in the same run.

The sweep is the same everywhere: ``n_runs`` runs over a cartesian product of ``x`` and ``y``
(see :func:`sweep_axes`); run ``i`` yields three scalars ``z = x * y``, ``w = x + y`` and
``v = float(i)``. pypet 0.7.0 needs Python >= 3.12, so it runs in its own venv as a subprocess
(``scripts/pypet_baseline_child.py``); the floor runs in this interpreter.

    python scripts/baselines.py [--runs 1000] [--pypet-python PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import h5py
import numpy as np

PYPET_MIN_PYTHON = (3, 12)
PYPET_PIP_SPEC = ("pypet==0.7.0",)
CHILD_SCRIPT = Path(__file__).with_name("pypet_baseline_child.py")
BENCH_DIR = Path(__file__).resolve().parent.parent / ".bench"
VENV_RECORD = "pypet-baseline.json"


class PypetTimings(TypedDict):
    """What :func:`pypet_sweep` measures (seconds unless named otherwise)."""

    versions: dict[str, str]
    n_runs: int
    setup_seconds: float
    run_seconds: float
    per_run_seconds: float
    load_seconds: float
    load_method: str
    load_variants: dict[str, float]
    file_bytes: int


def sweep_axes(n_runs: int) -> tuple[list[float], list[float]]:
    """The explored values: ``len(xs) * len(ys) == n_runs``, as square as ``n_runs`` allows.

    Run ``i`` uses ``xs[i // len(ys)]`` and ``ys[i % len(ys)]`` (``x`` varies slowest).
    """
    if n_runs < 1:
        raise ValueError(f"n_runs must be >= 1, got {n_runs}")
    n_x = max(d for d in range(1, int(n_runs**0.5) + 1) if n_runs % d == 0)
    n_y = n_runs // n_x
    return [0.5 * k for k in range(n_x)], [0.25 * k + 1.0 for k in range(n_y)]


def _simulate(x: float, y: float, i: int) -> tuple[float, float, float]:
    """The trivial per-run simulation shared by every baseline."""
    return x * y, x + y, float(i)


def floor_sweep(n_runs: int, path: Path) -> float:
    """Compute the sweep run by run in one process and write each column with h5py.

    Returns wall seconds from the first run to the closed file.
    """
    xs, ys = sweep_axes(n_runs)
    start = time.perf_counter()
    columns: dict[str, list[float]] = {name: [] for name in ("x", "y", "z", "w", "v")}
    i = 0
    for x in xs:
        for y in ys:
            z, w, v = _simulate(x, y, i)
            columns["x"].append(x)
            columns["y"].append(y)
            columns["z"].append(z)
            columns["w"].append(w)
            columns["v"].append(v)
            i += 1
    with h5py.File(path, "w") as handle:
        for name, values in columns.items():
            handle.create_dataset(name, data=np.asarray(values, dtype=np.float64))
    return time.perf_counter() - start


def floor_read(path: Path, column: str = "z") -> float:
    """Wall seconds to open a :func:`floor_sweep` file and read one column into memory."""
    start = time.perf_counter()
    with h5py.File(path, "r") as handle:
        handle[column][...]
    return time.perf_counter() - start


def _python_version(python: Path) -> tuple[int, int] | None:
    """``(major, minor)`` of an interpreter, or None if it does not run (e.g. a dead shim)."""
    try:
        done = subprocess.run(
            [str(python), "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = done.stdout.split()
    if done.returncode != 0 or len(parts) != 2:
        return None
    return int(parts[0]), int(parts[1])


def _candidate_pythons() -> list[Path]:
    """Where a Python >= 3.12 usually lives: pyenv's 3.12.1, ``python3.12``, this interpreter."""
    found: list[Path] = []
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        root = subprocess.run(
            [pyenv, "root"], capture_output=True, text=True, timeout=30, check=False
        )
        if root.returncode == 0 and root.stdout.strip():
            found.append(Path(root.stdout.strip()) / "versions" / "3.12.1" / "bin" / "python")
    on_path = shutil.which("python3.12")
    if on_path is not None:
        found.append(Path(on_path))
    found.append(Path(sys.executable))
    return found


def pypet_python(explicit: str | None = None) -> Path | None:
    """A Python >= 3.12 for pypet 0.7.0: ``explicit`` if given, else the first that works.

    Raises ValueError if ``explicit`` is not such an interpreter; returns None if none is found.
    """
    if explicit is not None:
        python = Path(explicit).expanduser()
        version = _python_version(python)
        if version is None or version < PYPET_MIN_PYTHON:
            got = "does not run" if version is None else "is Python {}.{}".format(*version)
            raise ValueError(f"--pypet-python {explicit} {got}; pypet 0.7.0 needs Python >= 3.12")
        return python
    for python in _candidate_pythons():
        version = _python_version(python)
        if version is not None and version >= PYPET_MIN_PYTHON:
            return python
    return None


def _venv_python(where: Path) -> Path:
    """The interpreter inside the venv at ``where``."""
    if os.name == "nt":
        return where / "Scripts" / "python.exe"
    return where / "bin" / "python"


def _venv_record(where: Path) -> dict[str, object] | None:
    """The record written by a completed :func:`ensure_pypet_venv`, if any."""
    try:
        record = json.loads((where / VENV_RECORD).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def ensure_pypet_venv(python: Path, where: Path) -> Path:
    """Create a venv at ``where`` from ``python`` with pypet 0.7.0; reuse it if already made.

    The venv counts as made only once pip succeeded and ``import pypet`` worked; a half-built
    one is rebuilt. Returns the venv's python.
    """
    venv_python = _venv_python(where)
    wanted: dict[str, object] = {"base_python": str(python), "pip_spec": list(PYPET_PIP_SPEC)}
    record = _venv_record(where)
    if record is not None and all(record.get(key) == value for key, value in wanted.items()):
        check = [str(venv_python), "-c", "import pypet"]
        if subprocess.run(check, capture_output=True, check=False).returncode == 0:
            return venv_python
    if where.exists():
        if not (where / "pyvenv.cfg").exists():
            raise FileExistsError(f"{where} exists and is not a venv; refusing to replace it")
        shutil.rmtree(where)
    start = time.perf_counter()
    subprocess.run([str(python), "-m", "venv", str(where)], check=True)
    pip = [str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run([*pip, *PYPET_PIP_SPEC], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(PYPET_PIP_SPEC)} failed:\n{done.stderr[-2000:]}")
    subprocess.run([str(venv_python), "-c", "import pypet"], check=True)
    wanted["created_seconds"] = time.perf_counter() - start
    (where / VENV_RECORD).write_text(json.dumps(wanted, indent=2) + "\n")
    return venv_python


def pypet_sweep(venv_python: Path, n_runs: int, workdir: Path) -> PypetTimings:
    """Run the sweep with pypet 0.7.0's serial Environment in ``venv_python``; return timings.

    The child writes ``workdir/pypet_sweep.hdf5`` and logs pypet's chatter to
    ``workdir/pypet_child.log``; it checks every read-back ``z`` against ``x * y``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    xs, ys = sweep_axes(n_runs)
    spec = {"filename": str((workdir / "pypet_sweep.hdf5").resolve()), "xs": xs, "ys": ys}
    log = workdir / "pypet_child.log"
    with log.open("w") as stderr:
        done = subprocess.run(
            [str(venv_python), str(CHILD_SCRIPT), json.dumps(spec)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"pypet child failed (exit {done.returncode}); log {log}:\n{tail}")
    lines = done.stdout.strip().splitlines()
    timings: PypetTimings = json.loads(lines[-1])
    if timings["n_runs"] != n_runs:
        raise RuntimeError(f"pypet child ran {timings['n_runs']} runs, expected {n_runs}")
    return timings


def _row(label: str, n_runs: int, wall: float, read: float | None) -> str:
    """One table line: runs, wall seconds, microseconds per run, read-back seconds."""
    read_text = "-" if read is None else f"{read:.4f}"
    return f"{label:<34} {n_runs:>8} {wall:>10.4f} {wall / n_runs * 1e6:>12.1f} {read_text:>10}"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the floor and pypet 0.7.0 and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs for pypet and the floor")
    parser.add_argument(
        "--floor-runs",
        type=int,
        nargs="*",
        default=[100_000],
        help="extra floor sizes (default: 100000)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="take the median of this many")
    parser.add_argument("--pypet-python", help="Python >= 3.12 to build pypet's venv from")
    parser.add_argument("--workdir", type=Path, default=BENCH_DIR / "baselines")
    parser.add_argument("--venv", type=Path, default=BENCH_DIR / "pypet-0.7.0-venv")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeats < 1:
        parser.error("--runs and --repeats must be >= 1")
    args.workdir.mkdir(parents=True, exist_ok=True)

    header = f"{'baseline':<34} {'runs':>8} {'wall s':>10} {'us/run':>12} {'read z s':>10}"
    rows: list[str] = []
    for n_runs in dict.fromkeys([args.runs, *args.floor_runs]):
        path = args.workdir / f"floor_{n_runs}.h5"
        walls, reads = [], []
        for _ in range(args.repeats):
            walls.append(floor_sweep(n_runs, path))
            reads.append(floor_read(path))
        rows.append(
            _row(
                "floor (1 process, h5py)",
                n_runs,
                statistics.median(walls),
                statistics.median(reads),
            )
        )

    notes: list[str] = []
    try:
        python = pypet_python(args.pypet_python)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if python is None:
        notes.append("pypet baseline skipped: no Python >= 3.12 found; pass --pypet-python")
    else:
        reused = _venv_record(args.venv) is not None
        start = time.perf_counter()
        venv_python = ensure_pypet_venv(python, args.venv)
        ready = time.perf_counter() - start
        record = _venv_record(args.venv) or {}
        notes.append(
            f"pypet venv {args.venv} from {python}: "
            + (f"reused (check {ready:.1f} s)" if reused else f"created in {ready:.1f} s")
            + f"; first build took {record.get('created_seconds', float('nan')):.1f} s"
        )
        results = [pypet_sweep(venv_python, args.runs, args.workdir) for _ in range(args.repeats)]
        run_s = statistics.median(r["run_seconds"] for r in results)
        load_s = statistics.median(r["load_seconds"] for r in results)
        rows.append(_row("pypet 0.7.0 serial Environment", args.runs, run_s, load_s))
        last = results[-1]
        notes.append(
            "pypet versions: " + ", ".join(f"{k} {v}" for k, v in last["versions"].items())
        )
        for label in last["load_variants"]:
            median = statistics.median(r["load_variants"][label] for r in results)
            notes.append(f"pypet read z via {label}: {median:.3f} s")
        notes.append(
            f"pypet setup (Environment + explore) {last['setup_seconds']:.3f} s; "
            f"file {last['file_bytes'] / 1e6:.1f} MB; "
            "per-run times: " + ", ".join(f"{r['per_run_seconds'] * 1e3:.2f} ms" for r in results)
        )

    print(f"median of {args.repeats}; python {sys.version.split()[0]}, h5py {h5py.__version__}")
    print(header)
    print("\n".join(rows))
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
