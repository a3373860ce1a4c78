"""Run pypet's own examples through ``pypet_rebuild.compat``, changing only their import lines.

    python scripts/run_pypet_examples.py MIRROR_DIR [--all] [--timeout S] [--keep DIR]

MIRROR_DIR is a checkout of pypet or a bare git mirror of it (read with ``git show HEAD:...``).
Each example's ``from pypet... import ...`` / ``import pypet`` lines are rewritten to
``pypet_rebuild.compat``; nothing else changes. Each runs in a fresh folder (so ``hdf5/`` is
new) with matplotlib's non-interactive backend, and the table says ran / failed (last line of
the error). The examples of issue 16 run by default; ``--all`` runs every example file.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TARGETS = ["01", "02", "03", "04", "05", "08", "09", "10", "14", "15", "18"]
_FROM = re.compile(r"^(\s*)from\s+pypet(\.[\w.]+)?\s+import\s", re.M)
_IMPORT = re.compile(r"^(\s*)import\s+pypet(\.[\w.]+)?\s*$", re.M)


def rewrite_imports(text: str) -> str:
    """``text`` with every pypet import taken from ``pypet_rebuild.compat`` instead."""
    text = _FROM.sub(lambda m: f"{m.group(1)}from pypet_rebuild.compat import ", text)
    return _IMPORT.sub(lambda m: f"{m.group(1)}import pypet_rebuild.compat as pypet", text)


def list_examples(mirror: Path) -> dict[str, str]:
    """example file path -> its text, for the single-file examples (``examples/example_NN_*.py``)."""
    if (mirror / "examples").is_dir():
        files = sorted(str(p.relative_to(mirror)) for p in (mirror / "examples").glob("example_*.py"))
        return {f: (mirror / f).read_text() for f in files}
    names = subprocess.run(["git", "-C", str(mirror), "ls-tree", "--name-only", "HEAD", "examples/"],
                           check=True, capture_output=True, text=True).stdout.split()
    files = sorted(n for n in names if re.fullmatch(r"examples/example_\w+\.py", n))
    return {f: subprocess.run(["git", "-C", str(mirror), "show", f"HEAD:{f}"], check=True,
                              capture_output=True, text=True).stdout for f in files}


def reason(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    return lines[-1][:150] if lines else "no output"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mirror", type=Path)
    ap.add_argument("--all", action="store_true", help="every example, not only issue 16's targets")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--keep", type=Path, help="run in DIR/<example> and keep the files")
    args = ap.parse_args()
    examples = list_examples(args.mirror)
    if not args.all:
        examples = {f: t for f, t in examples.items() if re.search(r"example_(\d+)", f)[1] in TARGETS}  # type: ignore[index]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    rows: list[tuple[str, str, str]] = []
    for path, text in examples.items():
        stem = Path(path).stem
        with tempfile.TemporaryDirectory(prefix=f"pypet-{stem}-") as tmp:
            folder = args.keep / stem if args.keep else Path(tmp)
            folder.mkdir(parents=True, exist_ok=True)
            script = folder / Path(path).name
            script.write_text(rewrite_imports(text))
            try:
                proc = subprocess.run([sys.executable, script.name], cwd=folder, env=env, capture_output=True,
                                      text=True, timeout=args.timeout)
                ok, why = proc.returncode == 0, reason(proc.stderr)
            except subprocess.TimeoutExpired:
                ok, why = False, f"timed out after {args.timeout:.0f} s"
        rows.append((stem, "ran" if ok else "failed", "" if ok else why))
    width = max(len(r[0]) for r in rows)
    print(f"| {'example':<{width}} | result | reason |")
    print(f"|{'-' * (width + 2)}|--------|--------|")
    for stem, result, why in rows:
        print(f"| {stem:<{width}} | {result:<6} | {why.replace('|', '/')} |")
    print(f"{sum(r[1] == 'ran' for r in rows)} of {len(rows)} ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
