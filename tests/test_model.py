"""Trajectory, natural naming, name rules, exploration validation, locking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pypet_rebuild import (
    Environment,
    ExplorationError,
    LockedParameterError,
    NamingError,
    Parameter,
    PypetError,
    Result,
    SweepStopped,
    Trajectory,
    UnsupportedValueError,
    cartesian_product,
)
from pypet_rebuild.exploration import Plan


def make() -> Trajectory:
    traj = Trajectory("t")
    traj.add_parameter("traffic.ncars", 10, comment="cars")
    traj.add_parameter(Parameter(name="traffic.speed", value=1.5))
    traj.add_config("seed", 42)
    return traj


def test_natural_naming_and_item_access() -> None:
    traj = make()
    assert traj.parameters.traffic.ncars.value == 10
    assert traj.parameters["traffic.ncars"].comment == "cars"
    assert traj.parameters.traffic["speed"].value == 1.5
    assert "traffic" in traj.parameters and "ncars" in traj.parameters.traffic
    assert "nope" not in traj.parameters
    assert sorted(traj.parameters.traffic.keys()) == ["ncars", "speed"]
    assert len(traj.parameters.traffic) == 2
    assert "ncars" in repr(traj.parameters.traffic)
    assert traj["parameters.traffic.ncars"].value == 10
    assert traj.config.seed.value == 42


def test_shortcuts_give_values_and_ambiguity_lists_candidates() -> None:
    traj = make()
    assert traj.ncars == 10
    traj.add_config("ncars", 3)
    assert traj.ncars == 3  # config.ncars is shallower than parameters.traffic.ncars: it wins, as in pypet
    traj.add_config("traffic.speed", 2.0)
    with pytest.raises(PypetError, match="ambiguous.*config.traffic.speed.*parameters.traffic.speed"):
        traj.speed
    with pytest.raises(AttributeError, match="no node named 'missing'"):
        traj.missing


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("class", "keyword"),
        ("a._b", "underscore"),
        ("a..b", "empty segment"),
        ("", "empty"),
        ("a.keys", "clashes"),
        ("größe", "ASCII"),
        ("a-b", "ASCII"),
    ],
)
def test_bad_names_are_refused_with_the_segment(name: str, why: str) -> None:
    with pytest.raises(NamingError, match=why):
        Trajectory("t").add_parameter(name, 1)


def test_duplicate_and_clashing_names() -> None:
    traj = make()
    with pytest.raises(NamingError, match="already exists"):
        traj.add_parameter("traffic.ncars", 1)
    with pytest.raises(NamingError, match="clashes with the existing group"):
        traj.add_parameter("traffic", 1)
    with pytest.raises(NamingError, match="clashes with the existing leaf"):
        traj.add_parameter("traffic.ncars.more", 1)


def test_unsupported_value_is_refused_when_added() -> None:
    with pytest.raises(UnsupportedValueError, match="'obj'.*object"):
        Result(name="obj", value=object())
    with pytest.raises(UnsupportedValueError, match=r"'d'\['k'\]\[0\].*set"):
        Trajectory("t").add_result("d", {"k": [set()]})
    with pytest.raises(UnsupportedValueError, match="dict keys must be strings"):
        Trajectory("t").add_parameter("d", {1: 2})
    with pytest.raises(UnsupportedValueError, match="64 bits"):
        Trajectory("t").add_parameter("big", 2**70)


def test_cartesian_product_order_and_combined() -> None:
    assert cartesian_product({"a": [1, 2], "b": [3, 4]}) == {"a": [1, 1, 2, 2], "b": [3, 4, 3, 4]}
    out = cartesian_product({"a": [1, 2], "b": [3, 4], "c": [0, 1]}, combined=[("a", "b")])
    assert out == {"a": [1, 1, 2, 2], "b": [3, 3, 4, 4], "c": [0, 1, 0, 1]}
    with pytest.raises(ExplorationError, match="equal lengths"):
        cartesian_product({"a": [1, 2], "b": [3]}, combined=[("a", "b")])
    with pytest.raises(ExplorationError, match="empty"):
        cartesian_product({"a": []})
    with pytest.raises(ExplorationError, match="empty"):
        cartesian_product({})


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"nope": [1]}, "unknown parameter 'nope'"),
        ({"traffic.ncars": []}, "empty"),
        ({"traffic.ncars": [1, 2], "traffic.speed": [1.0]}, "equal lengths"),
        ({"traffic.speed": ["fast"]}, "'fast' is a str.*float"),
        ({"traffic.ncars": [1.5]}, "1.5 is a float.*int"),
        ({}, "empty"),
        ({"traffic.ncars": 5}, "must be a list"),
    ],
)
def test_exploration_validation(space: dict, match: str) -> None:
    with pytest.raises(ExplorationError, match=match):
        make().explore(space)


def test_numpy_float_is_fine_for_a_float_default_and_ints_widen() -> None:
    traj = make()
    traj.explore({"traffic.speed": [np.float64(2.0), 3]})
    assert traj.explored["traffic.speed"] == [2.0, 3.0]
    assert len(traj) == 2


def test_large_explored_lists_are_checked_hashed_and_stored_at_numpy_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning costs must not grow with per-element Python calls: a list of one scalar type is
    checked, hashed and written as one array; every value still decides the hash."""
    from pypet_rebuild import codec, model, workdir
    from pypet_rebuild.formats import trajfile

    calls = {"n": 0}

    def counting(real):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(model, "_explored_value", counting(model._explored_value))
    monkeypatch.setattr(workdir, "_digest", counting(workdir._digest))
    monkeypatch.setattr(trajfile, "column_spec", counting(codec.column_spec))
    n = 10_000
    traj = make()
    traj.explore({"traffic.ncars": list(range(n)), "traffic.speed": list(range(n))})  # ints widen to floats
    assert traj.explored["traffic.speed"][:3] == [0.0, 1.0, 2.0]
    assert type(traj.explored["traffic.speed"][1]) is float
    plan = Plan.make(n)
    digest = workdir.plan_hash(traj, plan)
    import io

    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        trajfile.write_column(f, "x", traj.explored["traffic.speed"])
        assert f["x"].dtype == np.float64 and f["x"][5] == 5.0
    assert calls["n"] < 100, calls
    other = make()
    other.explore({"traffic.ncars": [*range(n - 1), n], "traffic.speed": list(range(n))})
    assert workdir.plan_hash(other, plan) != digest
    with pytest.raises(UnsupportedValueError, match="64 bits"):  # the value-by-value path still names it
        make().explore({"traffic.ncars": [1, 2**70]})


