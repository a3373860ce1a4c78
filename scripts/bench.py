"""The benchmark: every DESIGN.md target, measured against a floor or peer in the same run.

    uv run python scripts/bench.py            # full sizes (a few minutes)
    uv run python scripts/bench.py --quick    # small sizes, same code paths (CI)
    uv run python scripts/bench.py --growth   # how each cost grows: 100k and 1M runs (--large adds 10M)

Prints one table: what was measured, the floor or peer, the ratio, the target and whether it is
met. Times are medians of several repetitions; these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402 - the floor and pypet live beside this script

from pypet_rebuild import Environment, HDF5StorageService, Trajectory, load_trajectory  # noqa: E402
from pypet_rebuild.environment import merge_workdir  # noqa: E402
from pypet_rebuild.exploration import Plan  # noqa: E402
from pypet_rebuild.formats.records import JobRecord  # noqa: E402
from pypet_rebuild.formats.shard import CountsCache, ShardWriter  # noqa: E402
from pypet_rebuild.runstore import MemoryRunStore  # noqa: E402
from pypet_rebuild.workdir import Workdir  # noqa: E402
from pypet_rebuild.worker import execute  # noqa: E402


@dataclass
class Row:
    what: str
    measured: str
    floor: str
    ratio: str
    target: str
    met: bool | None  # None: not measured here


def median_of(fn: Callable[[], float], repeats: int) -> float:
    return statistics.median(fn() for _ in range(repeats))


def sweep_traj(n_runs: int, name: str = "bench") -> Trajectory:
    """The benchmark sweep: x and y from baselines.sweep_axes, the same points the floor computes."""
    xs, ys = baselines.sweep_axes(n_runs)
    traj = Trajectory(name)
    traj.add_parameter("x", 0.0)
    traj.add_parameter("y", 0.0)
    traj.explore({"x": [x for x in xs for _ in ys], "y": [y for _ in xs for y in ys]})
    return traj


def simulate(traj: Trajectory) -> None:
    """Trivial: three scalar results per run, as in the floor."""
    x, y = traj.x, traj.y
    traj.add_result("z", x * y)
    traj.add_result("w", x + y)
    traj.add_result("v", float(traj.current_run or 0))


def inline_per_run(n: int, tmp: Path) -> float:
    """Our serial, in-process Environment on the pypet comparison sweep, file included."""
    out = tmp / f"inline-{time.time_ns()}.h5"
    traj = sweep_traj(n)
    t = time.perf_counter()
    Environment(traj, storage=HDF5StorageService(out)).run_exploration(simulate)
    return (time.perf_counter() - t) / n


def make_sweep_shards(tmp: Path, n: int, runs_per_task: int, fn: Callable[[Trajectory], None],
                      name: str) -> Workdir:
    wd = Workdir(tmp / name)
    handle = Environment(sweep_traj(n, name), executor="local", workdir=wd.path, runs_per_task=runs_per_task,
                         max_parallel=2).submit(fn)
    handle.wait(poll=0.1)
    return wd


def timed_merge(wd: Workdir, out: Path) -> float:
    out.unlink(missing_ok=True)
    os.sync()  # write back what earlier steps left dirty, so it is not billed to this one
    t = time.perf_counter()
    merge_workdir(wd, out)
    return time.perf_counter() - t


def incremental_merge(wd: Workdir, new: list[Path], target: Path, held: Path) -> float:
    """Seconds to merge the shards ``new`` into a target holding every other shard (merged first,
    untimed): the merge writes in place the bytes of the new runs only."""
    held.mkdir(exist_ok=True)
    for f in new:
        f.rename(held / f.name)
    try:
        target.unlink(missing_ok=True)
        merge_workdir(wd, target)
    finally:
        for f in new:
            (held / f.name).rename(f)
    os.sync()
    t = time.perf_counter()
    report = merge_workdir(wd, target)
    elapsed = time.perf_counter() - t
    assert len(report.merged_shards) == len(new), report.summary()
    return elapsed


def column_load(path: Path) -> float:
    t = time.perf_counter()
    load_trajectory(path).get_from_runs("z")
    return time.perf_counter() - t


def cp_seconds(files: list[Path], dest: Path) -> float:
    """Copy the same bytes and make them durable, as merge does (it fsyncs its target)."""
    dest.mkdir(exist_ok=True)
    os.sync()
    t = time.perf_counter()
    for f in files:
        shutil.copyfile(f, dest / f.name)
        fd = os.open(dest / f.name, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - t
    shutil.rmtree(dest)
    return elapsed


def bulk_sim(rows: int) -> Callable[[Trajectory], None]:
    def bulk(traj: Trajectory) -> None:
        traj.add_result("data", np.full(rows, traj.x))

    return bulk


# peak resident memory of this process image in MB (ru_maxrss would include the forking parent)
_HWM = ("hwm = lambda: next(int(line.split()[1]) for line in open('/proc/self/status') "
        "if line.startswith('VmHWM')) / 1024")


def merge_peak_rss(wd: Workdir, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of a merge in a fresh process."""
    code = ("import time, sys; from pathlib import Path;"
            "from pypet_rebuild.environment import merge_workdir; from pypet_rebuild.workdir import Workdir;"
            "t = time.perf_counter(); merge_workdir(Workdir(sys.argv[1]), Path(sys.argv[2]));"
            f"{_HWM}; print(hwm(), time.perf_counter() - t)")
    out.unlink(missing_ok=True)
    res = subprocess.run([sys.executable, "-c", code, str(wd.path), str(out)], capture_output=True, text=True,
                         check=True)
    rss, secs = res.stdout.split()
    return float(rss), float(secs)


