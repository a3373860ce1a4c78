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