def test_plan_arithmetic() -> None:
    plan = Plan.make(10, runs_per_task=3, max_array_size=2)
    assert plan.n_tasks == 4
    assert list(plan.task_runs(3)) == [9]
    assert plan.arrays() == [[0, 1], [2, 3]]
    assert plan.task_of(7) == 2
    assert Plan.make(10, n_tasks=3).runs_per_task == 4
    with pytest.raises(ExplorationError, match="runs_per_task"):
        Plan.make(10, runs_per_task=0)
    with pytest.raises(ExplorationError, match="n_tasks"):
        Plan.make(10, n_tasks=-1)


def test_runs_record_results_failures_and_lock() -> None:
    traj = make()

    def simulate(t: Trajectory) -> None:
        n = t.parameters.traffic.ncars.value
        if n == 2:
            raise RuntimeError("boom")
        if n == 3:
            t.parameters.traffic.ncars.value = 99
        t.add_result("z", n * 2)
        t.add_result(Result(name=f"only.r{n}", value=n))

    env = Environment(trajectory=traj)
    env.run_exploration(simulate, space={"traffic.ncars": [1, 2, 3, 4]})
    info = traj.run_info()
    assert info["status"].tolist() == [1, 2, 2, 1]
    assert "RuntimeError: boom" in info["error"][1]
    assert "LockedParameterError" in info["error"][2] and "locked" in info["error"][2]
    assert traj.results.runs.run_00000003.z.value == 8
    assert traj.results["only.r4"].value == 4
    z = traj.get_from_runs("z")
    assert z.mask.tolist() == [False, True, True, False]
    assert z.compressed().tolist() == [2, 8]
    # after the sweep the parameters show their defaults and are unlocked again
    assert traj.parameters.traffic.ncars.value == 10
    traj.parameters.traffic.ncars.value = 11
    traj.set_run(0)
    assert traj.ncars == 1 and traj.results.z.value == 2
    traj.set_run(None)
    with pytest.raises(PypetError, match="exists in 2 runs"):
        traj.results.z.value