def import_rss() -> float:
    code = f"import pypet_rebuild.environment; {_HWM}; print(hwm())"
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def slurm_rows(submit_runs: int, compare: tuple[int, ...] | None) -> list[Row]:
    """SLURM submission (and, in the full run, pypet-hpc with defaults against plain submitit
    map_array over hand-made chunks) on the local cluster when it is up."""
    import bench_slurm

    what = f"SLURM submission of {submit_runs:,} runs"
    problem = bench_slurm.cluster_problem()
    if problem is not None:
        return [Row(what, f"not measured: cluster not up ({problem})", "-", "-", "<= 5 s", None)]
    folder = Path(tempfile.mkdtemp(prefix="bench-slurm-", dir=Path.cwd()))  # shared with the node
    try:
        secs, calls, allowed = bench_slurm.submission(folder, submit_runs)
        rows = [Row(what, f"{secs:.2f} s, {calls} sbatch call(s)", f"ceil(tasks/MaxArraySize) = {allowed}",
                    f"{calls / allowed:.0f}x calls", "<= 5 s and <= ceil(...) calls", secs <= 5 and calls <= allowed)]
        for n, ours, plain in bench_slurm.compare(folder, compare) if compare else []:
            rows.append(Row(f"SLURM, {n:,} runs of 0.3 ms, defaults: submit..loaded column", f"{ours:.1f} s",
                            f"{plain:.1f} s submitit map_array, chunks of 100", f"{ours / plain:.2f}x",
                            "<= 1.0x", ours <= plain))
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def synthetic_finished_sweep(tmp: Path, n_tasks: int, runs_per_task: int = 100) -> Workdir:
    """A workdir of ``n_tasks`` finished local tasks, built without running them: one real shard
    of ``runs_per_task`` runs copied for every task, and the local executor's records saying
    every task completed (what status reads)."""
    n = n_tasks * runs_per_task
    wd = Workdir(tmp / f"synthetic-{n_tasks}")
    manifest = wd.create(sweep_traj(n, "synthetic"), Plan.make(n, runs_per_task), "bench:simulate",
                         {"name": "local", "options": {}})
    small = sweep_traj(runs_per_task)
    small.state.run_store = MemoryRunStore()
    sink = ShardWriter(wd.shard(0), manifest.plan_hash, 0)
    execute(small, simulate, range(runs_per_task), sink, keep=False)
    sink.finish()
    for task in range(1, n_tasks):
        shutil.copyfile(wd.shard(0), wd.shard(task))
        CountsCache.record_done(wd.shard(task), runs_per_task, 0)  # as each task's finish() does
    (wd.path / "local").mkdir(exist_ok=True)
    (wd.path / "local" / "s0.state.json").write_text(json.dumps(
        {"pid": None, "finished": True, "tasks": {str(t): "COMPLETED" for t in range(n_tasks)}}))
    wd.record_jobs(JobRecord("local", ["s0"], list(range(n_tasks))))
    return wd


