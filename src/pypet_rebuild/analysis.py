"""Analysis over runs: find runs by a predicate, and every run as one table (numpy or pandas)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .errors import PypetError
from .runstore import RunStatus, TrajectoryState


class Trajectory(Protocol):
    """What analysis needs of a trajectory (the model's Trajectory has it; analysis sits below it)."""

    @property
    def state(self) -> TrajectoryState: ...
    @property
    def name(self) -> str: ...
    def __len__(self) -> int: ...
    def get_from_runs(self, name: str, branch: str = "results") -> np.ma.MaskedArray: ...
    def run_info(self) -> dict[str, np.ndarray]: ...


def values_over_runs(traj: Trajectory, name: str) -> np.ma.MaskedArray:
    """A parameter's value per run (explored or not), or a result's column (masked where missing)."""
    name = name.removeprefix("parameters.")
    if name in traj.state.explored:
        values = traj.state.explored[name]
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return np.ma.MaskedArray(_tighten(out), mask=False)
    param = traj.state.leaves["parameters"].get(name)
    if param is not None:
        out = np.empty(len(traj), dtype=object)
        out[:] = [param.value] * len(traj)
        return np.ma.MaskedArray(_tighten(out), mask=False)
    for branch in ("results", "derived_parameters"):
        try:
            return traj.get_from_runs(name.removeprefix(branch + "."), branch)
        except (KeyError, PypetError):
            continue
    raise PypetError(f"{name!r} is neither a parameter nor a per-run result of {traj.name!r}")


def _tighten(values: np.ndarray) -> np.ndarray:
    """An object array of scalars as a typed array when the scalars allow it."""
    try:
        tight = np.array(values.tolist())
    except (ValueError, TypeError):
        return values
    return tight if tight.shape == values.shape and tight.dtype != object else values


def find_idx(traj: Trajectory, names: str | Sequence[str], predicate: Callable[..., Any]) -> np.ndarray:
    """Indices of the runs where ``predicate(*values)`` is true; a masked value is passed as None."""
    names = [names] if isinstance(names, str) else list(names)
    columns = [values_over_runs(traj, n) for n in names]
    hits = []
    for i in range(len(traj)):
        args = [None if np.ma.getmaskarray(c)[i].any() else c.data[i] for c in columns]
        if predicate(*args):
            hits.append(i)
    return np.array(hits, dtype=np.int64)


def to_table(traj: Trajectory) -> np.ma.MaskedArray:
    """One row per run: index, status, timings, explored parameters and scalar results."""
    info = traj.run_info()
    cols: dict[str, np.ma.MaskedArray] = {
        "idx": np.ma.MaskedArray(np.arange(len(traj)), mask=False),
        "status": np.ma.MaskedArray(info["status"], mask=False),
        "duration": np.ma.MaskedArray(info["end"] - info["start"], mask=info["status"] == 0),
    }
    for name in traj.state.explored:
        cols[name] = values_over_runs(traj, name)
    store = traj.state.run_store
    for name in store.names("results") if store is not None else []:
        if name in cols:
            continue
        col = traj.get_from_runs(name)
        if col.ndim == 1 and col.dtype != object:
            cols[name] = col
    dtype = [(n, c.dtype if c.dtype != object else "O") for n, c in cols.items()]
    table = np.ma.empty(len(traj), dtype=dtype)
    for n, c in cols.items():
        table[n] = c
    return table


def to_pandas(traj: Trajectory) -> Any:
    """:func:`to_table` as a pandas DataFrame (missing values are NaN; ``status`` a categorical of
    "missing", "ok", "failed"); needs pandas installed."""
    try:
        import pandas as pd
    except ImportError:
        raise PypetError("to_pandas needs pandas: pip install 'pypet-hpc[pandas]'") from None
    table = to_table(traj)
    data: dict[str, Any] = {}
    for name in table.dtype.names or ():
        col = table[name]
        mask = np.ma.getmaskarray(col)
        values = np.asarray(col.data)
        if name == "status":  # the words, not the codes
            data[name] = pd.Categorical.from_codes(values.astype(np.int64), [str(s) for s in RunStatus])
        elif not mask.any():
            data[name] = values
        elif values.dtype.kind in "iubfc":
            data[name] = np.where(mask, np.nan, values.astype(complex if values.dtype.kind == "c" else float))
        else:
            obj = values.astype(object)
            obj[mask] = None
            data[name] = obj
    return pd.DataFrame(data).set_index("idx")


def grid_of(traj: Trajectory) -> tuple[list[list[str]], list[list[Any]], np.ndarray] | None:
    """The explored points as a grid, or None when they do not form one.

    Returns (dims, coords, index): each dim is a list of parameters (one, or a zipped group
    whose values change together), coords the dim's values (of its first parameter), and
    ``index[run]`` the run's position on every dim. A grid holds every combination once."""
    n = len(traj)
    names = list(traj.state.explored)
    if not names or n == 0:
        return None
    codes: dict[str, np.ndarray] = {}
    firsts: dict[str, list[Any]] = {}
    for name in names:
        seen: dict[str, int] = {}
        values = traj.state.explored[name]
        codes[name] = np.array([seen.setdefault(repr(v), len(seen)) for v in values], dtype=np.int64)
        firsts[name] = [values[int(i)] for i in np.unique(codes[name], return_index=True)[1]]
    dims: list[list[str]] = []
    for name in names:
        for dim in dims:  # zipped with an earlier parameter: the same partition of the runs
            lead = codes[dim[0]]
            if len(np.unique(lead)) == len(np.unique(codes[name])) and \
                    len({(int(a), int(b)) for a, b in zip(lead, codes[name], strict=True)}) == len(np.unique(lead)):
                dim.append(name)
                break
        else:
            dims.append([name])
    sizes = [len(firsts[d[0]]) for d in dims]
    if int(np.prod(sizes)) != n:
        return None
    index = np.stack([codes[d[0]] for d in dims], axis=1)
    if len(np.unique(index, axis=0)) != n:
        return None
    return dims, [firsts[d[0]] for d in dims], index


def to_xarray(traj: Trajectory) -> Any:
    """The sweep as an ``xarray.Dataset``: one dimension per explored parameter (or zipped group)
    when the points form a grid, else one ``run`` dimension; numeric results as variables on
    it (array results with their own trailing dims), NaN where a run failed or has no value;
    ``status`` the runs' status words. Needs xarray (pip install 'pypet-hpc[xarray]')."""
    try:
        import xarray as xr
    except ImportError:
        raise PypetError("to_xarray needs xarray: pip install 'pypet-hpc[xarray]'") from None
    n = len(traj)
    grid = grid_of(traj)
    shape: tuple[int, ...]
    if grid is None:
        dim_names, shape = ["run"], (n,)
        coords: dict[str, Any] = {"run": np.arange(n)}
        for name, points in traj.state.explored.items():
            coords[name] = ("run", _tighten(np.array(points, dtype=object)))

        def place(col: np.ndarray, fill: Any) -> np.ndarray:
            return col
    else:
        dims, firsts, index = grid
        dim_names, shape = [d[0] for d in dims], tuple(len(f) for f in firsts)
        coords = {d[0]: _tighten(np.array(f, dtype=object)) for d, f in zip(dims, firsts, strict=True)}
        for d, f in zip(dims, firsts, strict=True):
            for other in d[1:]:  # a zipped parameter: a coordinate along its group's dim
                zipped = traj.state.explored[other]
                first_run = {int(c): i for i, c in reversed(list(enumerate(index[:, dims.index(d)])))}
                coords[other] = (d[0], _tighten(np.array([zipped[first_run[k]] for k in range(len(f))], dtype=object)))
        where = tuple(index.T)

        def place(col: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full(shape + col.shape[1:], fill, dtype=col.dtype)
            out[where] = col
            return out

    data: dict[str, Any] = {}
    store = traj.state.run_store
    status = traj.run_info()["status"] if store is not None else np.zeros(n, dtype=np.int8)
    words = np.array([str(s) for s in RunStatus], dtype=object)[status.astype(np.int64)]
    data["status"] = (dim_names, place(words, "missing"))
    for name in store.names("results") if store is not None else []:
        col = traj.get_from_runs(name)
        if col.dtype.kind not in "iufcb":
            continue
        kind = complex if col.dtype.kind == "c" else float
        values = np.where(np.ma.getmaskarray(col), np.nan, np.asarray(col.data).astype(kind))
        trailing = [f"{name}_dim_{k}" for k in range(values.ndim - 1)]
        data[name] = ([*dim_names, *trailing], place(values, np.nan))
    return xr.Dataset(data, coords=coords, attrs={"trajectory": traj.name})
