"""The ``pypet-hpc`` command line: a thin shell over the Python API.

Exit codes: 0 success, 1 failure (runs failed or missing, the scheduler refused), 2 usage error
(bad input: one line naming it, no traceback).
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, NoReturn

import click
import numpy as np

from .clean import clean_workdir
from .codec import value_kind
from .environment import SweepHandle, executor_of, expand_workdir, merge_workdir, verify_path
from .environment import follow as follow_workdir
from .environment import resubmit as resubmit_workdir
from .errors import (
    DamagedFileError,
    LockBusyError,
    NoSpaceError,
    PypetError,
    SubmissionError,
    SweepStopped,
)
from .executors import make_executor
from .exploration import cartesian_product, plural
from .failures import FailureRule, group_failures
from .formats.records import JobRecord, Provenance
from .formats.trajfile import summarize
from .live import summarize_live
from .merge import LOCK_TIMEOUT
from .model import Trajectory
from .status import SweepStatus, failed_runs, sweep_status
from .taskstate import TaskState
from .workdir import Workdir, check_signature, import_sweep


class UserError(click.ClickException):
    """Bad input: one line, exit code 2."""

    exit_code = 2


class RunFailure(click.ClickException):
    """Runs failed or the scheduler refused: one line, exit code 1."""

    exit_code = 1


def example(command: str) -> str:
    """A help epilog with one example command, kept on one line (click would rewrap it);
    tests/test_cli.py runs every one."""
    return f"\b\nExample: {command}"


def fail(message: str, code: int = 2) -> NoReturn:
    raise (UserError if code == 2 else RunFailure)(message)


def _file_name(value: str | None) -> str | None:
    """An -o value: a file name, never an empty one (which would quietly mean the default)."""
    if value is not None and not value.strip():
        fail("-o: the output file name is empty; give a file name")
    return value


def _guard(fn: Any) -> Any:
    """Turn the package's errors into one clear line and the right exit code."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SubmissionError, SweepStopped, DamagedFileError, NoSpaceError, LockBusyError) as exc:
            fail(str(exc), 1)
        except PypetError as exc:
            fail(str(exc), 2)

    return wrapper


