"""The JSON files of a sweep directory, as typed records: ``manifest.json`` (versioned),
``jobs.jsonl`` (one line per submission) and ``provenance.json``. Only this module knows their
bytes; a damaged file gives one line naming it, never a traceback."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import WorkdirError
from ..exploration import Plan
from .files import atomic_write

MANIFEST_VERSION = 1


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise WorkdirError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    except ValueError as exc:
        raise WorkdirError(f"{path}: the {what} is damaged (not JSON: {exc})") from None
    if not isinstance(data, dict):
        raise WorkdirError(f"{path}: the {what} is damaged (not a JSON object)")
    return data


def _build(cls: type[Any], data: dict[str, Any], path: Path, what: str) -> Any:
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise WorkdirError(f"{path}: the {what} is damaged ({exc})") from None


@dataclass
class Manifest:
    """Everything a worker needs besides the skeleton: plan, hash, function, executor settings."""

    name: str
    plan: Plan
    plan_hash: str
    function: dict[str, Any]
    executor: dict[str, Any] = field(default_factory=dict)
    sys_path: list[str] = field(default_factory=list)
    earlier_hashes: list[str] = field(default_factory=list)  # plans this sweep grew from (expand)
    allow_pickle: bool = False  # the submitter stored Pickled values: its workers may unpickle the skeleton
    max_failures: str = "auto"  # the early-stop rule (failures.FailureRule), as given
    created: float = field(default_factory=time.time)
    version: str = __version__
    format_version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["plan"] = asdict(self.plan)
        return json.dumps(data, indent=1)

    def write(self, path: Path) -> None:
        atomic_write(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> Manifest:
        data = _read_json(path, "manifest")
        version = data.get("format_version", 1)
        if not isinstance(version, int) or version > MANIFEST_VERSION:
            raise WorkdirError(f"{path}: manifest format {version!r} is newer than this pypet-hpc understands "
                               f"({MANIFEST_VERSION}); upgrade pypet-hpc")
        missing = [k for k in ("name", "plan", "plan_hash", "function") if k not in data]
        if missing:
            raise WorkdirError(f"{path}: the manifest is damaged (no {', '.join(missing)})")
        plan = data["plan"]
        if not isinstance(plan, dict):
            raise WorkdirError(f"{path}: the manifest is damaged (plan is not an object)")
        try:
            data["plan"] = Plan(**plan)
        except (TypeError, ValueError) as exc:
            raise WorkdirError(f"{path}: the manifest is damaged (plan: {exc})") from None
        manifest: Manifest = _build(cls, data, path, "manifest")
        return manifest


@dataclass(frozen=True)
class JobRecord:
    """One submission, appended to ``jobs.jsonl`` as soon as the scheduler answered.

    ``ids`` are the scheduler's job ids (one SLURM array, one local controller); ``tasks`` the
    sweep's task numbers, in array-index order; ``pid`` the local controller's process; ``mem``
    the memory limit the tasks were submitted with (status names it when one runs out)."""

    executor: str
    ids: list[str]
    tasks: list[int]
    time: float = field(default_factory=time.time)
    pid: int | None = None
    mem: str | None = None

    def to_json(self) -> str:
        data = {"time": self.time, "executor": self.executor, "ids": self.ids, "tasks": self.tasks}
        if self.pid is not None:
            data["pid"] = self.pid
        if self.mem is not None:
            data["mem"] = self.mem
        return json.dumps(data)


def append_job(path: Path, record: JobRecord) -> None:
    """Append one submission to ``jobs.jsonl``, durably (a crash right after keeps it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, (record.to_json() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jobs(path: Path) -> list[JobRecord]:
    """Every submission in ``jobs.jsonl``, oldest first. A damaged line is one clear error naming
    the file, the line and what is wrong: skipping it could hide a submission whose tasks still
    run, and a resubmit would then start them twice."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise WorkdirError(f"{path}: cannot read ({exc.strerror})") from None
    out: list[JobRecord] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        out.append(_job_record(line, path, number))
    return out


def _job_record(line: str, path: Path, number: int) -> JobRecord:
    def damaged(what: str) -> WorkdirError:
        return WorkdirError(f"{path} line {number} is damaged ({what}); repair or delete that line "
                            "(each line records one submission: executor, ids, tasks)")

    try:
        data = json.loads(line)
    except ValueError as exc:
        raise damaged(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise damaged(f"not a JSON object: {line[:40]!r}")
    missing = [k for k in ("executor", "ids", "tasks") if k not in data]
    if missing:
        raise damaged(f"no {', '.join(missing)}")
    try:
        if not isinstance(data["ids"], list) or not isinstance(data["tasks"], list):
            raise TypeError("ids and tasks must be lists")
        return JobRecord(executor=str(data["executor"]), ids=[str(i) for i in data["ids"]],
                         tasks=[int(t) for t in data["tasks"]], time=float(data.get("time", 0.0)),
                         pid=int(data["pid"]) if data.get("pid") is not None else None,
                         mem=str(data["mem"]) if data.get("mem") is not None else None)
    except (ValueError, TypeError) as exc:
        raise damaged(str(exc)) from None


@dataclass
class Provenance:
    """Where and with what a sweep was made (``provenance.json``; copied into merged files)."""

    git: dict[str, Any] | None
    source: str | None
    versions: dict[str, str]
    host: str
    user: str
    argv: list[str]
    cwd: str
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def write(self, path: Path) -> None:
        atomic_write(path, self.to_json())

    @classmethod
    def from_json(cls, text: str, where: str = "provenance") -> Provenance:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise WorkdirError(f"{where}: damaged provenance (not JSON: {exc})") from None
        if not isinstance(data, dict):
            raise WorkdirError(f"{where}: damaged provenance (not a JSON object)")
        prov: Provenance = _build(cls, data, Path(where), "provenance")
        return prov


@dataclass(frozen=True)
class StopRecord:
    """Why a sweep was stopped early (``stopped.json``): written by the task whose failure rule
    tripped, read by status and by whoever waits (who cancels the other tasks)."""

    reason: str
    task: int | None = None
    time: float = field(default_factory=time.time)

    def write(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> StopRecord | None:
        """The record at ``path``; None when there is none (a damaged one is still a stop)."""
        if not path.exists():
            return None
        try:
            data = _read_json(path, "stop record")
        except WorkdirError as exc:
            return cls(str(exc))
        record: StopRecord = _build(cls, data, path, "stop record")
        return record


@dataclass
class CleanRecord:
    """What ``pypet-hpc clean`` removed (``cleaned.json``): the merged file that holds the runs,
    and for each removed shard its task's (ok, failed) runs, so status still counts them."""

    target: str
    tasks: dict[str, list[int]] = field(default_factory=dict)  # task -> [ok, failed]
    time: float = field(default_factory=time.time)

    def write(self, path: Path) -> None:
        atomic_write(path, json.dumps(asdict(self)))

    @classmethod
    def read(cls, path: Path) -> CleanRecord | None:
        """The record at ``path``; None when nothing was cleaned."""
        if not path.exists():
            return None
        record: CleanRecord = _build(cls, _read_json(path, "clean record"), path, "clean record")
        return record