def status_seconds(wd: Workdir) -> float:
    from pypet_rebuild.status import sweep_status

    t = time.perf_counter()
    st = sweep_status(wd)
    elapsed = time.perf_counter() - t
    assert st.counts["ok"] == st.n_runs, st.counts
    return elapsed


def list_seconds(folder: Path) -> float:
    """The floor of a status: one listing of the shard directory with a stat of each file."""
    t = time.perf_counter()
    for entry in os.scandir(folder):
        entry.stat()
    return time.perf_counter() - t


def status_rows(tmp: Path, n_tasks: int) -> list[Row]:
    wd = synthetic_finished_sweep(tmp, n_tasks)
    os.sync()
    cold = status_seconds(wd)  # the counts each task appended as it finished: no shard opened
    warm = median_of(lambda: status_seconds(wd), 3)
    floor = median_of(lambda: list_seconds(wd.shards), 3)
    shutil.rmtree(wd.path)
    return [Row(f"status of a {n_tasks:,}-task sweep (local, all finished)", f"{warm:.2f} s (first call {cold:.2f} s)",
                f"{floor * 1e3:.0f} ms listing the shards", f"{warm / floor:.0f}x", "<= 1 s", warm <= 1.0)]


def shard_rows(tmp: Path, runs_per_task: list[int]) -> list[Row]:
    """Bytes of one task's shard per byte of its result data (3 float64 results per run), beside
    the floor: the same runs written as plain h5py columns (the explored x, y and the results)."""
    rows = []
    for n in runs_per_task:
        traj = sweep_traj(n, "shard")
        traj.state.run_store = MemoryRunStore()
        path = tmp / f"shard-{n}.h5"
        sink = ShardWriter(path, "bench", 0, n_runs=n)
        execute(traj, simulate, range(n), sink, keep=False)
        sink.finish()
        data = 3 * 8 * n  # z, w, v: one float64 each per run
        floor = tmp / f"floor-{n}.h5"
        baselines.floor_sweep(n, floor)
        size, floor_size = path.stat().st_size, floor.stat().st_size
        rows.append(Row(f"shard bytes per byte of result data, {n:,} runs per task",
                        f"{size / data:.2f}x ({size / 1e3:.0f} KB for {data / 1e3:.0f} KB)",
                        f"{floor_size / data:.2f}x plain h5py columns", f"{size / floor_size:.1f}x", "<= 1.5x",
                        size / data <= 1.5))
        path.unlink()
        floor.unlink()
    return rows


# -- the growth table: each cost at growing run counts, beside the floor measured in the same run

_GROWTH_SUBMIT = """
import sys, time
from pathlib import Path
from pypet_rebuild import Trajectory, cartesian_product
from pypet_rebuild.exploration import Plan
from pypet_rebuild.workdir import Workdir
sys.path.insert(0, sys.argv[3])
import baselines
n = int(sys.argv[1])
t = time.perf_counter()
xs, ys = baselines.sweep_axes(n)
traj = Trajectory("growth")
traj.add_parameter("x", 0.0)
traj.add_parameter("y", 0.0)
traj.explore(cartesian_product({"x": xs, "y": ys}))
Workdir(sys.argv[2]).create(traj, Plan.make(n), "bench:simulate", {"executor": "local"})
HWM
print(hwm(), time.perf_counter() - t)
"""