@click.group(epilog=example("pypet-hpc submit examples/first_steps.py --executor local --wait"))
@click.version_option(package_name="pypet-hpc")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (INFO level) to stderr.")
def main(verbose: bool) -> None:
    """Run parameter sweeps as SLURM job arrays or local workers; merge their HDF5 shards."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


# ---------------------------------------------------------------------------------------------
# submit


def _parse_token(name: str, default: Any, token: str) -> Any:
    kind = value_kind(default)
    try:
        if kind == "bool":
            low = token.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(token)
            return low in ("true", "1", "yes")
        if kind == "int":
            return int(token)
        if kind == "float":
            return float(token)
        if kind == "complex":
            return complex(token)
        if kind == "str":
            return token
    except ValueError:
        article = "an" if kind[0] in "aeiou" else "a"
        fail(f"-p {name}: {token!r} is not {article} {kind} (the default of {name} is {default!r})")
    fail(f"-p {name}: parameters of kind {kind} cannot be explored from the command line")


def _cli_space(traj: Trajectory, items: tuple[str, ...]) -> dict[str, list[Any]]:
    space: dict[str, list[Any]] = {}
    params = traj.state.leaves["parameters"]
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip()
        if not sep or not name or not values:
            fail(f"-p {item!r}: write -p name=value1,value2,...")
        try:
            name = traj.parameter_name(name)  # a full name or a unique short one, as traj.zeta
        except PypetError as exc:
            fail(f"-p {item!r}: {str(exc).replace('cannot explore unknown', 'unknown')}")
        if name in space:
            fail(f"-p {name} is given twice")
        space[name] = [_parse_token(name, params[name].value, t) for t in values.split(",")]
    return space


def _full_name(traj: Trajectory, name: str) -> str:
    """A space key under its full name, so that -p overrides it whichever name either uses
    (an unknown one is left for explore to name)."""
    try:
        return traj.parameter_name(name)
    except PypetError:
        return name


def load_sweep(sweep: str, function: str, params: tuple[str, ...]) -> tuple[Trajectory, str, Path | None]:
    """Import a sweep file or module: its trajectory, explored space and simulation reference."""
    module = import_sweep(sweep)
    fn = getattr(module, function, None)
    if fn is None:
        fail(f"{sweep} has no function {function!r} (the simulation; choose another with --function)")
    check_signature(fn, f"{sweep}:{function}")
    maker = getattr(module, "make_trajectory", None)
    if callable(maker):
        try:
            traj = maker()
        except PypetError:
            raise
        except Exception as exc:  # the user's code: one line naming it, as for a failed import
            fail(f"{sweep}: make_trajectory() failed: {type(exc).__name__}: {exc}")
    else:
        traj = getattr(module, "traj", None) or getattr(module, "trajectory", None)
    if not isinstance(traj, Trajectory):
        fail(f"{sweep} must define make_trajectory() returning a Trajectory (or a module-level `traj`)")
    file_space = getattr(module, "space", None) or {}
    if not isinstance(file_space, dict):
        fail(f"{sweep}: `space` must be a dict of parameter name -> list of values, "
             f"not a {type(file_space).__name__}")
    space = {_full_name(traj, k): v for k, v in file_space.items()}
    space.update(_cli_space(traj, params))
    if space:
        if traj.state.explored and getattr(module, "space", None) is None:
            fail(f"{sweep} already explores {', '.join(traj.state.explored)}; -p only works with a `space` in the file")
        traj.explore(cartesian_product(space, getattr(module, "combined", None)))
    path = Path(sweep) if sweep.endswith(".py") else None
    ref = f"{Path(sweep).resolve()}:{function}" if path else f"{sweep}:{function}"
    return traj, ref, path


_RESOURCE_OPTIONS = [
    click.option("--time", "time_limit", help="Time limit per task: minutes or HH:MM:SS (local and slurm)."),
    click.option("--partition", help="SLURM partition."),
    click.option("--mem", help="SLURM memory per task, e.g. 4G."),
    click.option("--cpus-per-task", type=int, help="SLURM CPUs per task."),
    click.option("--account", help="SLURM account."),
    click.option("--qos", help="SLURM quality of service."),
    click.option("--constraint", help="SLURM node constraint."),
    click.option("--gpus", type=int, help="SLURM GPUs per task."),
    click.option("--job-name", help="SLURM job name."),
    click.option("--sbatch", "sbatch", multiple=True, metavar="KEY=VALUE",
                 help="Extra sbatch option, repeatable (e.g. --sbatch mail-type=END)."),
    click.option("--setup", multiple=True, help="Shell line run before each task (module load ...), repeatable."),
]


def resource_options(fn: Any) -> Any:
    for opt in reversed(_RESOURCE_OPTIONS):
        fn = opt(fn)
    return fn


def executor_options(max_parallel: int | None, **given: Any) -> dict[str, Any]:
    """The options the user actually gave, in the executors' names."""
    opts = {k: v for k, v in given.items() if v not in (None, ())}
    if "sbatch" in opts:
        extra = {}
        for item in opts.pop("sbatch"):
            key, sep, value = item.partition("=")
            if not key.strip():
                fail(f"--sbatch {item!r}: write --sbatch key=value")
            extra[key.strip().lstrip("-")] = value if sep else True
        opts["sbatch_extra"] = extra
    if "setup" in opts:
        opts["setup"] = list(opts["setup"])
    if max_parallel is not None:
        if max_parallel < 1:
            fail(f"--max-parallel must be at least 1, got {max_parallel}")
        opts["max_parallel"] = max_parallel
    return opts


@main.command(epilog=example("pypet-hpc submit examples/first_steps.py --executor local -p zeta=0.1,0.2 --wait"))
@click.argument("sweep")
@click.option("--executor", type=click.Choice(["inline", "local", "slurm"]), default="local", show_default=True,
              help="Where tasks run: this process, worker processes here, or SLURM job arrays.")
@click.option("--workdir", type=click.Path(file_okay=False), help="Sweep directory [default: runs/<trajectory name>].")
@click.option("--function", default="simulate", show_default=True, help="Name of the simulation function in SWEEP.")
@click.option("--runs-per-task", type=int, help="Runs per task [default: inline one task; local 4 tasks per worker (--max-parallel); "
                   "slurm up to 100 runs per task].")
@click.option("--tasks", "n_tasks", type=int, help="Number of tasks (instead of --runs-per-task).")
@click.option("--max-parallel", type=int, help="Tasks running at once [default: CPUs here; SLURM array throttle].")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=V1,V2,...",
              help="Explore a parameter from the command line (cartesian product with the file's space).")
