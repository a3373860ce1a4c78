"""pypet's storage and whole-trajectory idioms: store and load without an Environment run, items
loaded or emptied one by one, skeleton loading, post-processing written into a merged file,
N-way combine, is_completed, explored ranges, iter_runs, and live multiprocessing objects refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pypet_rebuild import Environment, HDF5StorageService, Trajectory, load_trajectory
from pypet_rebuild.cli import main
from pypet_rebuild.combine import merge_all_in_folder


def _sweep(path: Path, xs: list[int], only_in: int | None = None) -> Path:
    """A sweep over ``x`` storing ``z = 10 x`` in every run (``extra`` only when x == only_in)."""
    traj = Trajectory("t")
    traj.add_parameter("x", 0)

    def simulate(t: Trajectory) -> None:
        t.add_result("z", t.x * 10)
        if t.x == only_in:
            t.add_result("extra", float(t.x))

    traj.explore({"x": xs})
    Environment(traj, storage=HDF5StorageService(path)).run_exploration(simulate)
    return path


def test_combine_cli_three_inputs(tmp_path: Path) -> None:
    files = [_sweep(tmp_path / f"{k}.h5", xs) for k, xs in enumerate([[1, 2], [3], [4, 5, 6]])]
    out = tmp_path / "all.h5"
    res = CliRunner().invoke(main, ["combine", *map(str, files), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "6 ok, 0 failed, 0 missing of 6 runs (3 new files merged)" in res.output
    traj = load_trajectory(out)
    assert traj.explored["x"] == [1, 2, 3, 4, 5, 6]
    assert traj.get_from_runs("z").tolist() == [10, 20, 30, 40, 50, 60]


@pytest.mark.parametrize("order", ["column first", "item first"])
def test_combine_folds_a_per_run_item_into_the_other_files_column(tmp_path: Path, order: str) -> None:
    many = _sweep(tmp_path / "many.h5", [1, 2, 3], only_in=None)  # z a column over 3 runs
    one = _sweep(tmp_path / "one.h5", [4], only_in=4)  # z and extra per run (one run)
    inputs = [many, one] if order == "column first" else [one, many]
    out = tmp_path / "out.h5"
    merge_cmd = ["combine", *map(str, inputs), "-o", str(out)]
    assert CliRunner().invoke(main, merge_cmd).exit_code == 0
    z = load_trajectory(out).get_from_runs("z")
    expected = [10, 20, 30, 40] if order == "column first" else [40, 10, 20, 30]
    assert z.tolist() == expected and not np.ma.is_masked(z)


def test_merge_all_in_folder(tmp_path: Path) -> None:
    for k, xs in enumerate([[1], [2, 3], [4]]):
        _sweep(tmp_path / f"part{k}.h5", xs)
    report = merge_all_in_folder(tmp_path)
    assert report.ok == 4 and report.target == tmp_path / "merged.h5"
    assert load_trajectory(tmp_path / "merged.h5").get_from_runs("z").tolist() == [10, 20, 30, 40]
