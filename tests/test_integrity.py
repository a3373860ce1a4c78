"""Integrity end to end (issue 12): checksums on every dataset, damaged shards set aside, a
damaged merge target refused and rebuilt, ``pypet-hpc verify``; a merge onto a full disk."""

from __future__ import annotations

import contextlib
import multiprocessing
import resource
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from pypet_rebuild import (
    Environment,
    HDF5StorageService,
    Pickled,
    PypetError,
    Trajectory,
    cartesian_product,
    load_trajectory,
)
from pypet_rebuild.cli import main as cli_main
from pypet_rebuild.environment import merge_workdir
from pypet_rebuild.errors import ArgumentTypeError, DamagedFileError
from pypet_rebuild.merge import merge_lock
from pypet_rebuild.workdir import Workdir

from .test_reliability import check_merged, make_workdir, run_inline


def corrupt_chunk(path: Path, dataset: str, chunk: int = 0) -> None:
    """Overwrite bytes in the middle of one stored chunk of ``dataset``: the file still opens and
    its structure reads, only the data is wrong (what a bad disk sector or a stray write does)."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2 - 4)
        old = fh.read(8)
        fh.seek(info.byte_offset + info.size // 2 - 4)
        fh.write(bytes(b ^ 0x5A for b in old))


def unchecked(path: Path) -> list[str]:
    """Datasets of ``path`` that could carry a checksum but do not."""
    out: list[str] = []

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset) and obj.shape and obj.size and h5py.check_vlen_dtype(obj.dtype) is None \
                and obj.dtype.kind != "O" and not obj.fletcher32:
            out.append(name)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


@pytest.fixture
def merged(tmp_path: Path) -> Workdir:
    wd = make_workdir(tmp_path, 30, runs_per_task=10, executor="inline")
    run_inline(wd)
    assert merge_workdir(wd, wd.default_output).ok == 30
    return wd


def test_every_fixed_size_dataset_carries_a_checksum(merged: Workdir) -> None:
    for path in [merged.skeleton, *merged.shard_files(), merged.default_output]:
        assert unchecked(path) == [], path


def test_corrupt_final_shard_is_set_aside_named_and_recomputed(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, 30, runs_per_task=10, executor="inline")
    run_inline(wd)
    victim = wd.shard(1)
    corrupt_chunk(victim, "columns/results.z/values")
    out = CliRunner().invoke(cli_main, ["verify", str(wd.path)], catch_exceptions=False)
    assert out.exit_code == 1 and f"{victim}: damaged: /columns/results.z/values" in out.output, out.output

    out = CliRunner().invoke(cli_main, ["merge", str(wd.path)], catch_exceptions=False)
    assert out.exit_code == 1 and "Traceback" not in out.output, out.output
    assert f"damaged shard {victim.name}: damaged data (checksum): /columns/results.z/values" in out.output
    assert not victim.exists() and len(list(wd.shards.glob(f"{victim.name}.broken-*"))) == 1
    info = np.asarray(h5py.File(wd.default_output, "r")["trajectories/rel/run_info/status"][()])
    assert info.tolist() == [1] * 10 + [0] * 10 + [1] * 10  # never merged

    run_inline(wd)  # its task counts as not run: a plain resubmit computes it again
    assert merge_workdir(wd, wd.default_output).ok == 30
    check_merged(wd.default_output, wd)


@pytest.mark.parametrize("dataset", ["run_info/status", "results/runs/columns/z"],
                         ids=["seen by the cheap check", "in a chunk the merge rewrites"])
def test_corrupt_target_is_refused_untouched_and_rebuilt(tmp_path: Path, dataset: str) -> None:
    """A merge into a target checks it cheaply (the status column, masks, explored values) and
    reads back every chunk it rewrites: damage there is refused, the target left byte for byte
    (`verify` is the full check). A new shard makes the merge write."""
    merged = make_workdir(tmp_path, 30, runs_per_task=10, executor="inline")
    run_inline(merged)
    target = merged.default_output
    held = merged.shard(2).rename(tmp_path / merged.shard(2).name)
    assert merge_workdir(merged, target).ok == 20
    held.rename(merged.shard(2))
    corrupt_chunk(target, f"trajectories/rel/{dataset}")
    before = target.read_bytes()
    with pytest.raises(DamagedFileError, match=f"is damaged: /trajectories/rel/{dataset}.*; merge into a"):
        merge_workdir(merged, target)
    runner = CliRunner()
    out = runner.invoke(cli_main, ["merge", str(merged.path)], catch_exceptions=False)
    assert out.exit_code == 1, out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {target} is damaged: /trajectories/rel/{dataset}")
    assert lines[0].endswith("merge into a new file with -o, or `pypet-hpc merge --rebuild` from the shards")
    assert target.read_bytes() == before  # never written to, never copied forward
    assert not [p for p in target.parent.iterdir() if ".merging-" in p.name or p.name.endswith(".journal")]

    out = runner.invoke(cli_main, ["verify", str(target)], catch_exceptions=False)
    assert out.exit_code == 1 and "1 file checked, 1 damaged" in out.output, out.output

    out = runner.invoke(cli_main, ["merge", str(merged.path), "--rebuild"], catch_exceptions=False)
    assert out.exit_code == 0 and "30 ok" in out.output, out.output
    check_merged(target, merged)
    out = runner.invoke(cli_main, ["verify", str(merged.path)], catch_exceptions=False)
    assert out.exit_code == 0 and "5 files checked, 0 damaged" in out.output, out.output


def test_verify_of_a_missing_path_or_a_non_workdir_is_one_line_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    for path in (tmp_path / "nope", tmp_path):
        out = runner.invoke(cli_main, ["verify", str(path)], catch_exceptions=False)
        assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output


# ---------------------------------------------------------------------------------------------
# A merge onto a full disk


def half_merged(tmp_path: Path) -> tuple[Workdir, Path]:
    """A sweep of 40 runs with 100 KB per run, its first half merged into ``m.h5``, all run."""
    wd = make_workdir(tmp_path, 40, runs_per_task=10, executor="inline", big=12_500)
    run_inline(wd)
    aside = [wd.shard(2), wd.shard(3)]
    for p in aside:
        p.rename(p.with_suffix(".keep"))
    assert merge_workdir(wd, tmp_path / "m.h5").ok == 20
    for p in aside:
        p.with_suffix(".keep").rename(p)
    return wd, tmp_path / "m.h5"


def cli_merge(wd: Workdir, target: Path, fsize: int | None = None, factor: float | None = None
              ) -> subprocess.CompletedProcess[str]:
    """``pypet-hpc merge`` in a subprocess, its files limited to ``fsize`` bytes (RLIMIT_FSIZE, as
    a full disk or quota stops a writer); ``factor``: the space the merge reserves (0: none, so
    that the limit is hit inside HDF5's writes)."""
    code = ("import sys, pypet_rebuild.merge as m\n"
            + (f"m.MERGE_SPACE_FACTOR = {factor!r}\n" if factor is not None else "") +
            "from pypet_rebuild.cli import main\n"
            f"sys.argv = ['pypet-hpc', 'merge', {str(wd.path)!r}, '-o', {str(target)!r}]\nmain()")

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit)