@click.option("--dry-run", is_flag=True, help="Print the plan (and SLURM batch script) and submit nothing.")
@click.option("--wait", is_flag=True, help="Wait with a progress bar, then merge.")
@click.option("--follow", is_flag=True, help="Wait, merge and run SWEEP's postprocess(traj, results) waves in a "
              "detached process that outlives this shell (log: WORKDIR/logs/follow.log).")
@click.option("-o", "--output", type=click.Path(), callback=lambda c, p, v: _file_name(v), help="Merge target for --wait [default: WORKDIR/merged.h5].")
@click.option("--max-failures", default="auto", show_default=True, metavar="auto|N|FRACTION|off",
              help="Stop the sweep early: auto when the first 20 finished runs all fail with one error; N or a "
                   "fraction of the runs (e.g. 0.1) also when more runs fail; off never.")
@click.option("--expand", is_flag=True,
              help="WORKDIR holds an earlier version of this sweep: add the points it lacks and run only those.")
@resource_options
@_guard
def submit(sweep: str, executor: str, workdir: str | None, function: str, runs_per_task: int | None,
           n_tasks: int | None, max_parallel: int | None, params: tuple[str, ...], dry_run: bool, wait: bool,
           output: str | None, max_failures: str, expand: bool, follow: bool, **resources: Any) -> None:
    """Submit the sweep in SWEEP (a .py file or module).

    SWEEP defines `simulate(traj)` and `make_trajectory()`, which returns the Trajectory with its
    parameters; an optional dict `space` is explored as a cartesian product. The sweep directory
    gets a manifest, a snapshot of SWEEP, provenance, shards/ and logs/.
    """
    for flag, value in (("--runs-per-task", runs_per_task), ("--tasks", n_tasks)):
        if value is not None and value < 1:
            fail(f"{flag} must be at least 1, got {value}")
    if runs_per_task is not None and n_tasks is not None:
        fail("give --runs-per-task or --tasks, not both")
    if follow and (wait or executor == "inline"):
        fail("--follow runs in the background: not with --wait, nor with --executor inline")
    rule = FailureRule.parse(max_failures)
    traj, ref, sweep_path = load_sweep(sweep, function, params)
    if expand:
        _expand(Workdir(workdir or Path("runs") / traj.name), traj, wait, output)
        return
    ex = make_executor(executor, **executor_options(max_parallel, **resources))
    ex.preflight()  # what only the cluster knows (e.g. an unknown partition), before anything is written
    plan = ex.plan(len(traj), runs_per_task, n_tasks)
    wd = Workdir(workdir or Path("runs") / traj.name)
    if dry_run:
        click.echo(f"sweep {traj.name!r}: {plan.describe()}")
        click.echo(f"explored: {', '.join(f'{k} ({len(set(map(repr, v)))} values)' for k, v in traj.state.explored.items()) or 'nothing (one run)'}")
        settings = ", ".join(f"{k}={v}" for k, v in ex.options().items() if v not in (None, [], {}))
        click.echo(f"executor: {executor}" + (f" ({settings})" if settings else ""))
        click.echo(f"max failures: {rule}")
        click.echo(f"workdir: {wd.path}")
        for i, tasks in enumerate(plan.arrays()):
            script = ex.batch_script(wd, tasks)
            if script is not None:
                click.echo(f"--- batch script of array {i} ({len(tasks)} tasks) ---")
                click.echo(script)
        click.echo("dry run: nothing submitted")
        return
    wd.create(traj, plan, ref, {"name": ex.name, "options": ex.options()}, sweep_file=sweep_path,
              max_failures=str(rule))
    try:
        ids = ex.submit(wd, range(plan.n_tasks))
    except SweepStopped as exc:  # inline: the runs happened in this process
        fail(f"{exc}; see: pypet-hpc status {wd.path} --failed", 1)
    click.echo(f"submitted {plan.describe()} to {executor} (jobs {', '.join(ids)})")
    click.echo(f"workdir: {wd.path}")
    if follow:
        _follow_detached(wd, output)
    if not wait:
        click.echo(f"next: pypet-hpc status {wd.path}")
        return
    _wait_and_merge(SweepHandle(wd), output)


