"""The sweep directory: manifest, skeleton trajectory, function, provenance, shards, logs, jobs.

```
<workdir>/
  manifest.json      plan, plan hash, executor settings, function reference
  trajectory.h5      the trajectory skeleton: parameters, explored values, empty run table
  function.pkl       the simulation function, cloudpickled once (when given from Python)
  args.pkl           its extra job arguments, (args, kwargs) cloudpickled (when given)
  sweep/<file>.py    a snapshot of the sweep file (when given from the CLI)
  provenance.json    git commit and dirty flag, package versions, host, user, command line
  jobs.jsonl         one line per submission: executor, job ids, tasks
  shards/            task_000000.h5 ... (task_000000.h5.partial while running)
  logs/              one log per task
```
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import platform
import shutil
import socket
import subprocess
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .codec import Pickled, holds_pickled, scalar_column
from .errors import LiveObjectError, WorkdirError
from .exploration import Plan
from .formats.files import atomic_write, hdf5_version
from .formats.records import (
    CleanRecord,
    JobRecord,
    Manifest,
    Provenance,
    StopRecord,
    append_job,
    read_jobs,
)
from .formats.shard import shard_path
from .formats.trajfile import load_trajectory, write_skeleton
from .model import Trajectory

MANIFEST = "manifest.json"
ARGS = "args.pkl"  # the job arguments given from Python, (args, kwargs) cloudpickled
Simulation = Callable[[Trajectory], Any]


def plan_hash(traj: Trajectory, plan: Plan) -> str:
    """A digest of what decides the runs' results: parameters, explored points and the chunking."""
    h = hashlib.sha256()
    h.update(repr((traj.name, plan.n_runs, plan.runs_per_task)).encode())
    for branch in ("config", "parameters", "derived_parameters"):
        for name, leaf in sorted(traj.state.leaves[branch].items()):
            h.update(f"{branch}.{name}=".encode())
            _digest(h, leaf.value)
    for name, values in traj.state.explored.items():
        h.update(f"explored.{name}=".encode())
        fast = scalar_column(values)
        if fast is None:
            _digest(h, values)
        else:  # the column's bytes at numpy speed, not each element
            h.update(f"column{fast[0]}".encode())
            h.update(fast[1].tobytes())
    return h.hexdigest()[:32]


