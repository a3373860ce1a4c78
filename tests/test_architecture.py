"""The shape of the code: layers import downwards only, no import circles, one owner of the bytes
on disk, and a run-table column added in one place reaches every file and reader."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from pypet_rebuild import Environment, HDF5StorageService, Trajectory, load_trajectory
from pypet_rebuild.formats import schema

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pypet_rebuild"

# Lowest first. A module may import its own layer and the ones before it, never a later one.
LAYERS: list[set[str]] = [
    {"_version", "errors", "naming", "timefmt", "progress", "taskstate"},
    {"failures"},
    {"codec", "exploration"},
    {"runstore"},
    {"analysis"},
    {"model"},
    {"formats", "formats.journal", "formats.files", "formats.schema", "formats.records", "formats.shard",
     "formats.trajfile"},
    {"storage", "workdir", "live"},
    {"worker"},
    {"executors", "executors.base", "executors.inline", "executors.local", "executors.slurm",
     "executors.slurm_task"},
    {"merge", "combine", "status", "clean"},
    {"environment"},
    {"cli", "compat", ""},  # "" is the package's __init__ (its Environment import is lazy, but counted)
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports() -> dict[str, set[str]]:
    """module -> the package's modules it imports (anywhere in it, also inside functions)."""
    mods = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    out: dict[str, set[str]] = {}
    for name, path in mods.items():
        pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = [p for p in pkg.split(".") if p]
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
                for cand in ([target] if node.module else []) + [f"{target}.{a.name}".lstrip(".") for a in node.names]:
                    if cand in mods and cand != name:
                        found.add(cand)
            elif isinstance(node, ast.Import | ast.ImportFrom) and not getattr(node, "level", 0):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for full in names:
                    if full == "pypet_rebuild" or full.startswith("pypet_rebuild."):
                        cand = full.removeprefix("pypet_rebuild").lstrip(".")
                        if cand in mods and cand != name:
                            found.add(cand)
        out[name] = found
    return out


def test_every_module_has_a_layer() -> None:
    placed = set().union(*LAYERS)
    assert set(imports()) <= placed, sorted(set(imports()) - placed)


def test_layers_import_downwards_only() -> None:
    layer = {m: i for i, group in enumerate(LAYERS) for m in group}
    upward = [(m, dep) for m, deps in imports().items() for dep in deps if layer[dep] > layer[m]]
    assert not upward, upward


def test_no_import_circles() -> None:
    graph = imports()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert not circles, circles


def test_only_the_codec_and_formats_touch_hdf5() -> None:
    users = sorted(module_name(p) for p in PACKAGE.rglob("*.py") if "import h5py" in p.read_text())
    assert users == ["codec", "formats.files", "formats.schema", "formats.shard", "formats.trajfile"], users


def _square(traj: Trajectory) -> None:
    traj.add_result("z", traj.x**2)


def test_a_run_table_column_added_to_the_schema_reaches_shards_merge_and_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's 'where to add a run_info column': one entry in formats.schema is enough for
    shards, merge, combine and loading to carry it (with its fill value until the worker sets it)."""
    extra = schema.Column(np.dtype(np.int16), 7, required=False)
    for table in (schema.RUN_COLUMNS, schema.SHARD_RUN_COLUMNS, schema.FILE_RUN_COLUMNS):
        monkeypatch.setitem(table, "attempt", extra)
    traj = Trajectory("cols")
    traj.add_parameter("x", 0)
    out = tmp_path / "cols.h5"
    Environment(traj, HDF5StorageService(out), executor="inline", workdir=tmp_path / "wd",
                runs_per_task=2).run_exploration(_square, space={"x": [1, 2, 3]})
    info = load_trajectory(out).run_info()
    assert info["attempt"].tolist() == [7, 7, 7]
    assert load_trajectory(out).get_from_runs("z").tolist() == [1, 4, 9]