_GROWTH_FLOOR_SUBMIT = """
import sys, time
import h5py, numpy as np
sys.path.insert(0, sys.argv[3])
import baselines
n = int(sys.argv[1])
t = time.perf_counter()
xs, ys = baselines.sweep_axes(n)
x, y = (a.ravel() for a in np.meshgrid(np.array(xs), np.array(ys), indexing="ij"))
with h5py.File(sys.argv[2], "w") as f:
    f["x"], f["y"] = x, y
HWM
print(hwm(), time.perf_counter() - t)
"""


def _child(code: str, *args: str) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``code`` run in a fresh interpreter."""
    res = subprocess.run([sys.executable, "-c", code.replace("HWM", _HWM + "\n"), *args], capture_output=True,
                         text=True, check=True)
    rss, secs = res.stdout.split()[-2:]
    return float(rss), float(secs)


def submit_and_floor(tmp: Path, n: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """((peak RSS MB, seconds) of planning, checking, hashing and writing the skeleton of n runs,
    (the same) of the floor exploring the same axes with numpy and writing them with h5py), each
    in a fresh interpreter."""
    here = str(Path(__file__).resolve().parent)
    wd_path = tmp / f"submit-{n}"
    ours = _child(_GROWTH_SUBMIT, str(n), str(wd_path), here)
    floor = _child(_GROWTH_FLOOR_SUBMIT, str(n), str(tmp / "submit-floor.h5"), here)
    shutil.rmtree(wd_path)
    return ours, floor


def task_per_run(n: int, tmp: Path) -> float:
    """Seconds per run inside a task: the benchmark simulation (2 shortcut reads, 3 scalar results)."""
    traj = sweep_traj(n)
    traj.state.run_store = MemoryRunStore()
    final = tmp / "growth-task.h5"
    for p in (final, final.with_name(final.name + ".partial")):
        p.unlink(missing_ok=True)
    sink = ShardWriter(final, "bench", 0)
    t = time.perf_counter()
    execute(traj, simulate, range(n), sink, keep=False)
    sink.finish()
    return (time.perf_counter() - t) / n


def growth_rows(sizes: list[int], tmp: Path) -> list[list[str]]:
    """One row per size: submit, task per run, merge (time, peak RSS), status and a column load,
    each beside the floor process measured in the same run."""
    from pypet_rebuild.status import sweep_status

    rows = []
    for n in sizes:
        (sub_rss, sub_s), (floor_rss, floor_s) = submit_and_floor(tmp, n)
        per_run = task_per_run(min(n, 200_000), tmp)
        runs_per_task = max(1, n // 100)
        wd = make_sweep_shards(tmp, n, runs_per_task, simulate, f"growth_sweep_{n}")
        t = time.perf_counter()
        sweep_status(wd)
        status_s = time.perf_counter() - t
        merged = tmp / f"growth-{n}.h5"
        merge_rss, merge_s = merge_peak_rss(wd, merged)
        load_s = median_of(lambda: column_load(merged), 3)  # noqa: B023 - called at once
        floor_file = tmp / "growth-floor-sweep.h5"
        sweep_floor = baselines.floor_sweep(n, floor_file)
        read_floor = median_of(lambda: baselines.floor_read(floor_file), 3)  # noqa: B023 - called at once
        rows.append([f"{n:,}", f"{sub_s:.2f} s / {sub_rss:.0f} MB", f"{floor_s:.2f} s / {floor_rss:.0f} MB",
                     f"{per_run * 1e6:.1f} us", f"{merge_s:.2f} s / {merge_rss:.0f} MB",
                     f"{sweep_floor:.2f} s", f"{status_s * 1e3:.0f} ms ({wd.manifest().plan.n_tasks} tasks)",
                     f"{load_s * 1e3:.1f} ms", f"{read_floor * 1e3:.1f} ms"])
        shutil.rmtree(wd.path)
        merged.unlink()
    return rows


def print_growth(rows: list[list[str]]) -> None:
    heads = ["runs", "submit (time / peak RSS)", "floor: explore+write columns", "task per run",
             "merge (time / peak RSS)", "floor: whole sweep", "status", "load one column", "floor: h5py read"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for CI (same code paths)")
    ap.add_argument("--pypet-python", help="a Python >= 3.12 for the pypet 0.7.0 baseline")
    ap.add_argument("--no-pypet", action="store_true", help="skip the pypet baseline")
    ap.add_argument("--json", help="also write the rows to this JSON file")
    ap.add_argument("--growth", action="store_true", help="only the growth table: 100k and 1M runs")
    ap.add_argument("--status", action="store_true", help="only status of a 10,000-task sweep and shard bytes")
    ap.add_argument("--large", action="store_true", help="with --growth: 10M runs too")
    args = ap.parse_args(argv)
    q = args.quick
    if args.growth:
        sizes_g = [10_000, 100_000] if q else [100_000, 1_000_000, *([10_000_000] if args.large else [])]
        print(f"# pypet-hpc growth table {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
        with tempfile.TemporaryDirectory(prefix="pypet-growth-", dir=os.environ.get("BENCH_DIR")) as tmp_g:
            print_growth(growth_rows(sizes_g, Path(tmp_g)))
        return 0
    if args.status:
        n_tasks = 1_000 if q else 10_000
        print(f"# pypet-hpc status and shard size {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores")
        with tempfile.TemporaryDirectory(prefix="pypet-status-", dir=os.environ.get("BENCH_DIR")) as tmp_s:
            print_table(status_rows(Path(tmp_s), n_tasks) + shard_rows(Path(tmp_s), [100, 1_000, 10_000]))
        return 0
    sizes = {
        "task": 20_000 if q else 100_000, "e2e": 10_000 if q else 100_000, "big": 100_000 if q else 1_000_000,
        "large": 10_000_000, "pypet": 200 if q else 1_000, "shards": 100 if q else 1_000,
        "bulk_mb": 128 if q else 512, "peak_mb": 256 if q else 2_048, "slurm": 10_000 if q else 100_000,
        "status_tasks": 1_000 if q else 10_000, "incr_mb": 256 if q else 1024,
    }
    reps = 2 if q else 3
    print(f"# pypet-hpc benchmark ({'quick' if q else 'full'}{', large' if args.large else ''}) "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"# machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
          f"Python {platform.python_version()}, numpy {np.__version__}, h5py {h5py.__version__}, "
          f"HDF5 {h5py.version.hdf5_version}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="pypet-bench-", dir=os.environ.get("BENCH_DIR")) as tmp_s:
        tmp = Path(tmp_s)
        rows.append(task_row(tmp, sizes["task"]))
        rows.append(cli_row(tmp, sizes["e2e"], reps, vs_floor=3.0))
        rows.append(cli_row(tmp, sizes["big"], 1, seconds=15.0))
        rows += submit_rows(tmp, [sizes["big"], *([sizes["large"]] if args.large else [])])
        rows.append(pypet_compare_row(args, tmp, sizes["pypet"], reps))
        rows += merge_load_rows(tmp, sizes["e2e"], sizes["shards"], reps)
        if args.large:
            rows += large_rows(tmp, sizes["large"])
        rows += bulk_rows(tmp, sizes["bulk_mb"], sizes["incr_mb"], reps)
        rows.append(peak_rss_row(tmp, sizes["peak_mb"] * (5 if args.large else 1)))
        rows += status_rows(tmp, sizes["status_tasks"])
        rows += shard_rows(tmp, [100, 1_000, 10_000])

    rows += slurm_rows(sizes["slurm"], None if q else (1_000, 10_000))
    if q:  # the targets are stated at the full sizes: judge them only there
        print("# quick mode: smaller sizes than the targets, same code paths; 'met' is judged by the full run")
        rows = [Row(r.what, r.measured, r.floor, r.ratio, r.target, None) for r in rows]
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


# -- the rows of the full table: one function per DESIGN.md target ---------------------------------


def task_row(tmp: Path, n: int) -> Row:
    ours = median_of(lambda: task_per_run(n, tmp), 3)
    floor = median_of(lambda: baselines.floor_sweep(n, tmp / "floor-task.h5"), 3) / n
    return Row(f"per-run cost in a task ({n:,} runs: 2 shortcut reads, 3 results)", f"{ours * 1e6:.1f} us",
               f"{floor * 1e6:.2f} us per run of the floor", f"{ours / floor:.0f}x", "<= 10 us", ours <= 10e-6)


SWEEP_FILE = """
import sys
sys.path.insert(0, {here!r})
import baselines
from pypet_rebuild import Trajectory

