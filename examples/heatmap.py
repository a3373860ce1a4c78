"""A 2-D heat map of a gridded sweep through xarray: the oscillator's amplitude over omega and zeta.

    pypet-hpc submit examples/first_steps.py --executor local --wait -o oscillator.h5
    python examples/heatmap.py oscillator.h5 --plot heatmap.png [--result amplitude]

Needs xarray and matplotlib (pip install 'pypet-hpc[xarray,plot]').
"""

from __future__ import annotations

import argparse
import sys

from pypet_rebuild import PypetError, load_trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", help="a trajectory file whose explored points form a 2-D grid")
    parser.add_argument("--result", default="amplitude", help="the scalar result to map [default: amplitude]")
    parser.add_argument("--plot", default="heatmap.png", help="the PNG to write [default: heatmap.png]")
    args = parser.parse_args()
    try:
        ds = load_trajectory(args.file).to_xarray()
    except PypetError as exc:
        sys.exit(f"heatmap.py: {exc}")
    if args.result not in ds or ds[args.result].ndim != 2:
        sys.exit(f"heatmap.py: {args.file} has no result {args.result!r} on a 2-D grid (variables: "
                 f"{', '.join(f'{k} {tuple(v.dims)}' for k, v in ds.data_vars.items())})")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    field = ds[args.result]
    print(field.to_pandas().round(3).iloc[::4])  # every 4th row: the table behind the map
    fig, ax = plt.subplots(figsize=(6, 4))
    field.T.plot(ax=ax)  # first dim along x, second along y
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"heat map saved to {args.plot}")


if __name__ == "__main__":
    main()
