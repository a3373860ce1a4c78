"""Analyse any merged sweep: where a scalar result peaks along one explored parameter, for each
value of another; `--plot FILE.png` saves the curves.

    python examples/analyse.py oscillator.h5 [--plot resonance.png]
    python examples/analyse.py results.h5 --result flow --x traffic.speed --by traffic.ncars

RESULT defaults to the first scalar result column of the file, X and BY to its first and second
explored parameters (BY is optional). On the oscillator sweep of examples/first_steps.py this
is the resonance table: the peak amplitude over omega for each damping ratio zeta.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

import numpy as np

from pypet_rebuild import PypetError, RunStatus, load_trajectory


def short(name: str) -> str:
    return name.rpartition(".")[2]


def plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def fail(message: str) -> NoReturn:
    print(f"analyse.py: {message}", file=sys.stderr)
    sys.exit(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a trajectory file (pypet-hpc merge ... -o FILE)")
    parser.add_argument("--result", help="a scalar result [default: the first scalar result column]")
    parser.add_argument("--x", help="the explored parameter along which the result peaks [default: the first]")
    parser.add_argument("--by", help="one row per value of this explored parameter [default: the second]")
    parser.add_argument("--plot", help="save the curves to this PNG (needs matplotlib)")
    args = parser.parse_args()

    try:
        traj = load_trajectory(args.file)
    except PypetError as exc:
        fail(str(exc))
    explored = list(traj.explored)
    if not explored:
        fail(f"{args.file} explores no parameter: there is nothing to compare across runs")
    columns = {}
    for name in traj.state.run_store.names("results") if traj.state.run_store is not None else []:
        col = traj.get_from_runs(name)
        if col.ndim == 1 and col.dtype.kind in "iuf":
            columns[name] = col
    if not columns:
        fail(f"{args.file} has no scalar numeric result column (a number per run) to analyse")
    result = args.result or next(iter(columns))
    if result not in columns:
        fail(f"--result {result}: not a scalar numeric result of {args.file} (those are: {', '.join(columns)})")
    try:
        x_name = traj.parameter_name(args.x) if args.x else explored[0]
        by_name = traj.parameter_name(args.by) if args.by else (explored[1] if len(explored) > 1 else None)
    except PypetError as exc:
        fail(str(exc).replace("cannot explore unknown", "unknown"))
    for flag, name in (("--x", x_name), ("--by", by_name)):
        if name is not None and name not in explored:
            fail(f"{flag} {name}: not an explored parameter of {args.file} (those are: {', '.join(explored)})")
    x = np.array(traj.explored[x_name])
    by = np.array(traj.explored[by_name]) if by_name else np.zeros(len(traj))
    values = columns[result]

    info = traj.run_info()
    print(f"{traj.name}: {len(traj)} runs, {int((info['status'] == RunStatus.OK).sum())} ok, "
          f"median run time {np.nanmedian(info['end'] - info['start']) * 1e3:.2f} ms")
    head_by = short(by_name) if by_name else ""
    print(f"{head_by:>6} {'peak ' + short(x_name):>11} {'peak ' + result:>15}")
    for b in np.unique(by):
        sel = (by == b) & ~np.ma.getmaskarray(values)
        if not sel.any():
            continue
        best = np.argmax(values[sel])
        print(f"{b if by_name else '':>6} {x[sel][best]:>11.3f} {values[sel][best]:>15.3f}")
    peak = int(np.ma.argmax(values))
    point = ", ".join(f"{short(n)}={plain(traj.explored[n][peak])!r}" for n in explored)
    print(f"largest {result} in run {peak}: {point}, {result}={values[peak]:.3f}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for b in np.unique(by):
            sel = by == b
            ax.plot(x[sel], values[sel], marker="o", label=f"{head_by}={b}" if by_name else None)
        ax.set_xlabel(x_name)
        ax.set_ylabel(result)
        if by_name:
            ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()