def assert_clean_failure(proc: subprocess.CompletedProcess[str], target: Path, before: bytes | None) -> None:
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert proc.returncode == 1, proc.stdout + proc.stderr  # not 139 (a segfault), not a traceback
    assert len(lines) == 1 and "no space for the merge (it needs about" in lines[0], lines
    assert f"{target.name} is left as it was" in lines[0] and str(target.parent) in lines[0]
    if before is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == before
    assert not [p for p in target.parent.iterdir() if ".merging-" in p.name]


@pytest.mark.parametrize(("previous", "factor"), [(True, None), (False, None), (False, 0.0), (True, 0.0)],
                         ids=["onto a target", "new target", "new target, limit hit inside HDF5",
                              "onto a target, limit hit inside HDF5 (rolled back)"])
def test_merge_under_a_file_size_limit_fails_cleanly(tmp_path: Path, previous: bool, factor: float | None) -> None:
    wd, first = half_merged(tmp_path)
    target = first if previous else tmp_path / "new.h5"
    before = target.read_bytes() if previous else None
    proc = cli_merge(wd, target, fsize=(len(before) if before else 0) + 1_000_000, factor=factor)
    assert_clean_failure(proc, target, before)
    proc = cli_merge(wd, target)  # without the limit: it completes
    assert proc.returncode == 0, proc.stderr
    check_merged(target, wd)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.mark.parametrize("previous", [False, True], ids=["new target", "onto a target"])
