"""Every example runs as its docstring says (the SLURM one in tests/test_slurm.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from pypet_rebuild import load_trajectory

from .conftest import ROOT, cli


def test_first_steps_and_analysis_with_plot(tmp_path: Path) -> None:
    cli("submit", str(ROOT / "examples" / "first_steps.py"), "--workdir", "wd", "--wait", "-o", "osc.h5",
        cwd=tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "analyse.py"), "osc.h5", "--plot", "res.png"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True).stdout
    assert "105 runs, 105 ok" in out
    assert "0.05       1.000" in out  # the sharpest resonance sits at omega = 1
    png = (tmp_path / "res.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_lorenz_stores_an_array_per_run(tmp_path: Path) -> None:
    cli("submit", str(ROOT / "examples" / "lorenz.py"), "--workdir", "wd", "--wait", "-o", "lorenz.h5",
        cwd=tmp_path)
    traj = load_trajectory(tmp_path / "lorenz.h5")
    orbit = traj.get_from_runs("orbit")
    assert orbit.shape == (15, 200, 3) and not np.ma.getmaskarray(orbit).any()
    rho = np.array(traj.explored["lorenz.rho"])
    max_x = traj.get_from_runs("max_abs_x")
    assert (max_x[rho < 1] < 1.01).all()  # below rho = 1 the origin attracts
    assert (max_x[rho > 20] > 5).all()  # chaotic regime: large excursions
    assert traj.results.runs.run_00000000.final.value.shape == (3,)


def test_analyse_works_on_any_sweep_and_fails_in_one_line(tmp_path: Path) -> None:
    from .conftest import write_sweep

    sweep = write_sweep(tmp_path, n=4)  # explores x and n; results z (scalar) and vec (array)
    cli("submit", str(sweep), "--workdir", "wd", "--wait", "-o", "sq.h5", cwd=tmp_path)
    run = [sys.executable, str(ROOT / "examples" / "analyse.py")]
    out = subprocess.run([*run, "sq.h5", "--x", "n", "--by", "x"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "     x      peak n          peak z" in out.stdout and "largest z in run 7: x=1.5, n=3" in out.stdout
    bad = subprocess.run([*run, "sq.h5", "--result", "vec"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "--result vec: not a scalar numeric result" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_heatmap_plots_a_gridded_sweep_through_xarray(tmp_path: Path) -> None:
    import pytest

    pytest.importorskip("xarray")
    cli("submit", str(ROOT / "examples" / "first_steps.py"), "--workdir", "wd", "--wait", "-o", "osc.h5",
        cwd=tmp_path)
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "heatmap.py"), "osc.h5", "--plot", "hm.png"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "drive.zeta" in out.stdout and "heat map saved to hm.png" in out.stdout
    assert (tmp_path / "hm.png").read_bytes().startswith(b"\x89PNG")


def test_the_adaptive_example_converges_on_local_workers(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "adaptive_bisection.py"), "--workdir",
                          str(tmp_path / "adaptive")], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "0.72217 (bracket width 0.00098) after 5 waves, 17 runs" in out.stdout
    assert "17 runs, job_return stored for 17" in out.stdout