def test_stop_on_error_stops() -> None:
    traj = make()

    def simulate(t: Trajectory) -> None:
        raise ValueError("first")

    env = Environment(trajectory=traj, stop_on_error=True)
    with pytest.raises(SweepStopped, match="run 0 failed: ValueError: first"):
        env.run_exploration(simulate, space={"traffic.ncars": [1, 2, 3]})
    assert traj.run_info()["status"].tolist() == [2, 0, 0]  # failed, then never run


def test_locked_parameter_error_type() -> None:
    p = Parameter(name="x", value=1)
    p._locked = True
    with pytest.raises(LockedParameterError):
        p.value = 2


def test_iter_runs_restores_view() -> None:
    traj = make()
    env = Environment(trajectory=traj)
    env.run_exploration(lambda t: t.add_result("z", t.ncars), space={"traffic.ncars": [5, 6, 7]})
    seen = [(i, traj.ncars, traj.results.z.value) for i in traj.iter_runs()]
    assert seen == [(0, 5, 5), (1, 6, 6), (2, 7, 7)]
    assert traj.current_run is None and traj.ncars == 10


def test_assigning_a_parameter_by_short_name() -> None:
    traj = make()
    traj.ncars = 12
    assert traj.parameters.traffic.ncars.value == 12
    with pytest.raises(AttributeError, match="no parameter 'nope' to set"):
        traj.nope = 1
    traj.add_result("r", 1)
    with pytest.raises(AttributeError, match="not a parameter"):
        traj.r = 2

    def simulate(t: Trajectory) -> None:
        if t.ncars == 1:
            t.ncars = 99  # refused: the run fails, the next runs see their own values
        t.add_result("seen", t.ncars)

    Environment(trajectory=traj).run_exploration(simulate, space={"traffic.ncars": [1, 2, 3]})
    assert traj.get_from_runs("seen").tolist() == [None, 2, 3]
    assert "LockedParameterError" in traj.run_info()["error"][0]


def test_pypet_abbreviations_and_cartesian_order_tuple() -> None:
    traj = make()
    assert traj.par.traffic.ncars.value == 10 and traj.conf.seed.value == 42
    assert len(traj.res) == 0 and len(traj.dpar) == 0
    out = cartesian_product({"a": [1, 2], "b": [3, 4], "c": [0, 1]}, ("c", ("a", "b")))
    assert out == {"a": [1, 2, 1, 2], "b": [3, 4, 3, 4], "c": [0, 0, 1, 1]}
    assert cartesian_product({"a": [1, 2], "b": [3, 4]}, ("a", "b")) == {"a": [1, 1, 2, 2], "b": [3, 4, 3, 4]}