def _follow_detached(wd: Workdir, output: str | None) -> None:
    """Start ``pypet-hpc follow`` in its own session, so that it outlives this shell."""
    log_path = wd.logs / "follow.log"
    argv = [sys.executable, "-c", "from pypet_rebuild.cli import main; main()", "-v", "follow", str(wd.path)]
    if output:
        argv += ["-o", str(Path(output).absolute())]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    click.echo(f"following in the background (pid {proc.pid}): waves, merges and post-processing; "
               f"log: {log_path}")


@main.command(epilog=example("pypet-hpc follow runs/mysweep -o results.h5"))
@click.argument("workdir", type=click.Path())
@click.option("-o", "--output", type=click.Path(), callback=lambda c, p, v: _file_name(v),
              help="Trajectory file to merge into [default: WORKDIR/merged.h5].")
@_guard
def follow(workdir: str, output: str | None) -> None:
    """Wait for a sweep, merge it and, while its sweep file's postprocess(traj, results) returns new
    points (a dict of parameter -> values), run them as new waves in the same workdir."""
    wd = _workdir(workdir)
    results = follow_workdir(wd.path, output)
    click.echo(f"done: {plural(len(results), 'finished run')} merged into {output or wd.default_output}")


def _expand(wd: Workdir, traj: Trajectory, wait: bool, output: str | None) -> None:
    """Grow the sweep in ``wd`` by the sweep file's points; run only the new ones."""
    if not wd.exists():
        fail(f"--expand: {wd.path} holds no sweep yet; submit without --expand first")
    added, tasks = expand_workdir(wd, traj, traj.explored)
    click.echo(f"added {plural(added, 'run')} to {wd.path}; submitted tasks {', '.join(map(str, tasks)) or 'none'}")
    if wait:
        _wait_and_merge(SweepHandle(wd), output)


def _wait_and_merge(handle: SweepHandle, output: str | None) -> None:
    path = handle.workdir.path
    try:
        st = handle.wait(progress=True)
    except SweepStopped as exc:
        fail(f"{exc}; see: pypet-hpc status {path} --failed", 1)
    except KeyboardInterrupt:
        click.echo(f"\nstopped waiting; the tasks go on running. Later: pypet-hpc status {path}, "
                   f"pypet-hpc merge {path}; to stop them: pypet-hpc cancel {path}", err=True)
        sys.exit(130)
    report = handle.merge(output, progress=True)
    click.echo(report.summary())
    if st.counts["failed"]:
        click.echo(f"{st.counts['failed']} runs failed; see: pypet-hpc status {path} --failed")
    if report.missing:
        _explain_missing(handle, report.missing)
    if report.missing or report.failed:
        sys.exit(1)


def _explain_missing(handle: SweepHandle, missing: int) -> None:
    """Why runs are missing after a merge, and what to do about it."""
    st = handle.status()
    # not complete, and not because runs failed in a finished task or because it is under way
    stopped = [t for t in st.tasks if t.state is not TaskState.COMPLETED and not t.state.active and not t.complete]
    timed_out = [t for t in stopped if t.state is TaskState.TIMEOUT]
    if st.counts["unmerged"]:
        click.echo(st.unmerged_note())
    if timed_out:
        limit = handle.manifest.executor.get("options", {}).get("time_limit")
        click.echo(f"{len(timed_out)} tasks hit the time limit ({limit}); resubmit with a longer --time, "
                   f"e.g. pypet-hpc resubmit {handle.workdir.path} --time 2:00:00")
    elif missing:
        lost = any(t.state is TaskState.UNKNOWN for t in stopped)  # wait() gave up on them: the scheduler lost them
        click.echo(f"next: pypet-hpc resubmit {handle.workdir.path}{' --force' if lost else ''}")


# ---------------------------------------------------------------------------------------------
# status, merge, resubmit, cancel


def _workdir(path: str) -> Workdir:
    wd = Workdir(path)
    wd.manifest()  # raises a clear error for a folder that is not a workdir
    return wd


