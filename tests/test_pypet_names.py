"""pypet's names in pypet-hpc, as tables of pypet idioms and the values they must give.

Wildcards (``$``, ``$set``, ``crun``) in names a run adds, pypet's run paths when reading,
names that can never be stored (they stop the sweep at once), and ambiguous short names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import pytest

from pypet_rebuild import (
    AmbiguousNameError,
    Environment,
    HDF5StorageService,
    InvalidNameError,
    PypetError,
    Result,
    SweepStopped,
    Trajectory,
    load_trajectory,
)
from pypet_rebuild.naming import run_form, run_segment
from pypet_rebuild.status import sweep_status
from pypet_rebuild.workdir import Workdir


def simulate(traj: Trajectory) -> None:
    """Every wildcard spelling of pypet's examples, one result each."""
    x = traj.x
    traj.add_result("neuron.$", 10 * x)  # pypet: results.neuron.run_00000003
    traj.add_result("runs.$.z", x + 1)  # pypet: results.runs.run_00000003.z (example 14)
    traj.add_result("$set.$.w", x + 2)  # pypet: results.run_set_00000.run_00000003.w (example 18)
    traj.add_result(Result("a.$.b", x + 3))  # a Result object with a wildcard
    traj.add_result("runs.crun.c", x + 4)  # 'crun' is pypet's alias of '$' when adding, too
    traj.add_derived_parameter("runs.$.d", x + 5)


def sweep(tmp: Path, executor: str = "inline", n: int = 3) -> Trajectory:
    traj = Trajectory("names")
    traj.add_parameter("x", 0)
    options: dict[str, Any] = {"workdir": tmp / "wd", "max_parallel": 2} if executor == "local" else {}
    Environment(traj, storage=HDF5StorageService(tmp / "names.h5"), executor=executor,
                **options).run_exploration(simulate, space={"x": list(range(1, n + 1))})
    return traj


@pytest.fixture(scope="module", params=["in memory", "loaded"])
def traj(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trajectory]:
    tmp = tmp_path_factory.mktemp("names")
    live = sweep(tmp)
    yield live if request.param == "in memory" else load_trajectory(tmp / "names.h5")


# (pypet idiom, the run set first or None, expected value); runs have x = 1, 2, 3
READS = [
    ("traj.results.runs.run_00000002.z.value", None, 4),
    ("traj.res.runs.r_2.z.value", None, 4),
    ("traj.results.neuron.run_00000001.value", None, 20),
    ("traj.results.neuron.r_0.value", None, 10),
    ("traj.results.run_set_00000.run_00000002.w.value", None, 5),
    ("traj.results.runs.run_set_00000.run_00000002.w.value", None, 5),
    ("traj.results.rts_2.r_2.w.value", None, 5),
    ("traj.results.a.run_00000002.b.value", None, 6),
    ("traj.results.runs.run_00000000.c.value", None, 5),
    ("traj.dpar.runs.run_00000001.d.value", None, 7),
    ("traj.run_00000001.z.value", None, 3),
    ("traj.r_1.neuron.value", None, 20),
    ("traj['results.runs.run_00000002.z'].value", None, 4),
    ("traj.results['neuron.run_00000002'].value", None, 30),
    ("traj.res.runs.crun.z.value", 1, 3),  # example 13: set_run, then crun
    ("traj.crun.z.value", 1, 3),  # examples 03, 08
    ("traj.results.neuron.value", 2, 30),  # with a run set, the name alone is that run's
    ("traj.results['neuron.crun'].value", 2, 30),
    ("traj.res.crunset.crun.w.value", 0, 3),  # example 18
    ("traj.results.a.crun.b.value", 0, 4),
    ("traj['results.runs.crun.z'].value", 2, 4),
    ("traj.z", 2, 4),  # the short name, in the run set
    ("traj.get_from_runs('neuron').tolist()", None, [10, 20, 30]),
    ("traj.get_from_runs('z').tolist()", None, [2, 3, 4]),
    ("traj.get_from_runs('w').tolist()", None, [3, 4, 5]),
    ("traj.get_from_runs('a.b').tolist()", None, [4, 5, 6]),
    ("traj.get_from_runs('d', 'derived_parameters').tolist()", None, [6, 7, 8]),
    ("sorted(traj.results.neuron)", None, ["run_00000000", "run_00000001", "run_00000002"]),
    ("len(traj.results.run_set_00000)", None, 3),
]


@pytest.mark.parametrize(("idiom", "run", "expected"), READS, ids=[r[0] for r in READS])
def test_pypet_paths_read_back(traj: Trajectory, idiom: str, run: int | None, expected: Any) -> None:
    traj.set_run(run)
    try:
        assert eval(idiom, {"traj": traj}) == expected  # noqa: S307 - the table's own idioms
    finally:
        traj.set_run(None)