def test_merge_onto_a_full_tmpfs_fails_cleanly(tmp_path: Path, previous: bool) -> None:
    wd, _ = half_merged(tmp_path)
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        target = disk / "out.h5"
        before = None
        if previous:  # a first merge of 20 runs fits (2 MB); the next 2 MB, written in place, do not
            (wd.shards / "hold").mkdir()
            for k in (2, 3):
                wd.shard(k).rename(wd.shards / "hold" / wd.shard(k).name)
            assert cli_merge(wd, target).returncode == 0
            for k in (2, 3):
                (wd.shards / "hold" / wd.shard(k).name).rename(wd.shard(k))
            before = target.read_bytes()
        assert_clean_failure(cli_merge(wd, target), target, before)
        if not previous:  # with no space reserved, the disk fills inside HDF5's writes
            assert_clean_failure(cli_merge(wd, target, factor=0.0), target, before)


# ---------------------------------------------------------------------------------------------
# Damaged or odd input files: one line naming the file, exit 2


def test_odd_sweep_files_and_an_empty_output_are_one_line_exit_2(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, 4, runs_per_task=2, executor="inline")
    run_inline(wd)
    base = (tmp_path / "relsweep.py").read_text()
    cases = {
        "listspace.py": (base.replace("space = {\"x\": list(range(4))}", "space = [1, 2]"),
                         "listspace.py: `space` must be a dict"),
        "exits.py": ("import sys\nsys.exit(3)\n", "exits.py called sys.exit(3) while it was imported"),
    }
    runner = CliRunner()
    for name, (text, needle) in cases.items():
        assert text != base
        (tmp_path / name).write_text(text)
        out = runner.invoke(cli_main, ["submit", str(tmp_path / name), "--executor", "inline", "--workdir",
                                       str(tmp_path / f"wd-{name}"), "--dry-run"], catch_exceptions=False)
        assert out.exit_code == 2 and needle in out.output, out.output
        assert len(out.output.strip().splitlines()) == 1, out.output
    out = runner.invoke(cli_main, ["merge", str(wd.path), "-o", ""], catch_exceptions=False)
    assert out.exit_code == 2 and "-o: the output file name is empty" in out.output, out.output
    assert not wd.default_output.exists()
    manifest = wd.manifest_path.read_text()
    for text, needle in (('{"a": ', "not JSON"), ("{}", "the manifest is damaged (no ")):
        wd.manifest_path.write_text(text)
        for cmd in ("status", "merge", "resubmit"):
            out = runner.invoke(cli_main, [cmd, str(wd.path)], catch_exceptions=False)
            assert out.exit_code == 2 and f"{wd.manifest_path}: " in out.output and needle in out.output, out.output
            assert len(out.output.strip().splitlines()) == 1, out.output
    wd.manifest_path.write_text(manifest)


# ---------------------------------------------------------------------------------------------
# Pickled parameters on every executor


class Shape:
    """A value the codec cannot store as it is: it travels pickled."""

    def __init__(self, sides: int) -> None:
        self.sides = sides


