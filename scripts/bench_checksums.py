"""What the fletcher32 checksums cost: the same sweep written, merged, verified and read back
with checksums off (the floor, measured in the same run) and on.

    uv run python scripts/bench_checksums.py [--runs 20000] [--vec 256]

Prints one table (medians of 3 repetitions; these machines are shared and noisy).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pypet_rebuild import Environment, Trajectory, codec, load_trajectory
from pypet_rebuild.environment import merge_workdir, verify_path
from pypet_rebuild.workdir import Workdir

VEC = 256


def simulate(traj: Trajectory) -> None:
    traj.add_result("z", 3 * traj.x + 1)
    traj.add_result("vec", np.full(VEC, float(traj.x)))


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_pass(folder: Path, runs: int, checksums: bool) -> dict[str, float]:
    codec.CHECKSUMS = checksums
    traj = Trajectory("bench")
    traj.add_parameter("x", 0)
    wd_path = folder / f"wd-{checksums}"
    env = Environment(traj, executor="inline", workdir=wd_path, runs_per_task=max(1, runs // 10))
    out: dict[str, float] = {}
    out["write (sweep into 10 shards)"] = timed(lambda: env.submit(simulate, space={"x": list(range(runs))}))
    wd = Workdir(wd_path)
    target = folder / f"m-{checksums}.h5"
    out["merge (10 shards, new target)"] = timed(lambda: merge_workdir(wd, target))
    out["merge (nothing new onto the target)"] = timed(lambda: merge_workdir(wd, target))
    out["read one array column"] = timed(lambda: load_trajectory(target).get_from_runs("vec"))
    out["verify the merged file"] = timed(lambda: verify_path(target))
    out["merged file size (MB)"] = target.stat().st_size / 1e6
    return out


def main() -> None:
    global VEC
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20000)
    ap.add_argument("--vec", type=int, default=256)
    args = ap.parse_args()
    VEC = args.vec
    rows: dict[str, dict[bool, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(3):
            for checksums in (False, True):
                folder = Path(tmp) / f"{rep}"
                folder.mkdir(exist_ok=True)
                for what, value in one_pass(folder, args.runs, checksums).items():
                    rows.setdefault(what, {False: [], True: []})[checksums].append(value)
    codec.CHECKSUMS = True
    print(f"{args.runs} runs, results z (int) and vec ({VEC} float64) per run")
    print(f"| {'what':38} | {'no checksum (floor)':>19} | {'fletcher32':>10} | {'ratio':>5} |")
    print(f"|{'-' * 40}|{'-' * 21}|{'-' * 12}|{'-' * 7}|")
    for what, by in rows.items():
        off, on = statistics.median(by[False]), statistics.median(by[True])
        unit = "" if "MB" in what else " s"
        print(f"| {what:38} | {off:17.3f}{unit:>2} | {on:8.3f}{unit:>2} | {on / off:5.2f} |")


if __name__ == "__main__":
    main()