def make_trajectory():
    traj = Trajectory("cli_bench")
    traj.add_parameter("x", 0.0)
    traj.add_parameter("y", 0.0)
    return traj

_xs, _ys = baselines.sweep_axes({n})
space = {{"x": _xs, "y": _ys}}

def simulate(traj):
    x, y = traj.x, traj.y
    traj.add_result("z", x * y)
    traj.add_result("w", x + y)
    traj.add_result("v", float(traj.current_run or 0))
"""

_FLOOR_PROCESS = "import sys; sys.path.insert(0, sys.argv[1]); import baselines; baselines.floor_sweep(int(sys.argv[2]), sys.argv[3])"


def floor_process(n: int, tmp: Path) -> float:
    """Wall seconds of the floor as a process: interpreter, imports, the sweep, the h5py columns."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", _FLOOR_PROCESS, str(Path(__file__).resolve().parent), str(n),
                    str(tmp / "floor-process.h5")], check=True)
    return time.perf_counter() - t


def cli_end_to_end(n: int, tmp: Path) -> float:
    """`pypet-hpc submit SWEEP --max-parallel 2 --wait` (local executor, default task size; it
    merges), then one column loaded: wall seconds."""
    sweep = tmp / f"cli_sweep_{n}.py"
    sweep.write_text(SWEEP_FILE.format(here=str(Path(__file__).resolve().parent), n=n))
    wd = tmp / f"cli-{time.time_ns()}"
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pypet_rebuild.cli", "submit", str(sweep), "--workdir", str(wd),
                    "--max-parallel", "2", "--wait"], check=True, capture_output=True, cwd=tmp)
    z = load_trajectory(wd / "merged.h5").get_from_runs("z")
    elapsed = time.perf_counter() - t
    assert z.count() == n, z.count()
    shutil.rmtree(wd)
    return elapsed


