"""Every supported value round-trips through HDF5 with its type, alone and as a run column."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pypet_rebuild import (
    Environment,
    HDF5StorageService,
    Pickled,
    StorageError,
    Trajectory,
    load_trajectory,
)
from pypet_rebuild.codec import read_value, write_value

VALUES: list[Any] = [
    True, 0, -(2**63), 2**63 - 1, 1.5, float("inf"), 1 + 2j, "", "héllo ✓", b"", b"\x00\xff", None,
    np.int8(-3), np.uint64(2**64 - 1), np.float32(0.25), np.complex64(1j), np.bool_(True), np.str_("np"),
    np.arange(6).reshape(2, 3), np.zeros((0, 4)), np.array(3.5), np.array([b"ab", b"c"]),
    np.array(["ü", "xyz"]), np.array([True, False]), np.array([1 + 1j], dtype=np.complex64),
    np.array([1 + 2j], dtype=np.dtype(np.clongdouble).newbyteorder(">")),
    [1, 2, 3], [1.0, 2.5], ["a", "b"], [True, False], (1, 2), [], (), [1, "a", None], [[1, 2], [3]],
    {"a": 1, "b": {"c": [1.0, 2.0], "d": "x"}}, {}, {"with/slash": 1, "": 2, ".": (3,)},
]


def roundtrip(tmp_path: Path, value: Any) -> Any:
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        write_value(f, "v", value)
    with h5py.File(path, "r") as f:
        return read_value(f["v"])


def assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, float | np.floating) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b
        if isinstance(a, np.generic):
            assert a.dtype == b.dtype


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_value_roundtrip(tmp_path: Path, value: Any) -> None:
    assert_same(value, roundtrip(tmp_path, value))


def test_values_roundtrip_as_parameters_and_run_results(tmp_path: Path) -> None:
    """Through a whole sweep: as parameters, trajectory results and per-run results (columns or not)."""
    traj = Trajectory("all")
    for i, v in enumerate(VALUES):
        traj.add_parameter(f"p{i}", v)
    traj.add_parameter("k", 0)
    traj.add_result("top", {"x": [1, 2]})

    def simulate(t: Trajectory) -> None:
        for i, v in enumerate(VALUES):
            t.add_result(f"r{i}", v)

    Environment(traj, storage=HDF5StorageService(tmp_path / "all.h5")).run_exploration(
        simulate, space={"k": [0, 1, 2]})
    loaded = load_trajectory(tmp_path / "all.h5")
    for i, v in enumerate(VALUES):
        assert_same(v, loaded.parameters[f"p{i}"].value)
        for run in range(3):
            assert_same(v, loaded.results.runs[f"run_{run:08d}"][f"r{i}"].value)
    assert_same({"x": [1, 2]}, loaded.results.top.value)


def test_pickled_values_need_allow_pickle(tmp_path: Path) -> None:
    traj = Trajectory("p")
    traj.add_parameter("obj", Pickled({1, 2}))
    path = tmp_path / "p.h5"
    Environment(traj, storage=HDF5StorageService(path)).run(lambda t: t.add_result("r", Pickled(frozenset([3]))))
    with pytest.raises(StorageError, match="pickled value.*allow_pickle=True"):
        load_trajectory(path)
    loaded = load_trajectory(path, allow_pickle=True)
    assert loaded.obj == {1, 2}
    assert loaded.results.r.value == frozenset([3])


scalars = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=True), st.complex_numbers(),
    st.text(), st.binary(), st.none(),
)
_LONG = np.dtype(np.longdouble).itemsize * 8  # float128 on x86-64
_FLOATS = (hnp.floating_dtypes(sizes=sorted({16, 32, 64, _LONG})),
           hnp.complex_number_dtypes(sizes=sorted({64, 128, 2 * _LONG})))
dtypes = st.one_of(hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(), *_FLOATS, hnp.boolean_dtypes(),
                   hnp.byte_string_dtypes(max_len=5), hnp.unicode_string_dtypes(max_len=5))
arrays = hnp.arrays(dtype=dtypes, shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
numpy_scalars = hnp.arrays(dtype=dtypes, shape=()).map(lambda a: a[()])  # np.int8(3), np.str_("x")...
special_floats = hnp.arrays(  # NaN and infinities are rare in the plain arrays: ask for them
    dtype=st.one_of(*_FLOATS), shape=hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=3),
    elements=st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1.5]),
)
values = st.recursive(
    st.one_of(scalars, arrays, numpy_scalars, special_floats),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=8,
)


def _same_nan_aware(a: Any, b: Any) -> None:
    if isinstance(a, np.ndarray):
        assert type(b) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)  # treats NaN == NaN
    elif isinstance(a, np.generic):
        assert type(b) is type(a) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)  # treats NaN == NaN
    elif isinstance(a, float) and a != a:
        assert type(b) is float and b != b
    elif isinstance(a, complex) and a != a:
        assert type(b) is complex
        np.testing.assert_array_equal(np.array(a), np.array(b))
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same_nan_aware(x, y)
    elif isinstance(a, dict):
        assert type(b) is dict and list(a) == list(b)
        for k in a:
            _same_nan_aware(a[k], b[k])
    else:
        assert type(a) is type(b) and a == b


# no timing in tests: too_slow is a timed check (generation on a loaded machine), deadline likewise
@settings(max_examples=1000, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=values)
def test_any_supported_value_roundtrips(tmp_path: Path, value: Any) -> None:
    _same_nan_aware(value, roundtrip(tmp_path, value))


def test_a_unicode_array_with_a_lone_surrogate_roundtrips(tmp_path: Path) -> None:
    # found by the property test above in CI: it was a raw UnicodeEncodeError at write time
    value = np.array(["\ud800", "ok"], dtype="<U2")
    _same_nan_aware(value, roundtrip(tmp_path, value))

