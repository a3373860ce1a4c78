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