def uses_pickled(traj: Trajectory) -> None:
    shape = traj.parameters["shape"].value
    sides = shape.value.sides if isinstance(shape, Pickled) else shape.sides
    traj.add_result("z", sides * traj.x)


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_a_pickled_parameter_works_on_every_executor(tmp_path: Path, executor: str) -> None:
    traj = Trajectory("pick")
    traj.add_parameter("x", 0)
    traj.add_parameter("shape", Pickled(Shape(3)))
    env = Environment(traj, executor=executor, workdir=tmp_path / "wd", runs_per_task=2)
    handle = env.submit(uses_pickled, space={"x": [1, 2, 3, 4]})
    handle.wait(timeout=120)
    assert Workdir(tmp_path / "wd").manifest().allow_pickle
    report = handle.merge(tmp_path / "m.h5")
    assert report.ok == 4, report.summary()
    assert load_trajectory(tmp_path / "m.h5", allow_pickle=True).get_from_runs("z").tolist() == [3, 6, 9, 12]


def test_a_sweep_without_pickled_values_never_unpickles(tmp_path: Path) -> None:
    wd = make_workdir(tmp_path, 2, runs_per_task=1, executor="inline")
    assert not wd.manifest().allow_pickle


# ---------------------------------------------------------------------------------------------
# The merge lock


def _hold_lock(target: str, ready: Any, release: Any) -> None:
    with merge_lock(Path(target)):
        ready.set()
        release.wait(60)


def test_a_merge_waiting_for_a_held_lock_names_the_holder_and_gives_up(merged: Workdir) -> None:
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(merged.default_output), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        proc = subprocess.run([sys.executable, "-m", "pypet_rebuild.cli", "merge", str(merged.path),
                               "--lock-timeout", "3"], capture_output=True, text=True, timeout=60)
    finally:
        release.set()
        holder.join(30)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "Traceback" not in text, text
    assert f"waiting for another merge (pid {holder.pid} on host {socket.gethostname()})" in text
    assert f"another merge (pid {holder.pid} on host {socket.gethostname()}) has held" in text
    assert "raise --lock-timeout" in text
    # the holder is gone: its lock went with it, the next merge goes through at once
    out = CliRunner().invoke(cli_main, ["merge", str(merged.path), "--lock-timeout", "0"], catch_exceptions=False)
    assert out.exit_code == 0, out.output


# ---------------------------------------------------------------------------------------------
# The Python API checks argument types at its boundary


def _traj() -> Trajectory:
    traj = Trajectory("t")
    traj.add_parameter("x", 0)
    return traj


API_TYPE_CASES: dict[str, tuple[Any, str]] = {
    "Environment(None)": (lambda: Environment(None), "Environment(trajectory=...) must be a Trajectory"),
    "Environment('t')": (lambda: Environment("t"), "Environment(trajectory=...) must be a Trajectory"),
    "workdir=123": (lambda: Environment(_traj(), workdir=123), "Environment(workdir=...) must be a path"),
    "executor=None": (lambda: Environment(_traj(), executor=None), "Environment(executor=...) must be"),
    "storage='x.h5'": (lambda: Environment(_traj(), storage="x.h5"), "Environment(storage=...) must be"),
    "runs_per_task='2'": (lambda: Environment(_traj(), runs_per_task="2"), "Environment(runs_per_task=...)"),
    "HDF5StorageService(1)": (lambda: HDF5StorageService(1), "HDF5StorageService(file_path=...) must be a path"),
    "load_trajectory(123)": (lambda: load_trajectory(123), "load_trajectory(path) must be a path"),
    "cartesian_product([1, 2])": (lambda: cartesian_product([1, 2]), "the exploration space must be a dict"),
    "run_exploration(space=[...])": (lambda: Environment(_traj()).run_exploration(uses_pickled, space=[1, 2]),
                                     "the exploration space must be a dict"),
}


@pytest.mark.parametrize("case", list(API_TYPE_CASES))
def test_api_argument_types_are_checked_with_one_line(case: str) -> None:
    call, needle = API_TYPE_CASES[case]
    with pytest.raises(ArgumentTypeError) as info:
        call()
    assert isinstance(info.value, TypeError) and isinstance(info.value, PypetError)
    assert needle in str(info.value) and "\n" not in str(info.value)
