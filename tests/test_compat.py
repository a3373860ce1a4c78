"""pypet's spellings through ``pypet_rebuild.compat``: short scenarios that do what pypet's own
examples do (01-05, 08-10, 14, 15, 18), with the numbers pypet gives.

Scenarios that need modern methods still to come (groups, links, multi-item results, store,
job arguments, wildcards) run when the modern API has them; until then their twin checks that the
compat call fails with one line naming what is missing.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

import pypet_rebuild
from pypet_rebuild import RunsFailed
from pypet_rebuild import environment as modern_env
from pypet_rebuild import model as modern
from pypet_rebuild.compat import (
    ArrayParameter,
    Environment,
    NotUniqueNodeError,
    Parameter,
    Trajectory,
    UnsupportedError,
    cartesian_product,
    load_trajectory,
    pypetconstants,
)

HAS_GROUPS = hasattr(modern.Trajectory, "add_parameter_group")
HAS_LINKS = hasattr(modern.Trajectory, "add_link")
HAS_ITEMS = any(p.kind is inspect.Parameter.VAR_KEYWORD
                for p in inspect.signature(modern.Trajectory.add_result).parameters.values())
HAS_STORE = all(hasattr(modern.Trajectory, m) for m in ("store", "store_item", "load_item"))
HAS_JOB_ARGS = any(p.kind is inspect.Parameter.VAR_POSITIONAL
                   for p in inspect.signature(modern_env.Environment.run).parameters.values())


def multiply(traj: Trajectory) -> None:
    traj.f_add_result("z", traj.x * traj.y, comment="Result of our simulation!")


def multiply_items(traj: Trajectory) -> None:
    traj.f_add_result("z", z=traj.x * traj.y, comment="I am the product of two reals!")


def multiply_wildcard(traj: Trajectory) -> None:
    traj.f_add_result("$set.$.z", traj.x * traj.y, comment="bucketed")


def first_steps(tmp_path: Path, job=multiply, **env_kwargs):  # type: ignore[no-untyped-def]
    """Example 01's sweep: x in 1..4, y in 6..8, z = x * y."""
    filename = os.path.join(tmp_path, "hdf5", "example_01.hdf5")
    env = Environment(trajectory="Multiplication", filename=filename, overwrite_file=True,
                      file_title="Example_01_First_Steps", comment="The first example!",
                      large_overview_tables=True, **env_kwargs)
    traj = env.trajectory
    traj.f_add_parameter("x", 1, comment="I am the first dimension!")
    traj.f_add_parameter("y", 1, comment="I am the second dimension!")
    traj.f_explore(cartesian_product({"x": [1, 2, 3, 4], "y": [6, 7, 8]}))
    env.run(job)
    return env, traj, filename


Z = [x * y for x in [1, 2, 3, 4] for y in [6, 7, 8]]


