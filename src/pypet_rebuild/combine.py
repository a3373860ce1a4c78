"""Join two trajectory files of the same parameter set into one (pypet's ``f_merge``).

Each input file is rewritten as a shard of a new, combined sweep (its runs renumbered after the
runs before it) and the shards go through the ordinary :func:`merge`: there is one merge path.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from .errors import ExplorationError, StorageError
from .exploration import Plan
from .formats.trajfile import export_runs, load_trajectory, write_skeleton
from .merge import MergeReport, merge
from .model import Trajectory
from .workdir import plan_hash


def combine(a: str | Path, b: str | Path, output: str | Path, remove_duplicates: bool = False,
            trial_parameter: str | None = None, name: str | None = None) -> MergeReport:
    """Write ``output`` holding the runs of ``a`` followed by the runs of ``b``.

    ``remove_duplicates`` drops runs of ``b`` whose explored point already is in ``a``;
    ``trial_parameter`` names an integer parameter counting repetitions: ``b``'s trials are
    renumbered to follow ``a``'s. A parameter that is explored in one file, or whose default
    differs, is explored in the result. Different parameter sets are refused.
    """
    ta, tb = load_trajectory(a), load_trajectory(b)
    pa, pb = set(ta.state.leaves["parameters"]), set(tb.state.leaves["parameters"])
    if pa != pb:
        raise ExplorationError(
            f"{a} and {b} have different parameters (only in the first: {sorted(pa - pb) or 'none'}; "
            f"only in the second: {sorted(pb - pa) or 'none'})")
    points_a, points_b = ta.state.points(), tb.state.points()
    if trial_parameter is not None:
        if trial_parameter not in pa:
            raise ExplorationError(f"trial parameter {trial_parameter!r} is not a parameter of {a}")
        shift = max(int(v) for v in points_a[trial_parameter]) + 1 - min(int(v) for v in points_b[trial_parameter])
        points_b[trial_parameter] = [int(v) + shift for v in points_b[trial_parameter]]
    varying = [n for n in sorted(pa) if len({repr(v) for v in points_a[n] + points_b[n]}) > 1
               or n in ta.state.explored or n in tb.state.explored]
    keep_b = list(range(len(tb)))
    if remove_duplicates:
        seen = {tuple(repr(points_a[n][i]) for n in varying) for i in range(len(ta))}
        keep_b = [i for i in keep_b if tuple(repr(points_b[n][i]) for n in varying) not in seen]
    combined = Trajectory(name or ta.name, comment=ta.comment)
    for branch, leaves in ta.state.leaves.items():
        for leaf in leaves.values():
            combined.add_leaf(branch, leaf)
    combined.explore({n: points_a[n] + [points_b[n][i] for i in keep_b] for n in varying} or
                     {sorted(pa)[0]: points_a[sorted(pa)[0]] + [points_b[sorted(pa)[0]][i] for i in keep_b]})
    plan = Plan.make(len(combined), runs_per_task=max(1, len(combined)))
    digest = plan_hash(combined, plan)
    record = [{"file": str(Path(a).resolve()), "name": ta.name, "runs": len(ta), "kept": len(ta), "offset": 0},
              {"file": str(Path(b).resolve()), "name": tb.name, "runs": len(tb), "kept": len(keep_b),
               "offset": len(ta), "remove_duplicates": remove_duplicates, "trial_parameter": trial_parameter}]
    with tempfile.TemporaryDirectory(prefix=".pypet-combine-", dir=Path(output).parent) as tmp_s:
        tmp = Path(tmp_s)
        skeleton = tmp / "skeleton.h5"
        write_skeleton(skeleton, combined, len(combined), digest, merged_from=json.dumps(record), combined=time.time())
        shards = [tmp / "a.h5", tmp / "b.h5"]
        export_runs(Path(a), shards[0], list(range(len(ta))), 0, digest, 0)
        export_runs(Path(b), shards[1], keep_b, len(ta), digest, 1)
        out = Path(output)
        if out.exists():
            raise StorageError(f"{out} exists; combine writes a new file")
        return merge(skeleton, shards, out, digest)