def cli_row(tmp: Path, n: int, reps: int, vs_floor: float | None = None, seconds: float | None = None) -> Row:
    ours = median_of(lambda: cli_end_to_end(n, tmp), reps)
    floor = median_of(lambda: floor_process(n, tmp), reps)
    goal = f"<= {vs_floor:g}x floor" if vs_floor else f"<= {seconds:g} s"
    met = ours <= vs_floor * floor if vs_floor else ours <= (seconds or 0)
    return Row(f"{n:,}-run sweep, CLI, local, 2 workers: submit..load", f"{ours:.2f} s",
               f"{floor:.2f} s floor process", f"{ours / floor:.1f}x", goal, met)


def submit_rows(tmp: Path, sizes: list[int]) -> list[Row]:
    """Plan, checks, plan hash and skeleton of n runs in a fresh process, beside the floor process
    that explores the same axes with numpy and writes them with h5py."""
    rows = []
    for n in sizes:
        (rss, secs), (floor_rss, floor_s) = submit_and_floor(tmp, n)
        limit = 1.5 if n <= 1_000_000 else 15.0
        rows.append(Row(f"submit {n:,} runs (plan, checks, hash, skeleton)", f"{secs:.2f} s / {rss:.0f} MB",
                        f"{floor_s:.2f} s / {floor_rss:.0f} MB numpy+h5py", f"{secs / floor_s:.0f}x",
                        f"<= {limit:g} s" + (" and <= 1 GB" if n > 1_000_000 else ""),
                        secs <= limit and (n <= 1_000_000 or rss <= 1024)))
    return rows


