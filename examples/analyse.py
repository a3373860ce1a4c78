"""Load a merged oscillator sweep and show the resonance curve; `--plot FILE.png` saves a plot.

    python examples/analyse.py oscillator.h5 [--plot resonance.png]
"""

from __future__ import annotations

import argparse

import numpy as np

from pypet_rebuild import load_trajectory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--plot", help="save the resonance curves to this PNG (needs matplotlib)")
    args = parser.parse_args()

    traj = load_trajectory(args.file)
    omega = np.array(traj.explored["drive.omega"])
    zeta = np.array(traj.explored["drive.zeta"])
    amplitude = traj.get_from_runs("amplitude")  # one numpy column, masked where a run has none
    info = traj.run_info()
    print(f"{traj.name}: {len(traj)} runs, {int((info['status'] == 1).sum())} ok, "
          f"median run time {np.median(info['end'] - info['start']) * 1e3:.2f} ms")
    print(f"{'zeta':>6} {'peak omega':>11} {'peak amplitude':>15}")
    for z in np.unique(zeta):
        sel = (zeta == z) & ~np.ma.getmaskarray(amplitude)
        best = np.argmax(amplitude[sel])
        print(f"{z:>6.2f} {omega[sel][best]:>11.3f} {amplitude[sel][best]:>15.3f}")
    peak = int(np.ma.argmax(amplitude))
    traj.set_run(peak)  # explored parameters and results now show this run
    print(f"largest response in run {peak}: omega={traj.omega}, zeta={traj.zeta}, "
          f"amplitude={traj.results.amplitude.value:.3f}, trace starts {traj.results.trace.value[:3].round(3)}")
    traj.set_run(None)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for z in np.unique(zeta):
            sel = zeta == z
            ax.plot(omega[sel], amplitude[sel], marker="o", label=f"zeta={z}")
        ax.set_xlabel("drive frequency omega")
        ax.set_ylabel("steady-state amplitude")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
        print(f"plot saved to {args.plot}")


if __name__ == "__main__":
    main()
