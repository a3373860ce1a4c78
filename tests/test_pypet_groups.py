"""pypet's node idioms: groups, links, annotations, multi-item results, custom leaf classes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pypet_rebuild import (
    Environment,
    HDF5StorageService,
    NamingError,
    Parameter,
    PypetError,
    Result,
    Trajectory,
    UnsupportedValueError,
    load_trajectory,
    register_leaf_class,
)


def build() -> Trajectory:
    traj = Trajectory("nodes")
    grp = traj.add_parameter_group("traffic", comment="the road")
    grp.add_parameter("ncars", 10, comment="cars")
    traj.parameters.speed = Parameter("", 1.5)  # an empty name takes the attribute's
    traj.parameters.traffic.lanes = Parameter("lanes", 2)
    traj.add_parameter_group("characters", comment="nobody yet")
    traj.add_result("money", amount=1.5, currency="EUR", comment="a price")
    traj.add_link("cars", traj.get("ncars"))
    traj.road = traj.get("traffic")  # a link by assignment
    traj.parameters.traffic.alias = traj.get("speed")  # a link inside a group
    traj.annotations["author"] = "me"
    traj.parameters.traffic.annotations["unit"] = "cars/km"
    traj.get("ncars").annotations["max"] = 100
    return traj


IDIOMS: list[tuple[str, Any]] = [
    ('traj["traffic"].path', "parameters.traffic"),
    ("traj.traffic.comment", "the road"),
    ("traj.parameters.traffic.ncars.value", 10),
    ("traj.ncars", 10),
    ("traj.speed", 1.5),
    ("traj.parameters.speed.name", "speed"),
    ("traj.lanes", 2),
    ("traj.parameters.traffic.lanes.name", "traffic.lanes"),
    ("traj.characters.path", "parameters.characters"),
    ("traj.characters.comment", "nobody yet"),
    ('traj.get("nothing", 7)', 7),
    ('traj.get("ncars").value', 10),
    ('traj["parameters"].path', "parameters"),
    ("traj.money.amount", 1.5),
    ('traj.money["currency"]', "EUR"),
    ("traj.money.comment", "a price"),
    ("sorted(traj.money.keys())", ["amount", "currency"]),
    ("traj.cars", 10),
    ('traj["cars"].value', 10),
    ("traj.road.ncars.value", 10),
    ("traj.road.path", "parameters.traffic"),
    ("traj.alias", 1.5),
    ("traj.parameters.traffic.alias.name", "speed"),
    ('traj.annotations["author"]', "me"),
    ('traj.traffic.annotations["unit"]', "cars/km"),
    ('traj.get("ncars").annotations["max"]', 100),
]


@pytest.mark.parametrize(("expr", "expected"), IDIOMS)
def test_pypet_idioms_in_memory_and_after_store(expr: str, expected: Any, tmp_path: Path) -> None:
    traj = build()
    assert eval(expr, {"traj": traj}) == expected
    Environment(traj, storage=HDF5StorageService(tmp_path / "n.h5")).run_exploration(lambda t: None)
    loaded = load_trajectory(tmp_path / "n.h5")
    assert eval(expr, {"traj": loaded}) == expected


def simulate_with_links(t: Trajectory) -> None:
    t.add_result("money", amount=t.cars * t.alias, currency="EUR")


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_links_groups_and_items_reach_the_runs(executor: str, tmp_path: Path) -> None:
    traj = build()
    traj.explore({"traffic.ncars": [1, 2]})
    Environment(traj, storage=HDF5StorageService(tmp_path / "r.h5"), executor=executor,
                workdir=tmp_path / "wd").run_exploration(
        simulate_with_links)
    t = load_trajectory(tmp_path / "r.h5")
    np.testing.assert_array_equal(t.get_from_runs("money.amount"), [1.5, 3.0])
    assert t.road.path == "parameters.traffic" and t.traffic.comment == "the road" and t.money.amount == 1.5


def test_multi_item_results_recurring_across_runs_are_columns(tmp_path: Path) -> None:
    traj = Trajectory("money")
    traj.add_parameter("x", 1.0)
    traj.explore({"x": [1.0, 2.0, 3.0]})

    def simulate(t: Trajectory) -> None:
        t.add_result("money", amount=t.x * 2, currency="EUR", comment="cost")

    Environment(traj, storage=HDF5StorageService(tmp_path / "m.h5")).run_exploration(simulate)
    for t in (traj, load_trajectory(tmp_path / "m.h5")):
        np.testing.assert_array_equal(t.get_from_runs("money.amount"), [2.0, 4.0, 6.0])
        assert list(t.get_from_runs("money.currency")) == ["EUR"] * 3
        t.set_run(1)
        assert t.money.amount == 4.0 and t.money["currency"] == "EUR"
    loaded = load_trajectory(tmp_path / "m.h5")
    r = loaded.results.runs.run_00000002.money
    assert r.amount == 6.0 and r.currency == "EUR"
    import h5py

    with h5py.File(tmp_path / "m.h5") as f:
        cols = f["trajectories/money/results/runs/columns"]
        assert {"money:amount", "money:currency"} <= set(cols)
        assert cols["money:amount"].shape == (3,)


def test_multi_item_result_mistakes_are_refused() -> None:
    traj = Trajectory("t")
    with pytest.raises(PypetError, match="either one value or named items"):
        traj.add_result("r", 1, amount=2)
    with pytest.raises(NamingError, match="item name"):
        traj.add_result("r", name_=1, keys=2)
    r = traj.add_result("ok", amount=1)
    with pytest.raises(KeyError, match="no item 'nope'"):
        r["nope"]
    with pytest.raises(AttributeError):
        r.nope  # noqa: B018
    single = traj.add_result("z", 3)
    assert single["z"] == 3  # pypet: the one item of a single result is named like it


def test_group_and_link_mistakes_are_refused() -> None:
    traj = build()
    with pytest.raises(NamingError, match="taken"):
        traj.add_link("ncars", traj.get("speed"))
    with pytest.raises(NamingError, match="clashes"):
        traj.add_parameter("characters", 1)
    with pytest.raises(NamingError, match="assigned to attribute"):
        traj.parameters.other = Parameter("wrong", 1)
    with pytest.raises(NamingError, match="result group"):
        traj.add_result_group("out").add_parameter("p", 1)
    with pytest.raises(UnsupportedValueError, match="not supported"):
        traj.annotations["big"] = [1, 2]
    with pytest.raises(AttributeError, match=r"set by key: annotations\['unit'\] = 'm'"):
        traj.annotations.unit = "m"  # would be kept in memory and never stored
    assert "unit" not in traj.annotations


def test_annotations_on_run_results_are_refused_with_the_way_out() -> None:
    traj = Trajectory("t")
    traj.add_parameter("x", 1)

    def simulate(t: Trajectory) -> None:
        t.add_result("z", 1).annotations["u"] = "m"

    env = Environment(trajectory=traj, stop_on_error=True)
    with pytest.raises(RuntimeError, match="put per-run metadata in an item"):
        env.run_exploration(simulate)


@dataclasses.dataclass(init=False)
class Money(Result[Any]):
    """A custom result class with an extra field."""

    currency: str = "EUR"

    def __init__(self, name: str, value: Any = None, comment: str = "", currency: str = "EUR") -> None:
        super().__init__(name, value, comment)
        self.currency = currency


@dataclasses.dataclass
class Range(Parameter[Any]):
    unit: str = "m"


def _custom(tmp_path: Path) -> Path:
    traj = Trajectory("custom")
    traj.add_parameter(Range("width", 3.0, unit="km"))
    traj.add_result(Money("price", 9.5, currency="USD"))
    Environment(traj, storage=HDF5StorageService(tmp_path / "c.h5")).run_exploration(lambda t: None)
    return tmp_path / "c.h5"


def test_custom_classes_come_back_only_when_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _custom(tmp_path)
    plain = load_trajectory(path)
    assert type(plain.get("width")) is Parameter and type(plain.get("price")) is Result
    assert plain.width == 3.0 and "classes=[Range]" in caplog.text
    given = load_trajectory(path, classes=[Range, Money])
    assert type(given.get("width")) is Range and given.get("width").unit == "km"
    assert type(given.get("price")) is Money and given.get("price").currency == "USD"
    imported = load_trajectory(path, allow_import=["tests."])
    assert type(imported.get("width")) is Range
    other = load_trajectory(path, allow_import=["mypkg."])
    assert type(other.get("width")) is Parameter


def test_registered_class_comes_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pypet_rebuild import model

    monkeypatch.setattr(model, "_LEAF_CLASSES", {})  # the registry is per process: leave it as found
    path = _custom(tmp_path)
    register_leaf_class(Money)
    t = load_trajectory(path)
    assert type(t.get("price")) is Money and t.get("price").currency == "USD"
    with pytest.raises(TypeError):
        register_leaf_class(int)