def test_results_added_in_runs_check_each_name_once_and_still_refuse_bad_ones(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pypet_rebuild import model
    from pypet_rebuild.runstore import MemoryRunStore

    seen: list[str] = []
    real = model.run_form

    def counting(name: str, reserved: frozenset[str] = frozenset(), what: str = "result") -> str:
        seen.append(name)
        return real(name, reserved, what)

    monkeypatch.setattr(model, "run_form", counting)
    traj = make()
    traj.explore({"traffic.ncars": list(range(200))})
    traj.state.run_store = store = MemoryRunStore()
    with traj.running() as begin:
        for i in range(200):
            begin(i)
            traj.add_result("flow", traj.ncars * 1.5)
            traj.add_result("count", traj.ncars)
        with pytest.raises(NamingError, match="keys"):
            traj.add_result("keys", 1.0)  # a view method's name stays refused
        with pytest.raises(UnsupportedValueError, match="result 'bad'"):
            traj.add_result("bad", object())
        with pytest.raises(NamingError, match="already added"):
            traj.add_result("flow", 2.0)
    assert seen.count("flow") <= 1 and seen.count("count") <= 1, seen[:5]
    assert store.column("results", "count", 200).tolist() == list(range(200))
    assert isinstance(store.get(3, "results", "flow"), Result) and store.get(3, "results", "flow").value == 4.5


def test_shortcut_reads_in_runs_are_resolved_once_per_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from pypet_rebuild.runstore import MemoryRunStore

    traj = make()
    traj.add_parameter("a.level", 1)
    traj.add_parameter("b.level", 2)  # 'level' is ambiguous: it must stay an error in a run
    traj.explore({"traffic.ncars": [10, 20, 30]})
    traj.state.run_store = MemoryRunStore()
    calls = {"n": 0}
    real = Trajectory._shortcut

    def counting(self: Trajectory, name: str, value: bool) -> object:
        calls["n"] += 1
        return real(self, name, value)

    monkeypatch.setattr(Trajectory, "_shortcut", counting)
    seen = []
    with traj.running() as begin:
        for i in range(3):
            begin(i)
            seen.append((traj.ncars, traj.speed, traj.parameters["traffic.ncars"].value))
        assert calls["n"] == 0
        with pytest.raises(PypetError, match="ambiguous"):
            _ = traj.level
        with pytest.raises(LockedParameterError):
            traj.ncars = 5
    assert seen == [(10, 1.5, 10), (20, 1.5, 20), (30, 1.5, 30)]
    assert traj.ncars == 10 and "ncars" not in vars(traj)  # the default again, resolved as before
    traj.ncars = 7  # outside a run the parameter can be set again
    assert traj.parameters["traffic.ncars"].value == 7
def test_dir_offers_natural_names_and_html_shows_the_tree(tmp_path: Path) -> None:
    from pypet_rebuild import Environment, HDF5StorageService, load_trajectory

    traj = Trajectory("tab")
    traj.add_parameter("traffic.ncars", 10, comment="cars")
    traj.add_parameter("traffic.speed", 1.5)
    traj.explore({"traffic.ncars": [10, 20, 30]})

    def simulate(t: Trajectory) -> None:
        if t.ncars == 30:
            raise ValueError("jam")
        t.add_result("flow", t.ncars * t.speed)

    Environment(traj, storage=HDF5StorageService(tmp_path / "tab.h5")).run_exploration(simulate)
    t = load_trajectory(tmp_path / "tab.h5")
    assert {"ncars", "speed", "flow", "parameters", "results"} <= set(dir(t))
    assert {"traffic"} <= set(dir(t.parameters)) and {"ncars", "speed"} <= set(dir(t.parameters.traffic))
    assert "runs" in dir(t.results) and "keys" in dir(t.parameters)
    html = t._repr_html_()
    assert "<b>Trajectory tab</b>: 3 runs" in html and "ok: 2, failed: 1" in html
    assert "<code>traffic.ncars</code> = 10 <i>cars</i>" in html and "per run: <code>flow</code>" in html


def test_an_emptied_result_takes_new_items() -> None:
    # pypet's res.f_empty(); res.f_set(monty=...): the emptied result holds the new item only
    res = Result("huge", mat1=1.0, mat2=2.0)
    res.empty()
    res["monty"] = "bright side"
    assert not res.is_empty and res.value == {"monty": "bright side"} and res.keys() == ["monty"]
    single = Result("z", 3)
    with pytest.raises(PypetError, match="holds one value"):
        single["extra"] = 1
