"""The seed's quick start, run as a script exactly as written, and its file loaded back."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from pypet_rebuild import StorageError, load_trajectory
from pypet_rebuild.storage import FORMAT_VERSION

from .conftest import ROOT


def test_quickstart_runs_as_a_script_and_loads_back(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".example.h5.lock", "example.h5"]
    traj = load_trajectory(tmp_path / "example.h5")
    assert traj.name == "multiplication" and len(traj) == 6
    assert traj.parameters["x"].value == 0 and traj.parameters["y"].value == 0
    points = list(zip(traj.explored["x"], traj.explored["y"], strict=True))
    assert points == [(1, 10), (1, 20), (2, 10), (2, 20), (3, 10), (3, 20)]
    for i, (x, y) in enumerate(points):
        result = traj.results[f"product.{x}_{y}"]
        assert result.value == x * y and type(result.value) is int
        assert traj.results.runs[f"run_{i:08d}"][f"product.{x}_{y}"].value == x * y
    assert (traj.run_info()["status"] == 1).all()


def test_loading_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file"):
        load_trajectory(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(StorageError, match="not an HDF5 file"):
        load_trajectory(tmp_path / "text.h5")
    with h5py.File(tmp_path / "empty.h5", "w"):
        pass
    with pytest.raises(StorageError, match="without a trajectory"):
        load_trajectory(tmp_path / "empty.h5")
    with pytest.raises(StorageError, match="is a directory"):
        load_trajectory(tmp_path)


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path, check=True,
                   capture_output=True, timeout=120)
    with h5py.File(tmp_path / "example.h5", "a") as f:
        f["trajectories/multiplication"].attrs["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(StorageError, match="newer than this pypet-hpc understands"):
        load_trajectory(tmp_path / "example.h5")


def test_the_readme_first_sweep_runs_as_written_and_stores_a_column(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]  # the first code block of the page
    assert 'add_result("product", traj.x * traj.y)' in code
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[10 20 20 40 30 60]"
    with h5py.File(tmp_path / "example.h5", "r") as f:
        assert "trajectories/multiplication/results/runs/columns/product" in f