def test_wildcard_results_are_columns_in_the_file(tmp_path: Path) -> None:
    """``neuron.$`` and ``$set.$.w`` recur in every run: columns with a run axis, not run groups."""
    sweep(tmp_path)
    with h5py.File(tmp_path / "names.h5", "r") as f:
        columns = f["trajectories/names/results/runs/columns"]
        assert set(columns) == {"neuron", "z", "w", "a.b", "c"}, list(columns)
        assert columns["neuron"].shape[0] == 3
        per_run = f["trajectories/names/results/runs"]
        assert not any(k.startswith("run_set_") for k in per_run), list(per_run)


def test_local_workers_store_wildcards_as_the_same_columns(tmp_path: Path) -> None:
    traj = sweep(tmp_path, executor="local", n=6)
    assert traj.get_from_runs("neuron").tolist() == [10, 20, 30, 40, 50, 60]
    loaded = load_trajectory(tmp_path / "names.h5")
    assert loaded.results.runs.run_00000005.z.value == 7 and loaded.results.neuron.r_4.value == 50


def test_the_run_set_is_1000_runs_as_pypet() -> None:
    traj = Trajectory("sets")
    traj.add_parameter("x", 0)
    Environment(traj).run_exploration(lambda t: t.add_result("$set.$.z", t.x), space={"x": list(range(1002))})
    assert traj.results.run_set_00001.run_00001001.z.value == 1001
    assert traj.results.rts_1000.r_1000.z.value == 1000  # rts_N: the set of run N
    assert len(traj.results.run_set_00000) == 1000 and len(traj.results.run_set_00001) == 2
    traj.set_run(1001)
    assert traj.res.crunset.crun.z.value == 1001
    with pytest.raises(KeyError, match="holds no run"):
        traj.results.run_set_00000["run_00001001"]


SEGMENTS = [
    ("run_00000003", ("run", 3)), ("r_3", ("run", 3)), ("crun", ("run", None)), ("$", ("run", None)),
    ("run_set_00000", ("set", 0)), ("run_set_00002", ("set", 2)), ("rts_0", ("set", 0)),
    ("rts_2500", ("set", 2)), ("crunset", ("set", None)), ("$set", ("set", None)),
    ("run", None), ("runs", None), ("r3", None), ("z", None),
]


@pytest.mark.parametrize(("segment", "means"), SEGMENTS)
def test_run_segments_mean_what_they_mean_in_pypet(segment: str, means: tuple[str, int | None] | None) -> None:
    assert run_segment(segment) == means


FORMS = [
    ("neuron.$", "neuron"), ("runs.$.z", "z"), ("$set.$.z", "z"), ("runs.$set.$.z", "z"),
    ("runs.crun.z", "z"), ("crunset.crun.z", "z"), ("a.$.b", "a.b"), ("z", "z"), ("traffic.flow", "traffic.flow"),
]


@pytest.mark.parametrize(("name", "stored"), FORMS)
def test_a_runs_name_is_stored_without_its_wildcards(name: str, stored: str) -> None:
    assert run_form(name) == stored


# a name a run adds -> what the message must say, and the valid spelling it must offer
BAD = [
    ("neuron.$x", "unknown wildcard", "neuron.$"),
    ("$set.z", "'$set' alone", "$set.$.z"),
    ("$", "only wildcards", "$.z"),
    ("a-b", "ASCII letters", "a_b"),
    ("größe", "ASCII letters", "gr__e"),
    ("keys", "clashes with a method", "keys_"),
    ("runs.z", "clashes with a method", "runs_.z"),
    ("class.z", "Python keyword", "class_.z"),
    ("_z", "underscore", "z"),
    ("a..b", "empty segment", "a.b"),
    ("neuron.run_00000003", "reserved for pypet's run paths", "neuron.$"),
    ("r_1.z", "reserved for pypet's run paths", "$.z"),
]


