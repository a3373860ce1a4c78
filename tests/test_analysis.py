"""Analysis on a loaded file: get_from_runs, find_idx, iter_runs/set_run, to_table, to_pandas; laziness."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pypet_rebuild import Environment, HDF5StorageService, PypetError, Trajectory, load_trajectory


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    traj = Trajectory("ana")
    traj.add_parameter("x", 0)
    traj.add_parameter("y", 0.0)
    traj.add_parameter("label", "a")

    def simulate(t: Trajectory) -> None:
        if t.x == 2 and t.y == 0.5:
            raise RuntimeError("bad point")
        t.add_result("z", t.x * t.y)
        t.add_result("n", t.x + 1)
        if t.x == 1:
            t.add_result("only_x1", t.y)
        t.add_result("arr", np.full(3, t.x))

    path = tmp_path / "ana.h5"
    Environment(traj, storage=HDF5StorageService(path)).run_exploration(
        simulate, space={"x": [0, 1, 2], "y": [0.5, 1.5]})
    return path


def test_find_idx_and_current_run_view(sweep_file: Path) -> None:
    traj = load_trajectory(sweep_file)
    assert traj.find_idx(["x", "y"], lambda x, y: x >= 1 and y > 1).tolist() == [3, 5]
    assert traj.find_idx("z", lambda z: z is None).tolist() == [4]  # the failed run has no z
    assert traj.find_idx("label", lambda s: s == "a").tolist() == list(range(6))
    seen = [(traj.x, traj.y, traj.results.z.value) for _ in traj.iter_runs() if traj.current_run != 4]
    assert seen[0] == (0, 0.5, 0.0) and seen[-1] == (2, 1.5, 3.0)
    assert traj.current_run is None and traj.x == 0
    with pytest.raises(PypetError, match="neither a parameter nor a per-run result"):
        traj.find_idx("nope", bool)


def test_to_table_and_get_from_runs(sweep_file: Path) -> None:
    traj = load_trajectory(sweep_file)
    table = traj.to_table()
    assert table.dtype.names is not None
    assert {"idx", "status", "duration", "x", "y", "z", "n", "only_x1"} <= set(table.dtype.names)
    assert "arr" not in table.dtype.names  # only scalar results are table columns
    assert table["x"].tolist() == [0, 0, 1, 1, 2, 2]
    assert table["status"].tolist() == [1, 1, 1, 1, 2, 1]
    assert np.ma.getmaskarray(table["z"]).tolist() == [False] * 4 + [True, False]
    assert np.ma.getmaskarray(table["only_x1"]).tolist() == [True, True, False, False, True, True]
    arr = traj.get_from_runs("arr")
    assert arr.shape == (6, 3) and arr[3].tolist() == [1, 1, 1]


def test_to_pandas(sweep_file: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = load_trajectory(sweep_file).to_pandas()
    assert isinstance(frame, pd.DataFrame) and len(frame) == 6
    assert np.isnan(frame.loc[4, "z"]) and frame.loc[5, "z"] == 3.0


def test_loading_reads_only_what_is_asked(tmp_path: Path, sweep_file: Path) -> None:
    """Opening a file reads parameters and explored values; a column read touches only that column."""
    reads: list[str] = []
    original = h5py.Dataset.__getitem__

    def spy(self: h5py.Dataset, key: object) -> object:
        reads.append(self.name)
        return original(self, key)

    h5py.Dataset.__getitem__ = spy  # type: ignore[method-assign]
    try:
        traj = load_trajectory(sweep_file)
        assert not [r for r in reads if "/runs/" in r]
        reads.clear()
        traj.get_from_runs("z")
    finally:
        h5py.Dataset.__getitem__ = original  # type: ignore[method-assign]
    assert reads and all(r.endswith("/z") for r in reads), reads


def test_to_xarray_puts_a_grid_on_its_dims_with_failed_runs_as_nan(sweep_file: Path) -> None:
    pytest.importorskip("xarray")
    t = load_trajectory(sweep_file)
    ds = t.to_xarray()
    assert list(ds["z"].dims) == ["x", "y"] and dict(ds.sizes) == {"x": 3, "y": 2, "arr_dim_0": 3}
    for i in range(len(t)):
        point = {name: t.explored[name][i] for name in ds["z"].dims}
        z = float(ds["z"].sel(point))
        if t.explored["x"][i] == 2 and t.explored["y"][i] == 0.5:
            assert np.isnan(z) and ds["status"].sel(point).item() == "failed"
        else:
            assert z == t.explored["x"][i] * t.explored["y"][i]
    assert ds["arr"].dims[-1] == "arr_dim_0" and ds["arr"].shape[-1] == 3


def test_to_xarray_zipped_groups_share_a_dim_and_scattered_points_get_a_run_dim(tmp_path: Path) -> None:
    pytest.importorskip("xarray")
    from pypet_rebuild import cartesian_product

    traj = Trajectory("zip")
    for name in ("a", "b", "c"):
        traj.add_parameter(name, 0)
    traj.explore(cartesian_product({"a": [1, 2, 3], "b": [10, 20, 30], "c": [5, 6]}, [("a", "b")]))

    def simulate(t: Trajectory) -> None:
        t.add_result("s", t.a + t.b + t.c)

    Environment(traj, storage=HDF5StorageService(tmp_path / "zip.h5")).run_exploration(simulate)
    ds = load_trajectory(tmp_path / "zip.h5").to_xarray()
    assert dict(ds.sizes) == {"a": 3, "c": 2}
    assert list(ds["b"].dims) == ["a"] and list(ds["b"].values) == [10, 20, 30]
    assert float(ds["s"].sel(a=2, c=6)) == 2 + 20 + 6
    loose = Trajectory("loose")
    loose.add_parameter("a", 0)
    loose.add_parameter("b", 0)
    loose.explore({"a": [1, 2, 2], "b": [1, 1, 5]})  # not every combination: no grid
    Environment(loose, storage=HDF5StorageService(tmp_path / "loose.h5")).run_exploration(simulate_ab)
    flat = load_trajectory(tmp_path / "loose.h5").to_xarray()
    assert dict(flat.sizes) == {"run": 3} and list(flat["a"].values) == [1, 2, 2]
    assert list(flat["s"].values) == [2.0, 3.0, 7.0]


def simulate_ab(t: Trajectory) -> None:
    t.add_result("s", t.a + t.b)
