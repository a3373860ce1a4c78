"""pypet's storage and whole-trajectory idioms: store and load without an Environment run, items
loaded or emptied one by one, skeleton loading, post-processing written into a merged file,
N-way combine, is_completed, explored ranges, iter_runs, and live multiprocessing objects refused."""

from __future__ import annotations

import functools
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from pypet_rebuild import Environment, HDF5StorageService, PypetError, Trajectory, load_trajectory
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


def _done(path: Path, fail_x: int | None = None) -> Trajectory:
    traj = Trajectory("done")
    traj.add_parameter("x", 0)
    traj.add_parameter("y", 1.5)

    def simulate(t: Trajectory) -> None:
        if t.x == fail_x:
            raise ValueError("bad x")
        t.add_result("z", t.x * 10)

    traj.explore({"x": [1, 2, 3]})
    Environment(traj, storage=HDF5StorageService(path)).run_exploration(simulate)
    return load_trajectory(path)


# pypet idiom -> pypet-hpc spelling -> the value it gives (on a loaded 3-run file, x = 1, 2, 3)
WHOLE_TRAJECTORY_IDIOMS: list[tuple[str, Any, Any]] = [
    ("traj.f_is_completed()", lambda t: t.is_completed(), True),
    ("traj.f_is_completed('run_00000001')", lambda t: t.is_completed("run_00000001"), True),
    ("traj.f_get('x').f_get_range()", lambda t: t.parameters.x.range, [1, 2, 3]),
    ("traj.f_get('x').f_has_range()", lambda t: t.parameters.x.has_range(), True),
    ("traj.f_get('y').f_has_range()", lambda t: t.parameters.y.has_range(), False),
    ("get_range by short name", lambda t: t.get_range("x"), [1, 2, 3]),
    ("get_range by full name", lambda t: t.get_range("parameters.x"), [1, 2, 3]),
    ("list(traj.f_iter_runs())", lambda t: list(t.iter_runs(yields="name")),
     ["run_00000000", "run_00000001", "run_00000002"]),
    ("f_iter_runs(yields='idx')", lambda t: list(t.iter_runs()), [0, 1, 2]),
    ("f_iter_runs(start, stop, step)", lambda t: list(t.iter_runs(1, 3, 1, yields="idx")), [1, 2]),
    ("f_iter_runs(yields='self')", lambda t: [s.x for s in t.iter_runs(yields="self")], [1, 2, 3]),
    ("f_iter_runs(yields='copy')", lambda t: [c.x for c in list(t.iter_runs(yields="copy"))], [1, 2, 3]),
    ("the view is restored after iter_runs", lambda t: (list(t.iter_runs()), t.current_run, t.x)[1:], (None, 0)),
    ("a name from iter_runs selects the run", lambda t: [t.results.runs[n].z.value for n in t.iter_runs(yields="name")],
     [10, 20, 30]),
]


@pytest.mark.parametrize(("idiom", "call", "expected"), WHOLE_TRAJECTORY_IDIOMS,
                         ids=[row[0] for row in WHOLE_TRAJECTORY_IDIOMS])
def test_whole_trajectory_idioms(tmp_path: Path, idiom: str, call: Any, expected: Any) -> None:
    assert call(_done(tmp_path / "done.h5")) == expected


def test_is_completed_is_false_with_a_failed_run_and_before_any_run(tmp_path: Path) -> None:
    traj = _done(tmp_path / "f.h5", fail_x=2)
    assert [traj.is_completed(i) for i in range(3)] == [True, False, True]
    assert not traj.is_completed()
    fresh = Trajectory("fresh")
    fresh.add_parameter("x", 0)
    assert not fresh.is_completed()


def test_range_and_iter_runs_refuse_what_does_not_exist(tmp_path: Path) -> None:
    from pypet_rebuild.errors import NotExploredError

    traj = _done(tmp_path / "r.h5")
    with pytest.raises(NotExploredError, match="parameter 'y' is not explored") as err:
        traj.get_range("y")
    assert isinstance(err.value, TypeError)  # pypet raises a TypeError here
    with pytest.raises(KeyError, match="no parameter 'nope'"):
        traj.get_range("nope")
    with pytest.raises(ValueError, match="choose one of idx, name, self, copy"):
        list(traj.iter_runs(yields="names"))


_QUEUE: Any = None  # set by the test: a module-level multiprocessing queue a simulation names


def _uses_global_queue(traj: Trajectory) -> None:
    _QUEUE.put(traj.x)


def _live_simulations(manager: Any) -> list[tuple[str, Any, str]]:
    shared = manager.list()
    lock = multiprocessing.Lock()

    def appends(traj: Trajectory) -> None:  # pypet's example_12 (sharing data): Manager().list()
        shared.append(traj.x)

    def locked(traj: Trajectory, lock: Any = lock) -> None:
        with lock:
            traj.add_result("z", traj.x)

    class Collector:
        def __init__(self) -> None:
            self.out = manager.dict()

        def __call__(self, traj: Trajectory) -> None:
            self.out[traj.x] = 1

        def run(self, traj: Trajectory) -> None:
            self.out[traj.x] = 1

    return [
        ("closure", appends, r"appends's closure variable 'shared' is a multiprocessing proxy \(ListProxy\)"),
        ("default", locked, r"a default argument of .*locked is a multiprocessing lock \(Lock\)"),
        ("global", _uses_global_queue, "the global '_QUEUE' _uses_global_queue uses is a multiprocessing queue"),
        ("partial", functools.partial(lambda t, d: None, d={"q": shared}),
         r"argument 'd' of .*\['q'\] is a multiprocessing proxy"),
        ("bound method", Collector().run, r"Collector.run.* is a multiprocessing proxy \(DictProxy\)"),
    ]


@pytest.mark.parametrize("executor", ["local", "slurm"])
def test_live_multiprocessing_objects_are_refused_before_submitting(tmp_path: Path, executor: str) -> None:
    global _QUEUE
    from pypet_rebuild.errors import LiveObjectError

    with multiprocessing.Manager() as manager:
        _QUEUE = multiprocessing.Queue()
        try:
            for label, fn, message in _live_simulations(manager):
                traj = Trajectory("live")
                traj.add_parameter("x", 0)
                wd = tmp_path / label
                env = Environment(traj, executor=executor, workdir=wd)
                with pytest.raises(LiveObjectError, match=message) as err:
                    env.run_exploration(fn, space={"x": [1, 2]})
                text = str(err.value)
                assert isinstance(err.value, PypetError) and isinstance(err.value, TypeError), label
                assert "\n" not in text and "traj.add_result" in text and f"{executor} workers" in text, label
                assert not wd.exists(), f"{label}: the workdir was written"
        finally:
            _QUEUE.close()
            _QUEUE = None


def test_live_objects_still_work_inline() -> None:
    with multiprocessing.Manager() as manager:
        shared = manager.list()

        def appends(traj: Trajectory) -> None:
            shared.append(traj.x)

        traj = Trajectory("inline")
        traj.add_parameter("x", 0)
        Environment(traj).run_exploration(appends, space={"x": [1, 2, 3]})
        assert list(shared) == [1, 2, 3]