@main.command(epilog=example("pypet-hpc status runs/mysweep --failed"))
@click.argument("workdir", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.option("--failed", is_flag=True,
              help="Group the failed runs by error: count, example runs, one traceback per group.")
@click.option("--run", "run", type=int, metavar="I", help="Print the traceback of failed run I.")
@click.option("--all", "show_all", is_flag=True, help="Print every failed run with its traceback.")
@_guard
def status(workdir: str, as_json: bool, failed: bool, run: int | None, show_all: bool) -> None:
    """Show done / failed / running / pending runs and a per-task table. Never blocks."""
    wd = _workdir(workdir)
    st = sweep_status(wd)
    if as_json:
        data = st.to_dict()
        if failed or show_all:
            data["failed_runs"] = failed_runs(wd)
        click.echo(json.dumps(data, indent=1))
        return
    click.echo(f"{wd.path}: {plural(st.n_runs, 'run')} in {plural(len(st.tasks), 'task')}")
    click.echo(f"  {st.counts_line()}")
    if st.scheduler_note:
        click.echo(f"  note: {st.scheduler_note}")
    stop = wd.stopped()
    if stop is not None:
        click.echo(f"  {stop.reason}" + (f" (task {stop.task})" if stop.task is not None else ""))
    by_state: dict[TaskState, int] = {}
    for t in st.tasks:
        by_state[t.state] = by_state.get(t.state, 0) + 1
    click.echo("  tasks: " + ", ".join(f"{k} {v}" for k, v in sorted(by_state.items())))
    for job, states in _per_job(wd, st).items():
        counts = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        click.echo(f"  job {job}: {counts}")
    for line in _killed_by_scheduler(wd, st):
        click.echo(f"  {line}")
    click.echo(st.table())
    if failed or run is not None or show_all:
        _print_failures(wd, run, show_all)


def _print_failures(wd: Workdir, run: int | None, show_all: bool) -> None:
    """The failed runs grouped by error (count, example runs, one traceback each); one run's
    traceback with ``run``; every failed run's with ``show_all``."""
    runs = failed_runs(wd)
    explored = wd.load_skeleton().explored if runs else {}

    def header(r: dict[str, Any]) -> str:
        point = ", ".join(f"{k}={_plain(v[r['run']])}" for k, v in explored.items())
        return f"run {r['run']} ({point}), task {r['task']}: {r['type']}: {r['message']}"

    if run is not None:
        hits = [r for r in runs if r["run"] == run]
        if not hits:
            fail(f"--run {run}: that run has not failed (failed runs: {_tasks([r['run'] for r in runs]) or 'none'})")
        click.echo(f"\n--- {header(hits[0])}")
        click.echo(hits[0]["traceback"].rstrip())
        return
    if not runs:
        click.echo("\nno failed runs")
        return
    if show_all:
        for r in runs:
            click.echo(f"\n--- {header(r)}")
            click.echo(r["traceback"].rstrip())
        return
    groups = group_failures(runs)
    click.echo(f"\n{plural(len(runs), 'failed run')} in {plural(len(groups), 'group')} "
               "(by exception type and message, numbers masked):")
    for i, g in enumerate(groups, start=1):
        click.echo(f"\n[{i}] {g.summary()}")
        click.echo(f"    e.g. {header(g.example)}")
        click.echo(g.example["traceback"].rstrip())
    click.echo(f"\none run: pypet-hpc status {wd.path} --run I; every failed run: pypet-hpc status {wd.path} --all")


def _plain(value: Any) -> str:
    """A value as a user writes it: 0.5, not np.float64(0.5)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _killed_by_scheduler(wd: Workdir, st: SweepStatus) -> list[str]:
    """In words, the tasks SLURM killed for their memory limit or lost with their node, and
    what to do: the limit is the --mem their latest submission asked for (jobs.jsonl)."""
    latest: dict[int, JobRecord] = {}
    for entry in wd.jobs():
        for task in entry.tasks:
            latest[task] = entry
    lines = []
    oom = [t.task for t in st.tasks if t.state is TaskState.OUT_OF_MEMORY]
    if oom:
        default = wd.manifest().executor.get("options", {}).get("mem")
        limits = sorted({str(latest[t].mem if t in latest and latest[t].mem else default) for t in oom})
        said = ", ".join("the cluster's default" if m == "None" else m for m in limits)
        more = _twice(limits[-1]) if limits[-1] != "None" else "4G"
        lines.append(f"{plural(len(oom), 'task')} {'was' if len(oom) == 1 else 'were'} killed by SLURM for "
                     f"using more memory than the limit (OUT_OF_MEMORY, --mem {said}): task {_tasks(oom)}; "
                     "resubmit with more memory, e.g. "
                     f"pypet-hpc resubmit {wd.path} --mem {more}")
    lost = [t.task for t in st.tasks if t.state is TaskState.NODE_FAIL]
    if lost:
        lines.append(f"{plural(len(lost), 'task')} died with the node they ran on (NODE_FAIL): task {_tasks(lost)}; "
                     f"pypet-hpc resubmit {wd.path} runs them again on the nodes that are up")
    return lines


def _tasks(tasks: list[int]) -> str:
    return ", ".join(map(str, tasks[:20])) + (f" ... ({len(tasks)} in all)" if len(tasks) > 20 else "")


def _twice(mem: str) -> str:
    """A --mem twice as large: 250M -> 500M, 4G -> 8G, 4096 -> 8192."""
    digits = "".join(c for c in mem if c.isdigit())
    return f"{2 * int(digits)}{mem[len(digits):]}" if digits and mem.startswith(digits) else mem


def _per_job(wd: Workdir, st: SweepStatus) -> dict[str, dict[TaskState, int]]:
    """State counts per submitted job (a SLURM array, a local submission) of the tasks whose
    latest submission it is."""
    latest: dict[int, str] = {}
    for entry in wd.jobs():
        for task in entry.tasks:
            latest[task] = ",".join(entry.ids) or "?"
    out: dict[str, dict[TaskState, int]] = {}
    for t in st.tasks:
        if t.task in latest:
            counts = out.setdefault(latest[t.task], {})
            counts[t.state] = counts.get(t.state, 0) + 1
    return out


@main.command(epilog=example("pypet-hpc merge runs/mysweep -o results.h5"))
@click.argument("workdir", type=click.Path())
@click.option("-o", "--output", type=click.Path(), callback=lambda c, p, v: _file_name(v), help="Trajectory file to write [default: WORKDIR/merged.h5].")
@click.option("--require-complete", is_flag=True, help="Fail (exit 1) unless every run is complete.")
@click.option("--rebuild", is_flag=True, help="Ignore the target's content and merge every shard anew "
              "(the way out of a damaged target).")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=LOCK_TIMEOUT, show_default=True,
              help="Seconds to wait for another merge of the same target.")
@_guard
def merge(workdir: str, output: str | None, require_complete: bool, rebuild: bool, lock_timeout: float) -> None:
    """Merge the complete shards of a sweep into one trajectory file (incremental, atomic)."""
    wd = _workdir(workdir)
    out = Path(output) if output else wd.default_output
    if out.is_dir():
        fail(f"-o {out}: is a directory; give a file name")
    try:
        report = merge_workdir(wd, out, require_complete, progress=True, rebuild=rebuild,
                               lock_timeout=lock_timeout)
    except PypetError as exc:
        if require_complete and "not complete" in str(exc):
            fail(str(exc), 1)
        raise
    click.echo(report.summary())
    for problem in report.damaged_shards:
        click.echo(f"damaged shard {problem}; pypet-hpc resubmit {wd.path} computes its task again", err=True)
    if report.missing:
        st = sweep_status(wd)
        if st.counts["unmerged"]:
            click.echo(f"not in the file: {st.unmerged_note()}")
        click.echo(f"not complete yet: see pypet-hpc status {wd.path}")
    if report.damaged_shards:
        sys.exit(1)


@main.command(epilog=example("pypet-hpc resubmit runs/mysweep --time 2:00:00"))
@click.argument("workdir", type=click.Path())
@click.option("--max-parallel", type=int, help="Tasks running at once.")
@click.option("--wait", is_flag=True, help="Wait with a progress bar, then merge.")
@click.option("-o", "--output", type=click.Path(), callback=lambda c, p, v: _file_name(v), help="Merge target for --wait.")
@click.option("--force", is_flag=True, help="Also resubmit tasks in an UNKNOWN state (their jobs are gone).")
@resource_options
@_guard
def resubmit(workdir: str, max_parallel: int | None, wait: bool, output: str | None, force: bool,
             **resources: Any) -> None:
    """Submit again only the tasks with runs that are missing or failed (never one that may still run)."""
    wd = _workdir(workdir)
    todo = resubmit_workdir(wd, force, **executor_options(max_parallel, **resources))
    if todo:
        click.echo(f"resubmitted {len(todo)} tasks: {', '.join(map(str, todo[:20]))}{' ...' if len(todo) > 20 else ''}")
    elif not (todo.alive or todo.unknown):
        click.echo("nothing to resubmit: every task is complete")
    for skipped, why in ((todo.alive, "still queued or running: not resubmitted"),
                         (todo.unknown, "in an unknown state (the scheduler does not know them): not resubmitted; "
                                        "pass --force if they are gone")):
        if skipped:
            click.echo(f"{len(skipped)} task{'s are' if len(skipped) != 1 else ' is'} {why}")
    if wait:
        _wait_and_merge(SweepHandle(wd), output)


@main.command(epilog=example("pypet-hpc verify runs/mysweep"))
@click.argument("path", type=click.Path())
@_guard
def verify(path: str) -> None:
    """Read back every dataset of a trajectory file, or of a sweep directory's skeleton, shards
    and merged file, checking every checksum; name what is damaged (exit 1)."""
    checked, damaged = verify_path(Path(path))
    for name, problem in damaged:
        click.echo(f"{name}: {problem}")
    click.echo(f"{checked} file{'' if checked == 1 else 's'} checked, {len(damaged)} damaged")
    if damaged:
        sys.exit(1)


@main.command(epilog=example("pypet-hpc clean runs/mysweep"))
@click.argument("workdir", type=click.Path())
@click.option("-o", "--output", type=click.Path(), callback=lambda c, p, v: _file_name(v),
              help="The merged file that must hold the runs [default: WORKDIR/merged.h5].")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=LOCK_TIMEOUT, show_default=True,
              help="Seconds to wait for a merge of the same file.")
@_guard
def clean(workdir: str, output: str | None, lock_timeout: float) -> None:
    """Remove the shards whose runs are in the verified merged file (every checksum checked);
    keep manifest, logs and provenance, so status and show still work. Removes nothing, and says
    why in one line, while any shard holds runs the merged file lacks."""
    wd = _workdir(workdir)
    report = clean_workdir(wd, Path(output) if output else None, lock_timeout)
    click.echo(f"removed {plural(len(report.removed), 'shard')} ({report.freed_bytes / 1e6:.1f} MB); "
               f"their runs are in {report.target}")


@main.command(epilog=example("pypet-hpc cancel runs/mysweep"))
@click.argument("workdir", type=click.Path())
@_guard
def cancel(workdir: str) -> None:
    """Cancel the sweep's queued and running tasks (finished shards are kept)."""
    wd = _workdir(workdir)
    n = executor_of(wd).cancel(wd)
    click.echo(f"cancelled {n} task(s); pypet-hpc resubmit {wd.path} runs what is left")


@main.command(epilog=example("pypet-hpc logs runs/mysweep --run 17"))
@click.argument("workdir", type=click.Path())
@click.option("--task", type=int, help="Print this task's log.")
@click.option("--run", "run", type=int, help="Print this run's traceback (if it failed) and its task's log.")
@_guard
def logs(workdir: str, task: int | None, run: int | None) -> None:
    """Print a task's log or a run's traceback."""
    wd = _workdir(workdir)
    plan = wd.manifest().plan
    if (task is None) == (run is None):
        fail("give --task K or --run I")
    if run is not None:
        if not 0 <= run < plan.n_runs:
            fail(f"--run {run} is out of range: the sweep has {plan.n_runs} runs")
        hits = [r for r in failed_runs(wd) if r["run"] == run]
        if hits:
            click.echo(f"run {run} failed: {hits[0]['type']}: {hits[0]['message']}")
            click.echo(hits[0]["traceback"].rstrip())
        task = plan.task_of(run)
    assert task is not None
    if not 0 <= task < plan.n_tasks:
        fail(f"--task {task} is out of range: the sweep has {plan.n_tasks} tasks")
    path = wd.task_log(task)
    if not path.exists():
        click.echo(f"task {task} has no log yet ({path})")
        return
    click.echo(f"--- {path}")
    click.echo(path.read_text(errors="replace").rstrip())


# ---------------------------------------------------------------------------------------------
# show


@main.command(epilog=example("pypet-hpc show runs/mysweep/merged.h5"))
@click.argument("file", type=click.Path())
@click.option("--name", help="Trajectory name, when the file holds several.")
@_guard
def show(file: str, name: str | None) -> None:
    """Show a trajectory file: tree, run table summary, result columns, provenance. Given a
    sweep directory, show its runs as they are now, read from the shards (no merge needed)."""
    width = shutil.get_terminal_size((100, 24)).columns

    def out(line: str) -> None:  # long lines wrap to the terminal, their rest indented
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        click.echo(textwrap.fill(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                 break_long_words=False) if len(line) > width else line)

    live = Path(file).is_dir()
    info = summarize_live(_workdir(file).path) if live else summarize(file, name)
    out(f"trajectory {info.name!r} ({info.n_runs} runs), format {info.format_version}, "
               f"written by pypet-hpc {info.library_version}")
    if info.comment:
        out(f"  comment: {info.comment}")
    out("runs: " + ", ".join(f"{k} {v}" for k, v in info.counts.items()))
    dur = info.durations
    if len(dur):
        out(f"  run time: median {np.median(dur) * 1e3:.3g} ms, max {dur.max() * 1e3:.3g} ms, "
                   f"total {dur.sum():.3g} s")
        for col, seen in info.where.items():
            out(f"  {col}s ({len(seen)}): {', '.join(seen[:8])}{' ...' if len(seen) > 8 else ''}")
    for branch, leaves in info.leaves.items():
        if leaves:
            out(f"{branch}:")
            for leaf in leaves:
                size = f" {leaf.shape}" if leaf.shape else ""
                out(f"  {leaf.name}: {leaf.kind}{size}{'  [explored]' if leaf.explored else ''}")
    for branch, entries in info.run_data.items():
        out(f"{branch} per run:")
        columns = [e for e in entries if e.column is not None]
        per_run = [e for e in entries if e.column is None]
        for e in columns:
            assert e.column is not None
            kind, dtype, shape = e.column
            out(f"  {branch}.runs.{e.name}: column {kind} {dtype} shape {shape} in {e.runs} runs")
        for e in per_run[:20]:
            out(f"  {branch}.runs.{e.name}: stored per run, in {e.runs} runs")
        if len(per_run) > 20:
            out(f"  ... and {len(per_run) - 20} more per-run names")
    if info.provenance:
        p = Provenance.from_json(info.provenance, file)
        git = p.git or {}
        out("provenance:")
        out(f"  git: {git.get('commit', 'not a git checkout')}{' (dirty)' if git.get('dirty') else ''}")
        out(f"  submitted by {p.user} on {p.host}: {shlex.join(p.argv)}")
        out("  versions: " + ", ".join(f"{k} {v}" for k, v in p.versions.items()))
    cleaned = _workdir(file).cleaned() if live else None
    if cleaned is not None and not _workdir(file).shard_files():
        out(f"shards removed by clean: read from the merged file {cleaned.target}")
    elif live:
        out(f"live view of {plural(info.merged_shards, 'shard')} (finished tasks, and the committed runs of "
            "running ones); merge for the file")
    else:
        out(f"merged shards: {info.merged_shards}")


@main.command(epilog=example("pypet-hpc combine week1.h5 week2.h5 week3.h5 -o all.h5 --remove-duplicates"))
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", type=click.Path(), callback=lambda c, p, v: _file_name(v), required=True, help="The new trajectory file.")
@click.option("--remove-duplicates", is_flag=True, help="Drop runs whose point an earlier input already has.")
@click.option("--trial-parameter", help="Integer parameter counting repetitions: each input's trials follow the ones before.")
@_guard
def combine(inputs: tuple[str, ...], output: str, remove_duplicates: bool, trial_parameter: str | None) -> None:
    """Join two or more trajectory files of the same parameter set (pypet's f_merge); runs are renumbered."""
    from .combine import combine as combine_files

    if Path(output).is_dir():
        fail(f"-o {output}: is a directory; give a file name")
    if len(inputs) < 2:
        fail(f"combine needs at least two trajectory files, got {len(inputs)}")
    report = combine_files(list(inputs), output, remove_duplicates, trial_parameter)
    click.echo(report.summary("file"))


def _verbose(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        logging.getLogger().setLevel(logging.INFO)


for _command in main.commands.values():  # -v also after the subcommand: pypet-hpc merge W -v
    _command.params.append(click.Option(["-v", "--verbose"], is_flag=True, expose_value=False, callback=_verbose,
                                        help="Log what happens (INFO level) to stderr."))


if __name__ == "__main__":
    main()