@pytest.mark.parametrize(("name", "why", "fixed"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_name_says_why_and_offers_a_valid_spelling(name: str, why: str, fixed: str) -> None:
    def add(spelling: str) -> Trajectory:
        traj = Trajectory("t")
        Environment(traj).run(lambda t: t.add_result(spelling, 1.5))
        return traj

    with pytest.raises(SweepStopped) as info:
        add(name)
    error = info.value.__cause__
    assert isinstance(error, InvalidNameError) and isinstance(error, PypetError) and isinstance(error, ValueError)
    message = str(error)
    assert "\n" not in message and repr(name) in message and why in message
    assert message.endswith(f"a valid spelling: {fixed!r}"), message
    assert add(fixed).run_info()["status"].tolist() == [1]  # the spelling offered is stored


@pytest.mark.parametrize("add", [
    lambda t: t.add_result("neuron.$", 1),
    lambda t: t.add_parameter("x.$", 1),
    lambda t: t.add_config("crun.seed", 1),
])
def test_a_wildcard_outside_a_run_is_refused(add: Any) -> None:
    traj = Trajectory("t")
    with pytest.raises(InvalidNameError, match="no run executes; a valid spelling"):
        add(traj)


def bad_name_at_3(traj: Trajectory) -> None:
    traj.add_result("ok", traj.x)
    if traj.x >= 3:
        traj.add_result("neuron.$x", 1)


def bad_name_always(traj: Trajectory) -> None:
    traj.add_result("neuron.$x", traj.x)


def test_a_bad_name_stops_an_inline_sweep_at_once(tmp_path: Path) -> None:
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    env = Environment(traj, workdir=tmp_path / "wd", max_failures="off")  # not a failure count: a bug
    with pytest.raises(SweepStopped, match=r"run 3\): result name 'neuron.\$x': .*a valid spelling: 'neuron.\$'") as info:
        env.run_exploration(bad_name_at_3, space={"x": list(range(50))})
    assert isinstance(info.value.__cause__, InvalidNameError)
    assert traj.run_info()["status"].tolist()[:5] == [1, 1, 1, 2, 0] and set(traj.run_info()["status"][4:]) == {0}
    assert Workdir(tmp_path / "wd").stopped() is not None


def test_a_bad_name_stops_a_local_sweep_and_cancels_the_rest(tmp_path: Path) -> None:
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    env = Environment(traj, executor="local", workdir=tmp_path / "wd", max_parallel=1, runs_per_task=10)
    with pytest.raises(SweepStopped, match=r"result name 'neuron.\$x': segment '\$x' is an unknown wildcard"):
        env.run_exploration(bad_name_always, space={"x": list(range(60))})
    st = sweep_status(Workdir(tmp_path / "wd"))
    assert st.finished and st.counts["failed"] == 1 and st.counts["ok"] == 0, st.counts
    assert any(t.state == "CANCELLED" for t in st.tasks), st.tasks


def ambiguous() -> Trajectory:
    traj = Trajectory("amb")
    traj.add_parameter("x", 1)
    traj.add_parameter("g.x", 2)
    traj.add_parameter("a.gain", 3)
    traj.add_parameter("b.gain", 4)
    traj.add_config("deep.er.seed", 5)
    traj.add_parameter("seed", 6)
    return traj


# (idiom, expected): the shallower candidate wins, as in pypet; a tie is an AttributeError
SHORT = [
    ("traj.x", 1),
    ("traj['x'].value", 1),
    ("traj.seed", 6),
    ("hasattr(traj, 'gain')", False),
    ("getattr(traj, 'gain', 'default')", "default"),
    ("'gain' in traj", False),
    ("traj.parameters.a.gain.value", 3),
]


@pytest.mark.parametrize(("idiom", "expected"), SHORT, ids=[s[0] for s in SHORT])
def test_short_names_resolve_as_in_pypet(idiom: str, expected: Any) -> None:
    assert eval(idiom, {"traj": ambiguous()}) == expected  # noqa: S307


def test_an_ambiguous_name_is_an_attribute_error_listing_the_candidates(tmp_path: Path) -> None:
    traj = ambiguous()
    with pytest.raises(AmbiguousNameError, match="'gain' is ambiguous: it could be parameters.a.gain, "
                                                 "parameters.b.gain"):
        traj.gain
    traj.store(tmp_path / "amb.h5")
    with pytest.raises(AmbiguousNameError, match="'gain' is ambiguous"):
        traj.store_item("gain")  # storage refuses the tie the same way
    assert issubclass(AmbiguousNameError, AttributeError) and issubclass(AmbiguousNameError, PypetError)
    traj.explore({"x": [7, 8]})  # the short name explores the shallower parameter too
    assert traj.explored == {"x": [7, 8]}

    def run_data(t: Trajectory) -> None:
        t.add_result("p.z", 1)
        t.add_result("q.z", 2)
        t.add_result("y", 3)
        t.add_result("q.y", 4)
        t.add_result("found", [hasattr(t, "z"), t.y])

    Environment(traj).run_exploration(run_data)
    assert traj.get_from_runs("found").tolist() == [[False, 3], [False, 3]]


@pytest.fixture()
def slurm_cluster() -> Iterator[None]:
    from .test_slurm import cluster_problem, hold_cluster

    yield from hold_cluster(cluster_problem(), "local SLURM cluster", "sudo bash slurm/start.sh")


@pytest.mark.slurm
def test_a_bad_name_stops_a_slurm_sweep_and_the_waiting_side_cancels_the_rest(
        tmp_path: Path, slurm_cluster: None, sweeps: list[Path]) -> None:
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    wd = tmp_path / "wd"
    sweeps.append(wd)
    env = Environment(traj, executor="slurm", workdir=wd, runs_per_task=5, max_parallel=1, time_limit="5",
                      job_name="pht-names")
    with pytest.raises(SweepStopped, match=r"result name 'neuron.\$x': segment '\$x' is an unknown wildcard"):
        env.run_exploration(bad_name_always, space={"x": list(range(100))})
    st = sweep_status(Workdir(wd))
    assert st.finished and st.counts["ok"] == 0 and 1 <= st.counts["failed"] <= 3, st.counts
    assert any(t.state == "CANCELLED" for t in st.tasks), st.tasks