@functools.cache
def has_wildcards() -> bool:
    """Whether the modern naming knows ``$`` and ``$set`` and the ``run_N`` / ``crun`` shortcuts."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            _, traj, _ = first_steps(Path(tmp), multiply_wildcard)
            traj.v_idx = 1
            return bool(traj.crun.z == 7 and traj.run_00000001.z == 7)
        except Exception:  # noqa: BLE001 - any failure means: not there yet
            return False


# -- example 01: first steps -------------------------------------------------------------------

def test_first_steps_reload_gives_pypets_numbers(tmp_path: Path) -> None:
    env, traj, filename = first_steps(tmp_path)
    assert Path(filename).exists()  # hdf5/ was created, as pypet does
    env.disable_logging()
    loaded = Trajectory(filename=filename)
    loaded.f_load(index=-1, load_parameters=2, load_results=2)
    assert loaded.v_name == "Multiplication"
    zs = loaded.f_get_from_runs("z", fast_access=True)
    assert isinstance(zs, OrderedDict)
    assert list(zs) == [f"run_{i:08d}" for i in range(12)]
    assert list(zs.values()) == Z
    assert zs["run_00000001"] == 7
    assert not [p for p in Path(filename).parent.iterdir() if p.name.startswith(".pypet-sweep")]


@pytest.mark.skipif(not has_wildcards(), reason="traj.run_00000001 shortcuts come with the wildcards of issue 11")
def test_first_steps_run_shortcut(tmp_path: Path) -> None:
    _, _, filename = first_steps(tmp_path)
    loaded = Trajectory(filename=filename)
    loaded.f_load(index=-1, load_parameters=2, load_results=2)
    assert loaded.run_00000001.z == 7


# -- example 03: merging -----------------------------------------------------------------------

def test_second_trajectory_into_one_file_is_refused_before_running(tmp_path: Path) -> None:
    filename = str(tmp_path / "example_03.hdf5")
    envs = [Environment(trajectory=n, filename=filename, add_time=True, log_config=None, comment=n)
            for n in ("Traj1", "Traj2")]
    assert envs[0].trajectory.v_name.startswith("Traj1_20")  # add_time, as in pypet
    ran: list[int] = []
    for env in envs:
        env.trajectory.f_add_parameter("x", 1.0)
        env.trajectory.f_explore({"x": [1.0, 2.0]})
    envs[0].run(multiply_x(ran))
    with pytest.raises(UnsupportedError, match="already holds trajectory 'Traj1_.*one trajectory per file") as exc:
        envs[1].run(multiply_x(ran))
    assert "\n" not in str(exc.value)
    assert len(ran) == 2  # the second sweep ran nothing
    with pytest.raises(UnsupportedError, match="pypet-hpc combine"):
        envs[0].trajectory.f_merge(envs[1].trajectory, remove_duplicates=True)


def multiply_x(ran: list[int]):  # type: ignore[no-untyped-def]
    def job(traj: Trajectory) -> None:
        ran.append(traj.v_idx)
        traj.f_add_result("z", traj.x * 2)
    return job


# -- example 04: multiprocessing ----------------------------------------------------------------

def test_multiproc_runs_on_local_workers(tmp_path: Path) -> None:
    filename = str(tmp_path / "hdf5" / "example_04.hdf5")
    env = Environment(trajectory="Example_04_MP", filename=filename, file_title="Example_04_MP",
                      log_stdout=True, comment="Multiprocessing example!", multiproc=True, ncores=2,
                      use_pool=True, freeze_input=True, wrap_mode=pypetconstants.WRAP_MODE_QUEUE,
                      graceful_exit=True, overwrite_file=True)
    traj = env.trajectory
    traj.f_add_parameter("x", 1.0, comment="I am the first dimension!")
    traj.f_add_parameter("y", 1.0, comment="I am the second dimension!")
    traj.f_explore(cartesian_product({"x": [float(x) for x in range(5)], "y": [float(y) for y in range(4)]}))
    env.run(multiply_items)
    env.disable_logging()
    loaded = load_trajectory(filename=filename, name="Example_04_MP")
    zs = loaded.f_get_from_runs("z", fast_access=True, use_indices=True)
    assert zs == {i: float((i // 4) * (i % 4)) for i in range(20)}
    assert set(loaded.run_info()["host"]) and loaded.f_is_completed()
    assert not [p for p in Path(filename).parent.iterdir() if p.name.startswith(".pypet-sweep")]  # no workdir left


# -- example 05: custom parameters -----------------------------------------------------------------

class FunctionParameter(Parameter):
    """Example 05's parameter: keeps a function's source code."""

    def f_set(self, data):  # type: ignore[no-untyped-def]
        if callable(data):
            data = inspect.getsource(data)
        return super().f_set(data)


def diff_lorenz(value_array, sigma, beta, rho):  # type: ignore[no-untyped-def]
    return np.array([sigma * (value_array[1] - value_array[0]),
                     value_array[0] * (rho - value_array[2]) - value_array[1],
                     value_array[0] * value_array[1] - beta * value_array[2]])


def euler_scheme(traj, diff_func=diff_lorenz, as_item=HAS_ITEMS):  # type: ignore[no-untyped-def]
    steps = traj.steps
    result = np.zeros((steps, 3))
    result[0] = traj.initial_conditions
    params = {"sigma": traj.sigma, "beta": traj.beta, "rho": traj.rho}
    for idx in range(1, steps):
        result[idx] = diff_func(result[idx - 1], **params) * traj.dt + result[idx - 1]
    if as_item:  # example 05's spelling: a result with one item named `data`
        traj.f_add_result("euler_evolution", data=result, comment="Our time series data!")
    else:
        traj.f_add_result("euler_evolution", result, comment="Our time series data!")


def lorenz_env(tmp_path: Path) -> tuple[Environment, Trajectory, str]:
    filename = str(tmp_path / "example_05.hdf5")
    env = Environment(trajectory="Example_05_Euler_Integration", filename=filename,
                      file_title="Example_05_Euler_Integration", overwrite_file=True, comment="Go for Euler!")
    traj = env.trajectory
    traj.f_add_parameter("steps", 50, comment="Number of time steps to simulate")
    traj.f_add_parameter("dt", 0.01, comment="Step size")
    traj.f_add_parameter(ArrayParameter, "initial_conditions", np.array([0.0, 0.0, 0.0]), comment="start")
    traj.f_add_parameter("func_params.sigma", 10.0)
    traj.f_add_parameter("func_params.beta", 8.0 / 3.0)
    traj.f_add_parameter("func_params.rho", 28.0)
    traj.f_add_derived_parameter(FunctionParameter, "diff_eq", diff_lorenz, comment="Source code of our equation!")
    traj.f_explore({"initial_conditions": [np.array([0.01, 0.01, 0.01]), np.array([2.02, 0.02, 0.02]),
                                           np.array([42.0, 4.2, 0.42])]})
    return env, traj, filename


def test_custom_parameter_subclass_and_array_exploration(tmp_path: Path) -> None:
    env, traj, filename = lorenz_env(tmp_path)
    assert traj.diff_eq.startswith("def diff_lorenz")  # f_set of the subclass turned it into source
    env.run(euler_scheme)
    loaded = Trajectory(filename=filename)
    loaded.f_load(name=traj.v_name, load_parameters=2, load_derived_parameters=2, load_results=1)
    assert loaded.diff_eq.startswith("def diff_lorenz")
    ranges = loaded.f_get("initial_conditions").f_get_range()
    assert [list(r) for r in ranges] == [[0.01, 0.01, 0.01], [2.02, 0.02, 0.02], [42.0, 4.2, 0.42]]
    evolution = loaded.f_get_from_runs("euler_evolution", fast_access=not HAS_ITEMS)
    first = evolution["run_00000001"] if not HAS_ITEMS else evolution["run_00000001"].data
    assert first.shape == (50, 3) and list(first[0]) == [2.02, 0.02, 0.02]
    expected = np.array([2.02, 0.02, 0.02])
    expected = diff_lorenz(expected, 10.0, 8.0 / 3.0, 28.0) * 0.01 + expected
    assert np.allclose(first[1], expected)


@pytest.mark.skipif(not HAS_JOB_ARGS, reason="env.run(job, *args) comes with issue 16's job arguments")
def test_job_arguments_reach_the_job(tmp_path: Path) -> None:
    env, _, filename = lorenz_env(tmp_path)
    env.run(euler_scheme, diff_lorenz)
    assert load_trajectory(filename=filename).f_get_from_runs("euler_evolution", fast_access=True)


@pytest.mark.skipif(HAS_JOB_ARGS, reason="the modern Environment takes job arguments")
def test_job_arguments_without_modern_support_fail_in_one_line(tmp_path: Path) -> None:
    env, _, filename = lorenz_env(tmp_path)
    with pytest.raises(UnsupportedError, match=r"env.run\(job, \*args, \*\*kwargs\) needs") as exc:
        env.run(euler_scheme, diff_lorenz)
    assert "\n" not in str(exc.value) and not Path(filename).exists()


# -- example 08: f_find_idx ------------------------------------------------------------------------

def test_find_idx_and_v_idx(tmp_path: Path) -> None:
    env, traj, _ = first_steps(tmp_path)
    traj.f_load(load_results=pypetconstants.LOAD_DATA)
    seen = []
    for idx in traj.f_find_idx(["x", "y"], lambda x, y: x == 2 or y == 8):
        traj.v_idx = idx
        assert traj.v_crun == f"run_{idx:08d}"
        seen.append((traj.v_crun, traj.x, traj.y, traj.results.runs[traj.v_crun].z))
    traj.f_restore_default()
    assert traj.v_idx == -1 and traj.v_crun is None and traj.x == 1
    assert seen == [(f"run_{i:08d}", x, y, x * y) for i, (x, y) in
                    enumerate((x, y) for x in [1, 2, 3, 4] for y in [6, 7, 8]) if x == 2 or y == 8]


@pytest.mark.skipif(not has_wildcards(), reason="traj.crun comes with the wildcards of issue 11")
def test_crun_wildcard(tmp_path: Path) -> None:
    _, traj, _ = first_steps(tmp_path)
    traj.v_idx = 4
    assert traj.crun.z == 14


# -- example 10: get items from all runs -----------------------------------------------------------

def test_get_from_runs_and_ranges_make_a_grid(tmp_path: Path) -> None:
    filename = str(tmp_path / "example_10.hdf5")
    env = Environment(trajectory="Example10", filename=filename, file_title="Example10",
                      overwrite_file=True, comment="Another example!")
    traj = env.trajectory
    traj.f_add_parameter("x", 1, comment="I am the first dimension!")
    traj.f_add_parameter("y", 1, comment="I am the second dimension!")
    traj.f_explore(cartesian_product({"x": range(4), "y": range(3)}))
    env.run(multiply)
    traj.f_load(load_results=pypetconstants.LOAD_DATA)
    xs, ys = traj.f_get("x").f_get_range(), traj.f_get("y").f_get_range()
    zs = list(traj.f_get_from_runs(name="z", fast_access=True).values())
    x_mesh, z_mesh = np.reshape(np.array(xs), (4, 3)), np.reshape(np.array(zs), (4, 3))
    assert (z_mesh == np.outer(range(4), range(3))).all()
    assert (x_mesh[:, 0] == range(4)).all() and ys[:3] == [0, 1, 2]
    nodes = traj.f_get_from_runs("z")  # without fast access: the results
    assert nodes["run_00000005"].f_get() == 1 * 2


# -- example 02: access and storage ----------------------------------------------------------------

def test_access_full_names_fast_access_and_not_unique(tmp_path: Path) -> None:
    traj = Trajectory("Example", filename=str(tmp_path / "example_02.hdf5"), overwrite_file=True,
                      comment="Access and Storage!")
    traj.f_add_parameter("starwars.characters.han_solo", "Harrison Ford")
    traj.f_add_parameter("starwars.characters.luke_skywalker", "Mark Hamill", comment="May the force be with you!")
    assert traj.f_get("luke_skywalker").v_full_name == "parameters.starwars.characters.luke_skywalker"
    assert traj.luke_skywalker == "Mark Hamill"
    traj.f_add_parameter("spaceballs.characters.han_solo", "Bill Pullman")
    with pytest.raises(NotUniqueNodeError) as exc:
        traj.han_solo
    assert isinstance(exc.value, AttributeError) and not hasattr(traj, "han_solo")
    traj.v_fast_access = False
    node = traj.luke_skywalker
    assert node.f_get() == "Mark Hamill" and node.v_comment == "May the force be with you!"


@pytest.mark.skipif(not HAS_GROUPS, reason="group nodes come with issue 11's add_parameter_group")
def test_groups_as_in_example_02(tmp_path: Path) -> None:
    traj = Trajectory("Example")
    traj.f_add_parameter("starwars.characters.han_solo", "Harrison Ford")
    traj.f_get("characters").f_add_parameter("luke_skywalker", "Mark Hamill")
    assert traj.f_get("luke_skywalker").v_full_name == "parameters.starwars.characters.luke_skywalker"
    traj.f_add_parameter_group("spaceballs.characters")
    with pytest.raises(NotUniqueNodeError):
        traj.characters


@pytest.mark.skipif(HAS_GROUPS, reason="the modern trajectory has parameter groups")
def test_groups_without_modern_support_fail_in_one_line() -> None:
    traj = Trajectory("Example")
    with pytest.raises(UnsupportedError, match="f_add_parameter_group needs Trajectory.add_parameter_group"):
        traj.f_add_parameter_group("spaceballs.characters")


@pytest.mark.skipif(not (HAS_ITEMS and HAS_STORE), reason="needs multi-item results and traj.store (issue 11)")
def test_large_results_store_and_load_items(tmp_path: Path) -> None:
    filename = str(tmp_path / "example_09.hdf5")
    traj = Trajectory(name="example_09_huge_data", filename=filename, overwrite_file=True)
    traj.f_add_result("huge_matrices", mat1=np.arange(8.0).reshape(2, 2, 2), mat2=np.eye(3))
    assert traj.huge_matrices.mat1[1, 1, 1] == 7.0
    traj.f_store()
    loaded = Trajectory(filename=filename)
    loaded.f_load(name="example_09_huge_data", load_results=pypetconstants.LOAD_SKELETON)
    loaded.f_load_item("huge_matrices", load_only=["mat1"])
    assert loaded.huge_matrices.mat1[1, 1, 1] == 7.0


@pytest.mark.skipif(HAS_ITEMS, reason="the modern add_result takes several items")
def test_multi_item_results_without_modern_support_fail_in_one_line() -> None:
    traj = Trajectory("example_09")
    with pytest.raises(UnsupportedError, match=r"f_add_result\('huge_matrices', mat1=..., mat2=...\) needs"):
        traj.f_add_result("huge_matrices", mat1=np.zeros(2), mat2=np.ones(2))
    traj.f_add_result("single", single=3)  # one item named like the result is its value, as in pypet
    assert traj.single == 3


@pytest.mark.skipif(HAS_STORE, reason="the modern trajectory has store")
def test_store_without_modern_support_fails_in_one_line(tmp_path: Path) -> None:
    traj = Trajectory("t", filename=str(tmp_path / "t.h5"))
    with pytest.raises(UnsupportedError, match=r"f_store\(\) needs Trajectory.store"):
        traj.f_store()


# -- examples 14 and 15: links and more ways to add data --------------------------------------------

@pytest.mark.skipif(not HAS_LINKS, reason="links come with issue 11's add_link")
def test_links_in_runs(tmp_path: Path) -> None:
    env = Environment(trajectory="Multiplication", filename=str(tmp_path / "example_14.hdf5"), overwrite_file=True)
    traj = env.trajectory
    traj.f_add_parameter("x", 1)
    traj.f_add_parameter("y", 1)
    traj.f_explore({"x": [3, 4]})
    traj.f_add_link("mylink1", traj.f_get("x"))
    traj.f_add_link("parameters.mynewgroup.mylink2", traj.f_get("y"))
    assert traj.mylink1 == 1
    env.run(lambda t: t.f_add_result("z", t.mylink1 * t.mylink2))
    assert list(traj.f_get_from_runs("z", fast_access=True).values()) == [3, 4]


@pytest.mark.skipif(HAS_LINKS, reason="the modern trajectory has links")
def test_links_without_modern_support_fail_in_one_line() -> None:
    traj = Trajectory("t")
    traj.f_add_parameter("x", 1)
    with pytest.raises(UnsupportedError, match="f_add_link needs Trajectory.add_link"):
        traj.f_add_link("mylink1", traj.f_get("x"))
    with pytest.raises(UnsupportedError, match="parameters.y = ...: adding by assignment into a group needs"):
        traj.par.y = Parameter("y", 1, "I am the second dimension!")


def test_more_ways_to_add_data() -> None:
    traj = Trajectory()
    assert traj.v_name == "my_trajectory"
    traj.f_add_parameter("x", 1, comment="I am the first dimension!")
    traj.f_add_parameter(Parameter("y", 1, "I am the second dimension!"))
    traj.f_add_parameter(Parameter, "subgroup.subsubgroup.w", 2)
    assert (traj.x, traj.y, traj.w) == (1, 1, 2)
    assert traj.f_get("y").v_comment == "I am the second dimension!"
    assert traj.f_to_dict(fast_access=True, short_names=True) == {"x": 1, "y": 1, "w": 2}
    assert traj.par.subgroup.subsubgroup.w == 2  # natural naming with pypet's fast access
    assert traj.parameters.f_to_dict(short_names=True, fast_access=True) == {"x": 1, "y": 1, "w": 2}
    assert traj.par.subgroup.f_get("subsubgroup.w").v_full_name == "parameters.subgroup.subsubgroup.w"
    traj.v_fast_access = False
    assert traj.par.subgroup.subsubgroup.w.f_get() == 2
    assert not hasattr(traj, "f_no_such_method")
    traj.func.add_parameter("v", 3, comment="via func")  # pypet's prefix-free spellings
    assert traj.func.get("v").vars.comment == "via func" and traj.vars.name == "my_trajectory"


# -- example 18: many runs --------------------------------------------------------------------------

@pytest.mark.skipif(not has_wildcards(), reason="$set and $ come with the wildcards of issue 11")
def test_many_runs_bucketed_by_wildcards(tmp_path: Path) -> None:
    _, traj, _ = first_steps(tmp_path, multiply_wildcard)
    traj.v_idx = 5
    assert traj.res.crunset.crun.z == 16
    traj.v_idx = -1
    assert traj.res.rts_5.r_5.z == 16


# -- what the adapter refuses, ignores and reports ----------------------------------------------------

@pytest.mark.parametrize(("keyword", "modern"), [
    ("use_scoop", "executor='slurm'"), ("resumable", "pypet-hpc resubmit"), ("git_repository", "never commits"),
    ("immediate_postproc", "add_postprocessing"), ("storage_service", "always HDF5"),
])
def test_unsupported_environment_keywords_name_the_modern_way(tmp_path: Path, keyword: str, modern: str) -> None:
    with pytest.raises(UnsupportedError, match=f"pypet's {keyword}= is not supported; .*{modern}") as exc:
        Environment(trajectory="t", filename=str(tmp_path / "t.h5"), **{keyword: True})
    assert "\n" not in str(exc.value)
    assert not list(tmp_path.iterdir())


def test_unknown_keyword_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedError, match="unknown keyword ncore= .*ncores"):
        Environment(trajectory="t", filename=str(tmp_path / "t.h5"), ncore=2)
    with pytest.raises(UnsupportedError, match="Trajectory: unknown keyword bogus="):
        Trajectory("t", bogus=1)


def test_harmless_keywords_are_ignored_with_a_debug_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="pypet_rebuild.compat"):
        Environment(trajectory="t", filename=str(tmp_path / "t.h5"), log_config=None,
                    wrap_mode=pypetconstants.WRAP_MODE_LOCK, freeze_input=True)
    assert any("ignoring freeze_input, log_config, wrap_mode" in r.getMessage() for r in caplog.records)


def test_failing_runs_raise_after_the_others_are_stored(tmp_path: Path) -> None:
    def job(traj: Trajectory) -> None:
        if traj.x == 3:
            raise ValueError("x is three")
        traj.f_add_result("z", traj.x)

    with pytest.raises(RunsFailed, match="3 of 12 runs failed .*x is three"):
        first_steps(tmp_path, job)
    loaded = load_trajectory(filename=str(tmp_path / "hdf5" / "example_01.hdf5"))
    assert len(loaded.f_get_from_runs("z")) == 9 and not loaded.f_is_completed()
    assert loaded.f_get_run_information("run_00000006")["completed"] == 0


def test_iter_runs_run_information_and_return_values(tmp_path: Path) -> None:
    env, traj, _ = first_steps(tmp_path)
    assert list(traj.f_iter_runs(stop=3)) == ["run_00000000", "run_00000001", "run_00000002"]
    assert [traj.x for _ in traj.f_iter_runs(start=9, yields="idx")] == [4, 4, 4]
    info = traj.f_get_run_information()
    assert list(info) == traj.f_get_run_names() and info["run_00000004"]["parameter_summary"] == "x: 2, y: 7"
    assert all(i["completed"] == 1 for i in info.values())
    with pytest.raises(UnsupportedError, match="a second env.run"):
        env.run(multiply)


def test_run_values_refuse_to_be_read_while_not_collected(tmp_path: Path) -> None:
    filename = str(tmp_path / "r.h5")
    env = Environment(trajectory="r", filename=filename)
    env.trajectory.f_add_parameter("x", 2)
    env.trajectory.f_explore({"x": [2, 3]})
    out = env.run(lambda traj: traj.x * 10)
    if isinstance(out, list) and type(out) is list:  # the modern Environment collects them
        assert out == [(0, 20), (1, 30)]
    else:
        with pytest.raises(UnsupportedError, match="return values"):
            list(out)


def test_the_modern_trajectory_underneath(tmp_path: Path) -> None:
    _, traj, filename = first_steps(tmp_path)
    assert isinstance(traj, pypet_rebuild.Trajectory)
    assert list(traj.get_from_runs("z")) == Z  # the modern API works on the same object
    plain = pypet_rebuild.load_trajectory(filename)
    assert list(plain.get_from_runs("z")) == Z
    with pytest.raises(UnsupportedError, match="traj.f_no_such_thing is not supported"):
        traj.f_no_such_thing()


HAS_POSTPROC = hasattr(modern_env.Environment, "add_postprocessing")


@pytest.mark.skipif(not HAS_POSTPROC, reason="post-processing comes with issue 16")
def test_postprocessing_expands_as_in_pypet(tmp_path: Path) -> None:
    env = Environment(trajectory="adaptive", filename=str(tmp_path / "a.h5"))
    env.trajectory.f_add_parameter("x", 0)
    env.trajectory.f_explore({"x": [0, 1]})
    waves: list[list[tuple[int, int]]] = []

    def postproc(traj: Trajectory, result_list: list[tuple[int, int]], limit: int) -> dict[str, list[int]] | None:
        waves.append(sorted(result_list))
        top = max(v for _, v in result_list)
        return {"x": [top + 1]} if top + 1 <= limit else None  # pypet: a dict means expand and run again

    env.add_postprocessing(postproc, 3)
    env.run(lambda traj: traj.x)
    assert len(waves) == 3 and env.trajectory.f_get("x").f_get_range() == [0, 1, 2, 3]


@pytest.mark.skipif(HAS_POSTPROC, reason="the modern Environment has post-processing")
def test_postprocessing_without_modern_support_fails_in_one_line(tmp_path: Path) -> None:
    env = Environment(trajectory="adaptive", filename=str(tmp_path / "a.h5"))
    with pytest.raises(UnsupportedError, match="env.add_postprocessing needs the modern Environment.add_postprocessing"):
        env.add_postprocessing(lambda traj, results: None)