def _digest(h: Any, value: Any) -> None:
    if isinstance(value, np.ndarray):
        h.update(f"{value.dtype.str}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, list | tuple):
        h.update(f"{type(value).__name__}{len(value)}[".encode())
        for v in value:
            _digest(h, v)
        h.update(b"]")
    elif isinstance(value, dict):
        h.update(f"dict{len(value)}{{".encode())
        for k, v in value.items():
            h.update(repr(k).encode())
            _digest(h, v)
        h.update(b"}")
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


def check_signature(fn: Any, where: str, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> None:
    """A simulation takes the trajectory, then the job arguments given (none: the trajectory only)."""
    if not callable(fn):
        raise WorkdirError(f"{where} is not a function")
    kwargs = kwargs or {}
    try:
        inspect.signature(fn).bind(object(), *args, **kwargs)
    except TypeError:
        if not args and not kwargs:
            raise WorkdirError(f"{where} must take exactly one argument, the trajectory (signature: "
                               f"{inspect.signature(fn)})") from None
        given = ", ".join([*(f"{type(a).__name__}" for a in args), *(f"{k}=" for k in kwargs)])
        hint = ("; to explore a space pass it by keyword: space={...}"
                if args and isinstance(args[0], Mapping) else "")
        raise WorkdirError(f"{where} cannot take the trajectory and the job arguments given ({given}); "
                           f"its signature is {inspect.signature(fn)}{hint}") from None
    except ValueError:
        pass


class BoundJob:
    """A simulation with its job arguments: ``job(traj)`` calls ``fn(traj, *args, **kwargs)``."""

    __slots__ = ("fn", "args", "kwargs")

    def __init__(self, fn: Simulation, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.fn, self.args, self.kwargs = fn, tuple(args), dict(kwargs)

    def __call__(self, traj: Trajectory) -> Any:
        return self.fn(traj, *self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"<{getattr(self.fn, '__qualname__', self.fn)!s} with {len(self.args) + len(self.kwargs)} job arguments>"


def bind_job(fn: Simulation, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Simulation:
    """``fn`` with its job arguments bound, so that every executor calls ``job(traj)``."""
    if not args and not kwargs:
        return fn
    return BoundJob(fn, args, kwargs or {})


def check_no_live_objects(fn: Any, traj: Trajectory, executor: str) -> None:
    """Refuse (:class:`LiveObjectError`, one line) a simulation that carries a multiprocessing
    object other processes cannot share; before anything is written or submitted."""
    problem = live_objects_problem(fn, traj)
    if problem is not None:
        raise LiveObjectError(
            f"{problem}: it lives in this process and cannot be shared with {executor} workers; "
            "store what each run computes with traj.add_result and read it after the sweep "
            "(traj.get_from_runs), or use executor='inline'")


def live_objects_problem(fn: Any, traj: Trajectory) -> str | None:
    """Name a multiprocessing proxy, lock, queue, pool or pipe end among what ``fn`` carries
    (closure, defaults, the globals it names, a partial's or bound method's arguments) or the
    trajectory's values, or None. Such objects live in this process: on local or SLURM workers
    they do not reach the submitter (pypet's ``Manager().list()`` example), so they are refused."""
    seen: set[int] = set()

    def walk(obj: Any, where: str, depth: int) -> str | None:
        if id(obj) in seen or depth > 4:
            return None
        seen.add(id(obj))
        kind = _live_kind(obj)
        if kind is not None:
            return f"{where} is a multiprocessing {kind}"
        if isinstance(obj, list | tuple | set | frozenset):
            return next((p for v in list(obj)[:1000] if (p := walk(v, f"an item of {where}", depth + 1))), None)
        if isinstance(obj, dict):
            return next((p for k, v in list(obj.items())[:1000] if (p := walk(v, f"{where}[{k!r}]", depth + 1))), None)
        if isinstance(obj, functools.partial):
            parts = [(obj.func, where), *[(a, f"an argument of {where}") for a in obj.args],
                     *[(v, f"argument {k!r} of {where}") for k, v in obj.keywords.items()]]
            return next((p for v, w in parts if (p := walk(v, w, depth + 1))), None)
        if inspect.ismethod(obj):
            return walk(obj.__self__, f"the object of {where}", depth + 1) or walk(obj.__func__, where, depth + 1)
        if inspect.isfunction(obj):
            name = obj.__qualname__
            parts = [(c.cell_contents, f"{name}'s closure variable {v!r}")
                     for v, c in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=True)
                     if c.cell_contents is not obj]
            parts += [(d, f"a default argument of {name}") for d in obj.__defaults__ or ()]
            parts += [(d, f"default argument {k!r} of {name}") for k, d in (obj.__kwdefaults__ or {}).items()]
            parts += [(obj.__globals__[g], f"the global {g!r} {name} uses") for g in _code_names(obj.__code__)
                      if g in obj.__globals__]
            return next((p for v, w in parts if (p := walk(v, w, depth + 1))), None)
        attrs = getattr(obj, "__dict__", None)
        if isinstance(attrs, dict) and not isinstance(obj, type | types.ModuleType):  # a callable object's state
            return next((p for k, v in list(attrs.items())[:1000] if (p := walk(v, f"{where}.{k}", depth + 1))), None)
        return None

    found = walk(fn, getattr(fn, "__qualname__", "the simulation"), 0)
    if found is not None:
        return found
    for branch, leaves in traj.state.leaves.items():
        for name, leaf in leaves.items():
            value = leaf.value.value if isinstance(leaf.value, Pickled) else leaf.value
            found = walk(value, f"{branch}.{name}", 1)
            if found is not None:
                return found
    return None


def _code_names(code: Any) -> set[str]:
    """The global names a function's code (and the code of functions nested in it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _code_names(const)
    return names


def _live_kind(obj: Any) -> str | None:
    """What kind of process-bound multiprocessing object ``obj`` is, or None (checked by type,
    without touching the object: a proxy's attributes would call its manager)."""
    for cls, kind in _live_types():
        if isinstance(obj, cls):
            return f"{kind} ({type(obj).__name__})"
    return None


@functools.cache
def _live_types() -> tuple[tuple[type, str], ...]:
    from multiprocessing import managers, pool, queues
    from multiprocessing.connection import Connection

    kinds: list[tuple[type, str]] = [(managers.BaseProxy, "proxy"), (managers.BaseManager, "manager"),
                                     (queues.Queue, "queue"), (pool.Pool, "pool"), (Connection, "pipe end")]
    try:
        from multiprocessing import synchronize
    except ImportError:  # a platform without working semaphores has no such locks either
        return tuple(kinds)
    kinds += [(synchronize.SemLock, "lock"), (synchronize.Condition, "condition"),
              (synchronize.Event, "event"), (synchronize.Barrier, "barrier")]
    return tuple(kinds)


def load_reference(ref: str) -> Simulation:
    """Import ``module:function`` or ``path/to/file.py:function``."""
    target, sep, func_name = ref.rpartition(":")
    if not sep or not target or not func_name:
        raise WorkdirError(f"function reference {ref!r} must look like module:function or file.py:function")
    module = import_sweep(target)
    fn = getattr(module, func_name, None)
    if fn is None:
        raise WorkdirError(f"{target} has no function {func_name!r}")
    check_signature(fn, ref)
    simulation: Simulation = fn
    return simulation


def import_sweep(target: str) -> Any:
    """Import a sweep given as a module name or a path to a .py file."""
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise WorkdirError(f"{target}: no such sweep file")
        mod_name = f"pypet_sweep_{path.stem}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except SystemExit as exc:  # sys.exit() at import: a sweep file must not end the command
            del sys.modules[mod_name]
            raise WorkdirError(f"{target} called sys.exit({exc.code!r}) while it was imported; "
                               "put script code under `if __name__ == \"__main__\":`") from None
        except Exception as exc:
            del sys.modules[mod_name]
            raise WorkdirError(f"{target} does not import: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(target)
    except SystemExit as exc:
        raise WorkdirError(f"module {target!r} called sys.exit({exc.code!r}) while it was imported; "
                           "put script code under `if __name__ == \"__main__\":`") from None
    except Exception as exc:
        raise WorkdirError(f"module {target!r} does not import: {type(exc).__name__}: {exc}") from exc


def _holds_pickled(traj: Trajectory) -> bool:
    leaves = [leaf.value for branch in traj.state.leaves.values() for leaf in branch.values()]
    return any(holds_pickled(v) for v in leaves) or any(
        holds_pickled(v) for values in traj.state.explored.values() for v in values)


class Workdir:
    """A sweep directory on disk."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.normpath(Path(path).absolute()))  # p/../mine/wd -> mine/wd
        self.shards = self.path / "shards"
        self.logs = self.path / "logs"
        self.skeleton = self.path / "trajectory.h5"
        self.manifest_path = self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> Manifest:
        if not self.exists():
            raise WorkdirError(f"{self.path} is not a sweep directory (no {MANIFEST}); create one with `pypet-hpc submit`")
        return Manifest.read(self.manifest_path)

    @property
    def default_output(self) -> Path:
        return self.path / "merged.h5"

    def shard(self, task: int) -> Path:
        return shard_path(self.shards, task)

    def create(self, traj: Trajectory, plan: Plan, fn: Simulation | str | None, executor: dict[str, Any],
               sweep_file: Path | None = None, max_failures: str = "auto", job_args: Sequence[Any] = (),
               job_kwargs: Mapping[str, Any] | None = None) -> Manifest:
        """Write a new sweep; refuse a directory holding another (or the same) sweep. A function
        given from Python is pickled with its job arguments (``job_args``, ``job_kwargs``)."""
        digest = plan_hash(traj, plan)
        if self.exists():
            old = self.manifest()
            if old.plan_hash == digest:
                raise WorkdirError(f"{self.path} already holds this sweep; use `pypet-hpc resubmit {self.path}` "
                                   "to run what is not complete")
            raise WorkdirError(f"{self.path} holds another sweep ({old.name!r}, {old.plan.n_runs} runs); "
                               "choose another --workdir")
        if self.path.exists() and not self.path.is_dir():
            raise WorkdirError(f"{self.path} exists and is not a directory")
        if self.path.exists() and any(self.path.iterdir()):
            raise WorkdirError(f"{self.path} is not empty and is not a sweep directory; choose another --workdir")
        try:
            self.shards.mkdir(parents=True, exist_ok=True)
            self.logs.mkdir(exist_ok=True)
        except OSError as exc:
            raise WorkdirError(f"cannot create the sweep directory {self.path}: {exc.strerror}") from None
        if not os.access(self.path, os.W_OK):
            raise WorkdirError(f"{self.path} is not writable")
        if fn is None:
            function: dict[str, Any] = {"inline": True}  # run in this process with the live function
        elif isinstance(fn, str):
            function = {"ref": fn}
            if sweep_file is not None:
                snap = self.path / "sweep"
                snap.mkdir(exist_ok=True)
                shutil.copyfile(sweep_file, snap / sweep_file.name)  # its mode comes from the umask
        else:
            function = self.save_function(fn, job_args, job_kwargs)
        write_skeleton(self.skeleton, traj, plan.n_runs, digest)
        manifest = Manifest(name=traj.name, plan=plan, plan_hash=digest, function=function,
                            executor=executor, sys_path=[p for p in sys.path if p],
                            allow_pickle=_holds_pickled(traj), max_failures=max_failures)
        self.write_manifest(manifest)
        provenance(fn).write(self.path / "provenance.json")
        os.chmod(self.path, 0o777 & ~_umask())
        return manifest

    def expand(self, traj: Trajectory, plan: Plan) -> Manifest:
        """Grow the sweep to ``traj``'s points; the points it had must come first, unchanged."""
        old = self.manifest()
        before = self.load_skeleton(old)
        if plan.runs_per_task != old.plan.runs_per_task:
            raise WorkdirError(f"expand keeps the task size: {old.plan.runs_per_task} runs per task, "
                               f"not {plan.runs_per_task}")
        for branch in ("config", "parameters"):
            mine = {n: repr(leaf.value) for n, leaf in traj.state.leaves[branch].items()}
            theirs = {n: repr(leaf.value) for n, leaf in before.state.leaves[branch].items()}
            if mine != theirs:
                diff = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
                raise WorkdirError(f"{self.path} holds a sweep with other {branch} ({diff}); expand adds points only")
        n_old = len(before)
        for name, values in before.state.explored.items():
            if [repr(v) for v in traj.state.explored.get(name, [])[:n_old]] != [repr(v) for v in values]:
                raise WorkdirError(f"the first {n_old} points of {name!r} differ from the sweep in {self.path}; "
                                   "expand only appends points")
        digest = plan_hash(traj, plan)
        write_skeleton(self.skeleton, traj, plan.n_runs, digest)
        manifest = Manifest(name=old.name, plan=plan, plan_hash=digest, function=old.function,
                            executor=old.executor, sys_path=old.sys_path,
                            earlier_hashes=[*old.earlier_hashes, old.plan_hash], created=old.created,
                            allow_pickle=old.allow_pickle or _holds_pickled(traj), max_failures=old.max_failures)
        self.write_manifest(manifest)
        return manifest

    def load_skeleton(self, manifest: Manifest | None = None) -> Trajectory:
        """The sweep's trajectory as submitted; its Pickled values are unpickled only when the
        submitter stored them (the manifest records that), never for a file put there later."""
        manifest = manifest or self.manifest()
        return load_trajectory(self.skeleton, allow_pickle=manifest.allow_pickle)

    def save_function(self, fn: Simulation, args: Sequence[Any] = (),
                      kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Cloudpickle the simulation once into the workdir, and its job arguments (if any) into
        ``args.pkl`` beside it; returns its manifest entry.

        Functions from __main__ (scripts, notebooks) and closures go by value, the rest by
        reference: the worker imports them with the submitter's sys.path.
        """
        import cloudpickle

        atomic_write(self.path / "function.pkl", cloudpickle.dumps(fn))
        entry = {"pickle": "function.pkl", "name": getattr(fn, "__qualname__", repr(fn)),
                 "module": getattr(fn, "__module__", "")}
        if args or kwargs:
            atomic_write(self.path / ARGS, cloudpickle.dumps((tuple(args), dict(kwargs or {}))))
            entry["args"] = ARGS
        else:
            (self.path / ARGS).unlink(missing_ok=True)  # arguments of an earlier wave no longer hold
        return entry

    def write_manifest(self, manifest: Manifest) -> None:
        manifest.write(self.manifest_path)

    def load_function(self, manifest: Manifest) -> Simulation:
        for p in reversed(manifest.sys_path):
            if p not in sys.path:
                sys.path.insert(0, p)
        if "inline" in manifest.function:
            raise WorkdirError(f"{self.path}: this sweep ran inline; its function lives only in the submitting process")
        if "ref" in manifest.function:
            return load_reference(manifest.function["ref"])
        import cloudpickle

        with open(self.path / manifest.function["pickle"], "rb") as fh:
            fn: Simulation = cloudpickle.load(fh)
        if "args" in manifest.function:
            with open(self.path / manifest.function["args"], "rb") as fh:
                args, kwargs = cloudpickle.load(fh)
            return bind_job(fn, args, kwargs)
        return fn

    def record_jobs(self, record: JobRecord) -> None:
        """Append one submission (executor, job ids, tasks) to jobs.jsonl as soon as it is known."""
        append_job(self.path / "jobs.jsonl", record)

    @property
    def stop_path(self) -> Path:
        return self.path / "stopped.json"

    def stopped(self) -> StopRecord | None:
        """Why the sweep was stopped early by its failure rule, or None."""
        return StopRecord.read(self.stop_path)

    def record_stop(self, reason: str, task: int | None = None) -> None:
        if not self.stop_path.exists():  # the first reason stands
            StopRecord(reason, task).write(self.stop_path)

    def clear_stop(self) -> None:
        """A resubmit is a new attempt: the early stop of the last one no longer holds."""
        self.stop_path.unlink(missing_ok=True)

    @property
    def clean_path(self) -> Path:
        return self.path / "cleaned.json"

    def cleaned(self) -> CleanRecord | None:
        """What ``pypet-hpc clean`` removed, or None."""
        return CleanRecord.read(self.clean_path)

    def jobs(self) -> list[JobRecord]:
        return read_jobs(self.path / "jobs.jsonl")

    def shard_files(self) -> list[Path]:
        return sorted(self.shards.glob("task_*.h5"))

    def task_log(self, task: int) -> Path:
        return self.logs / f"task_{task:06d}.log"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def provenance(fn: Simulation | str | None) -> Provenance:
    """Where and with what the sweep was made: git state of the function's code, versions, host."""
    source: str | None = None
    if fn is None:
        source = None
    elif isinstance(fn, str):
        target = fn.rpartition(":")[0]
        source = str(Path(target).resolve()) if target.endswith(".py") else None
        if source is None:
            spec = importlib.util.find_spec(target)
            source = spec.origin if spec else None
    else:
        try:
            source = inspect.getsourcefile(fn)
        except TypeError:
            source = None
    versions = {"python": platform.python_version(), "pypet-hpc": __version__}
    for dist in ("numpy", "h5py", "submitit", "click", "filelock", "cloudpickle"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions["hdf5"] = hdf5_version()
    return Provenance(git=git_state(Path(source).parent if source else Path.cwd()), source=source,
                      versions=versions, host=socket.gethostname(), user=getpass.getuser(),
                      argv=list(sys.argv), cwd=os.getcwd())


def git_state(where: Path) -> dict[str, Any] | None:
    """The commit and dirty flag of the git checkout holding ``where``, or None outside git."""
    try:
        commit = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
