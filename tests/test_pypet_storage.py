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


# -- storing and loading without an Environment run ------------------------------------------


def _fresh() -> Trajectory:
    traj = Trajectory("fresh", comment="no runs yet")
    traj.add_config("seed", 42)
    traj.add_parameter("neuron.tau", 5.0, comment="ms")
    traj.add_parameter("neuron.v0", 0.0)
    traj.add_result("calibration", np.arange(3.0), comment="before the sweep")
    traj.explore({"neuron.tau": [1.0, 2.0]})
    return traj


def _post_processed(tmp_path: Path) -> tuple[Path, Trajectory]:
    """A merged 3-run sweep loaded back, with results added by a post-processing step."""
    path = tmp_path / "sweep.h5"
    _sweep(path, [1, 2, 3])
    traj = load_trajectory(path)
    traj.add_result("summary.mean", float(traj.get_from_runs("z").mean()), comment="post-processing")
    traj.add_result("stats", {"mean": 20.0, "max": 30, "label": "z"})
    traj.add_result("big", np.arange(100_000.0))
    return path, traj


# what is written -> how it is read back -> the value
STORE_IDIOMS: list[tuple[str, Any, Any]] = [
    ("traj.f_store() of a new trajectory: parameters",
     lambda tmp: (_fresh().store(tmp / "f.h5"), load_trajectory(tmp / "f.h5").parameters.neuron.tau.comment)[1], "ms"),
    ("... explored values", lambda tmp: (_fresh().store(tmp / "f.h5"), load_trajectory(tmp / "f.h5").get_range("tau"))[1],
     [1.0, 2.0]),
    ("... config and comment", lambda tmp: (_fresh().store(tmp / "f.h5"),
                                            (load_trajectory(tmp / "f.h5").seed, load_trajectory(tmp / "f.h5").comment))[1],
     (42, "no runs yet")),
    ("... a trajectory-level result", lambda tmp: (_fresh().store(tmp / "f.h5"),
                                                   load_trajectory(tmp / "f.h5").results.calibration.value.tolist())[1],
     [0.0, 1.0, 2.0]),
    ("service.store(traj)", lambda tmp: (HDF5StorageService(tmp / "s.h5").store(_fresh()),
                                         len(HDF5StorageService(tmp / "s.h5").load()))[1], 2),
    ("post-processing: traj.f_store() into the merged file",
     lambda tmp: _reload_after(tmp, lambda t: t.store()).results.summary.mean.value, 20.0),
    ("... the runs are still there",
     lambda tmp: _reload_after(tmp, lambda t: t.store()).get_from_runs("z").tolist(), [10, 20, 30]),
    ("... a dict result", lambda tmp: _reload_after(tmp, lambda t: t.store()).results.stats.value,
     {"mean": 20.0, "max": 30, "label": "z"}),
    ("store_item(name): only that leaf",
     lambda tmp: sorted(_reload_after(tmp, lambda t: t.store_item("summary.mean")).state.leaves["results"]),
     ["summary.mean"]),
    ("store_item by short name", lambda tmp: _reload_after(tmp, lambda t: t.store_item("mean")).mean, 20.0),
    ("service.store_item(traj, name)",
     lambda tmp: _reload_after(tmp, lambda t: HDF5StorageService(t.file_path).store_item(t, "results.stats")).stats,
     {"mean": 20.0, "max": 30, "label": "z"}),
    ("f_load_item(name, load_only=[...])",
     lambda tmp: _reload_after(tmp, lambda t: t.store()).load_item("stats", load_only=["max", "label"]).value,
     {"max": 30, "label": "z"}),
    ("skeleton: load_trajectory(load_data=False) keeps the tree and comments",
     lambda tmp: _skeleton(tmp).results.summary.mean.comment, "post-processing"),
    ("... results are empty", lambda tmp: _skeleton(tmp).results.big.is_empty, True),
    ("... parameters and run data are there",
     lambda tmp: (_skeleton(tmp).get_range("x"), _skeleton(tmp).get_from_runs("z").tolist()), ([1, 2, 3], [10, 20, 30])),
    ("... load_item reads one", lambda tmp: float(_skeleton(tmp).load_item("big").value.sum()), 4999950000.0),
    ("result.f_empty() frees the value", lambda tmp: _emptied(tmp).is_empty, True),
    ("... and load_item brings it back", lambda tmp: _emptied(tmp, reload=True).value.shape, (100_000,)),
]


def _reload_after(tmp: Path, step: Any) -> Trajectory:
    path, traj = _post_processed(tmp)
    step(traj)
    return load_trajectory(path)


def _skeleton(tmp: Path) -> Trajectory:
    path = tmp / "sweep.h5"
    if not path.exists():
        _post_processed(tmp)[1].store()
    return load_trajectory(path, load_data=False)


def _emptied(tmp: Path, reload: bool = False) -> Any:
    path, traj = _post_processed(tmp)
    traj.store()
    traj = load_trajectory(path)
    traj.results.big.empty()
    return traj.load_item("results.big") if reload else traj.results.big


@pytest.mark.parametrize(("idiom", "call", "expected"), STORE_IDIOMS, ids=[row[0] for row in STORE_IDIOMS])
def test_store_and_load_idioms(tmp_path: Path, idiom: str, call: Any, expected: Any) -> None:
    assert call(tmp_path) == expected