def pypet_compare_row(args: argparse.Namespace, tmp: Path, n: int, reps: int) -> Row:
    ours_run = median_of(lambda: inline_per_run(n, tmp), reps)
    pypet = pypet_row(args, n, tmp)
    what = f"vs pypet 0.7.0 ({n:,} runs, serial)"
    if pypet is None:
        return Row(what, f"{ours_run * 1e6:.0f} us/run", "pypet not run (no Python >= 3.12)", "-", ">= 500x less", None)
    return Row(what, f"{ours_run * 1e6:.0f} us/run", f"{pypet * 1e3:.1f} ms/run pypet", f"{pypet / ours_run:.0f}x less",
               ">= 500x less", pypet / ours_run >= 500)


def nothing_new_merge(wd: Workdir, target: Path) -> tuple[float, bool]:
    """(seconds, target untouched) of a merge when every shard is already in ``target``."""
    before = target.stat()
    t = time.perf_counter()
    report = merge_workdir(wd, target)
    elapsed = time.perf_counter() - t
    after = target.stat()
    assert not report.merged_shards, report.summary()
    return elapsed, (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)


def merge_load_rows(tmp: Path, n: int, n_shards: int, reps: int) -> list[Row]:
    wd = make_sweep_shards(tmp, n, max(1, n // n_shards), simulate, "shards")
    merged = tmp / "merged.h5"
    merge_s = median_of(lambda: timed_merge(wd, merged), reps)
    again = [nothing_new_merge(wd, merged) for _ in range(5)]
    again_s = statistics.median(a[0] for a in again)
    untouched = all(a[1] for a in again)
    load_s = median_of(lambda: column_load(merged), 5)
    floor_file = tmp / "floor-read.h5"
    baselines.floor_sweep(n, floor_file)
    floor_read = median_of(lambda: baselines.floor_read(floor_file), 5)
    shards = wd.shard_files()
    cp_s = median_of(lambda: cp_seconds(shards, tmp / "cp"), reps)
    shutil.rmtree(wd.path)
    return [
        Row(f"load one result column of a {n:,}-run file", f"{load_s * 1e3:.1f} ms",
            f"{floor_read * 1e3:.2f} ms h5py read", f"{load_s / floor_read:.0f}x", "<= 50 ms", load_s <= 0.05),
        Row(f"merge {len(shards):,} shards of {n // len(shards)} runs", f"{merge_s:.2f} s",
            f"{cp_s:.2f} s cp of the shards", f"{merge_s / cp_s:.0f}x", "<= 2 s", merge_s <= 2),
        Row("merge with nothing new", f"{again_s * 1e3:.0f} ms, target {'untouched' if untouched else 'CHANGED'}",
            "-", "-", "<= 0.1 s, target untouched", again_s <= 0.1 and untouched),
    ]


def large_rows(tmp: Path, n: int) -> list[Row]:
    """Merge peak RSS and a column load at ``n`` runs (--large): 100 tasks of n/100 runs."""
    wd = make_sweep_shards(tmp, n, n // 100, simulate, "large")
    merged = tmp / "large.h5"
    rss, secs = merge_peak_rss(wd, merged)
    shutil.rmtree(wd.path)
    load_s = median_of(lambda: column_load(merged), 3)
    floor_file = tmp / "floor-large.h5"
    baselines.floor_sweep(n, floor_file)
    floor_read = median_of(lambda: baselines.floor_read(floor_file), 3)
    merged.unlink()
    floor_file.unlink()
    base = import_rss()
    return [
        Row(f"peak memory of a merge of {n:,} runs", f"{rss:.0f} MB ({secs:.0f} s)", f"{base:.0f} MB after imports",
            f"{rss / base:.1f}x", "<= 256 MB", rss <= 256),
        Row(f"load one result column of a {n:,}-run file", f"{load_s * 1e3:.0f} ms",
            f"{floor_read * 1e3:.0f} ms h5py read", f"{load_s / floor_read:.1f}x", "<= 200 ms", load_s <= 0.2),
    ]


def bulk_rows(tmp: Path, bulk_mb: int, target_mb: int, reps: int) -> list[Row]:
    rows_per_run = 1 << 20  # 8 MiB of float64 per run
    wd = make_sweep_shards(tmp, bulk_mb // 8, 4, bulk_sim(rows_per_run), "bulk")
    shards = wd.shard_files()
    nbytes = sum(f.stat().st_size for f in shards)
    merge_b = median_of(lambda: timed_merge(wd, tmp / "bulk.h5"), reps)
    cp_b = median_of(lambda: cp_seconds(shards, tmp / "cp"), reps)
    out = [Row(f"bulk-array merge ({nbytes / 2**20:.0f} MiB)", f"{nbytes / merge_b / 2**20:.0f} MiB/s",
               f"{nbytes / cp_b / 2**20:.0f} MiB/s cp", f"{cp_b / merge_b:.0%} of cp", ">= 70% of cp",
               cp_b / merge_b >= 0.7)]
    (tmp / "bulk.h5").unlink(missing_ok=True)
    shutil.rmtree(wd.path)

    wd = make_sweep_shards(tmp, target_mb // 8, 4, bulk_sim(rows_per_run), "incr")  # then 4 new shards in place
    new = wd.shard_files()[-4:]
    new_bytes = sum(f.stat().st_size for f in new)
    merge_i = median_of(lambda: incremental_merge(wd, new, tmp / "incr.h5", tmp / "held"), reps)
    cp_i = median_of(lambda: cp_seconds(new, tmp / "cp"), reps)
    out.append(Row(f"incremental merge of {new_bytes / 2**20:.0f} MiB into a {target_mb / 1024:.2g} GiB target",
                   f"{new_bytes / merge_i / 2**20:.0f} MiB/s", f"{new_bytes / cp_i / 2**20:.0f} MiB/s cp",
                   f"{cp_i / merge_i:.0%} of cp", ">= 70% of cp", cp_i / merge_i >= 0.7))
    (tmp / "incr.h5").unlink(missing_ok=True)
    shutil.rmtree(wd.path)
    return out


def peak_rss_row(tmp: Path, peak_mb: int) -> Row:
    rows_per_run = 1 << 20
    wd = make_sweep_shards(tmp, peak_mb // 8, 16, bulk_sim(rows_per_run), "peak")
    rss, _ = merge_peak_rss(wd, tmp / "peak.h5")
    (tmp / "peak.h5").unlink(missing_ok=True)
    base = import_rss()
    shutil.rmtree(wd.path)
    return Row(f"peak memory of a merge of {peak_mb / 1024:.2g} GiB of arrays", f"{rss:.0f} MB",
               f"{base:.0f} MB after imports", f"{rss / base:.1f}x", "<= 256 MB", rss <= 256)


def pypet_row(args: argparse.Namespace, n: int, tmp: Path) -> float | None:
    """pypet 0.7.0's seconds per run on the same sweep, or None when no Python >= 3.12 is found."""
    if args.no_pypet:
        return None
    python = baselines.pypet_python(args.pypet_python)
    if python is None:
        print("# pypet baseline skipped: no Python >= 3.12 found; pass --pypet-python")
        return None
    venv = baselines.ensure_pypet_venv(python, Path(__file__).resolve().parents[1] / ".bench" / "pypet-venv")
    timings = baselines.pypet_sweep(venv, n, tmp / "pypet")
    return float(timings["per_run_seconds"])


def print_table(rows: list[Row]) -> None:
    heads = ("target", "measured", "floor / peer (same run)", "ratio", "goal", "met")
    cells = [(r.what, r.measured, r.floor, r.ratio, r.target, {True: "yes", False: "NO", None: "-"}[r.met])
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads)]
    line = " | ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True))
    print(f"| {line} |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for c in cells:
        print("| " + " | ".join(x.ljust(w) for x, w in zip(c, widths, strict=True)) + " |")


if __name__ == "__main__":
    sys.exit(main())
