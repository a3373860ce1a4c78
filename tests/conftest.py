"""Shared fixtures: sweep files written into tmp_path, and a helper to run the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from pypet_rebuild.executors.slurm import SlurmExecutor
from pypet_rebuild.workdir import Workdir

ROOT = Path(__file__).resolve().parents[1]
SWEEP = textwrap.dedent(
    '''
    import os
    import time

    import numpy as np

    from pypet_rebuild import Trajectory

    def make_trajectory():
        traj = Trajectory("sq", comment="test sweep")
        traj.add_parameter("x", 0.0, comment="a float")
        traj.add_parameter("n", 0)
        return traj

    space = {"x": [0.5, 1.5], "n": list(range(%(n)d))}

    def simulate(traj):
        delay = float(os.environ.get("SWEEP_DELAY", "0"))
        if delay:
            time.sleep(delay)
        if traj.n == %(fail_n)d:
            raise ValueError(f"unlucky {traj.n}")
        traj.add_result("z", traj.x * traj.n)
        traj.add_result("vec", np.arange(3) * traj.n)
    '''
)


def write_sweep(folder: Path, n: int = 50, fail_n: int = -1, name: str = "sweep.py") -> Path:
    path = folder / name
    path.write_text(SWEEP % {"n": n, "fail_n": fail_n})
    return path


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    return write_sweep(tmp_path)


@pytest.fixture
def sweeps() -> Iterator[list[Path]]:
    """SLURM workdirs made by a test; whatever of theirs is still queued is cancelled afterwards."""
    made: list[Path] = []
    yield made
    for path in made:
        if (path / "manifest.json").exists():
            SlurmExecutor().cancel(Workdir(path))


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``pypet-hpc`` as a user would, in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "pypet_rebuild.cli", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"pypet-hpc {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out