def test_an_empty_result_says_how_to_load_it(tmp_path: Path) -> None:
    from pypet_rebuild.errors import EmptyResultError

    traj = _skeleton(tmp_path)
    with pytest.raises(EmptyResultError, match=r"result 'big' is empty .*traj.load_item") as err:
        traj.results.big.value  # noqa: B018
    assert isinstance(err.value, AttributeError) and "<empty>" in repr(traj.results.big)


def test_post_processing_replaces_the_file_atomically_and_leaves_no_temp(tmp_path: Path) -> None:
    path, traj = _post_processed(tmp_path)
    before = path.stat().st_ino
    traj.store()
    assert path.stat().st_ino != before  # a new file renamed over the old one, not written in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sweep.h5.lock", "sweep.h5"]
    again = load_trajectory(path)
    mtime = path.stat().st_mtime_ns
    again.store()  # nothing new: the file is not touched
    assert path.stat().st_mtime_ns == mtime


def test_a_store_that_fails_midway_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypet_rebuild import storage

    path, traj = _post_processed(tmp_path)
    old = path.read_bytes()
    real = storage.write_leaves

    def half(working_copy: Path, name: str, leaves: Any, overwrite: bool) -> None:
        real(working_copy, name, leaves[:1], overwrite)  # the first leaf is in the copy...
        raise OSError("killed")  # ...when the store dies

    monkeypatch.setattr(storage, "write_leaves", half)
    with pytest.raises(OSError, match="killed"):
        traj.store()
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [".sweep.h5.lock", "sweep.h5"]
    monkeypatch.undo()
    traj.store()
    assert load_trajectory(path).mean == 20.0


KILL_SCRIPT = """
import sys
import numpy as np
from pypet_rebuild import load_trajectory
traj = load_trajectory(sys.argv[1])
traj.add_result("huge", np.ones((64, 1 << 17)))
print("storing", flush=True)
traj.store()
"""


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_during_a_post_processing_store(tmp_path: Path, seed: int) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    path = _sweep(tmp_path / "sweep.h5", [1, 2, 3])
    script = tmp_path / "post.py"
    script.write_text(KILL_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "storing"
    time.sleep(random.Random(seed).uniform(0.0, 0.3))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    traj = load_trajectory(path)  # the old file or the new one, never a torn one
    assert traj.get_from_runs("z").tolist() == [10, 20, 30], f"seed={seed}"
    if "huge" in traj.results:
        assert traj.results.huge.value.shape == (64, 1 << 17), f"seed={seed}"
    traj.add_result("after", 1)
    traj.store()  # the next store removes any temp file the killed one left
    assert load_trajectory(path).after == 1
    assert not [p for p in tmp_path.iterdir() if ".merging-" in p.name], f"seed={seed}"


@pytest.mark.parametrize(("label", "make", "error", "message"), [
    ("no file yet", lambda tmp: _fresh().store_item("seed"), PypetError, "has no file yet; give one"),
    ("a file of another sweep", lambda tmp: (_sweep(tmp / "o.h5", [1, 2, 3]), _fresh().store(tmp / "o.h5")),
     Exception, "holds another sweep|no trajectory named 'fresh'"),
    ("a leaf stored already", lambda tmp: _reload_after(tmp, lambda t: t.store()).store_item("summary.mean"),
     Exception, r"results.summary.mean is stored already; pass overwrite=True"),
    ("an unknown item", lambda tmp: _skeleton(tmp).load_item("nope"), KeyError, "no parameter or result 'nope'"),
    ("load_only of a non-dict", lambda tmp: _skeleton(tmp).load_item("big", load_only=["a"]), Exception,
     "is not a dict of items"),
    ("load_only of a missing key", lambda tmp: _skeleton(tmp).load_item("stats", load_only=["median"]), KeyError,
     "has no item 'median'"),
])
def test_storage_refusals(tmp_path: Path, label: str, make: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        make(tmp_path)


def test_memory_only_runs_are_not_stored_silently(tmp_path: Path) -> None:
    traj = Trajectory("mem")
    traj.add_parameter("x", 0)
    Environment(traj).run_exploration(lambda t: t.add_result("z", t.x), space={"x": [1, 2]})
    with pytest.raises(PypetError, match="are in memory only; run the sweep with Environment"):
        traj.store(tmp_path / "mem.h5")
    assert not (tmp_path / "mem.h5").exists()


def test_store_item_overwrite_and_a_loaded_trajectory_stored_elsewhere(tmp_path: Path) -> None:
    path, traj = _post_processed(tmp_path)
    traj.store()
    traj = load_trajectory(path)
    traj.results.summary.mean.value = 99.0
    traj.store_item("summary.mean", overwrite=True)
    assert load_trajectory(path).mean == 99.0
    copy = tmp_path / "copy.h5"
    traj.add_result("extra", "only in the copy")
    traj.store(copy)
    assert load_trajectory(copy).extra == "only in the copy" and "extra" not in load_trajectory(path).results
    assert load_trajectory(copy).get_from_runs("z").tolist() == [10, 20, 30]


def test_post_processing_right_after_a_sweep_on_the_live_trajectory(tmp_path: Path) -> None:
    path = tmp_path / "live.h5"
    traj = Trajectory("live")
    traj.add_parameter("x", 0)
    Environment(traj, storage=HDF5StorageService(path)).run_exploration(
        lambda t: t.add_result("z", t.x * 2), space={"x": [1, 2, 3]})
    traj.add_result("total", int(traj.get_from_runs("z").sum()))
    traj.store()  # the file the Environment wrote
    loaded = load_trajectory(path)
    assert loaded.total == 12 and loaded.get_from_runs("z").tolist() == [2, 4, 6]
