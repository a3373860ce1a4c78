"""Failing runs: the signature that groups them, and the rule that stops a sweep early.

A signature is the exception type and its message with every number masked, so that
``KeyError: 'x_17'`` and ``KeyError: 'x_18'`` are one error. The rule (``--max-failures``) stops
a sweep when its first :data:`WINDOW` finished runs all failed with one signature (a typo in
``simulate`` then costs a few dozen runs, not the sweep), or when more runs failed than a limit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import PypetError

WINDOW = 20  # the first finished runs that decide "every run fails the same way"
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?")


def signature(exc_type: str, message: str) -> str:
    """``type: message`` with the numbers masked as ``#`` (what groups failures)."""
    return f"{exc_type}: {_NUMBER.sub('#', message)}"


@dataclass(frozen=True)
class FailureRule:
    """``limit``: stop when more runs failed (a count, or a fraction of the sweep's runs);
    ``same_error``: stop when the first WINDOW finished runs all failed with one signature."""

    limit: int | float | None = None
    same_error: bool = True

    @classmethod
    def parse(cls, value: str | int | float | FailureRule | None) -> FailureRule:
        """``"auto"`` (or None), ``"off"``, a count ``N`` or a fraction ``0 < f < 1``."""
        if isinstance(value, FailureRule):
            return value
        text = "auto" if value is None else str(value).strip().lower()
        if text == "auto":
            return cls()
        if text in ("off", "none", "never"):
            return cls(None, same_error=False)
        try:
            number = float(text)
        except ValueError:
            number = -1.0
        if number >= 1 and number == int(number):
            return cls(int(number))
        if 0 < number < 1:
            return cls(number)
        raise PypetError(f"max failures {value!r}: give a count N >= 1, a fraction between 0 and 1, "
                         "'auto' (stop when the first runs all fail alike) or 'off'")

    def __str__(self) -> str:
        if self.limit is None:
            return "auto" if self.same_error else "off"
        return str(self.limit)

    def max_count(self, n_runs: int) -> int | None:
        """The most failed runs allowed in a sweep of ``n_runs`` runs (None: no limit)."""
        if self.limit is None:
            return None
        return int(self.limit) if isinstance(self.limit, int) else int(self.limit * n_runs)

    def check(self, n_runs: int, ok: int, failed: int, signatures: Iterable[str] = ()) -> str | None:
        """Why the sweep must stop, or None. ``signatures`` are those of the first finished
        runs (consulted only when no run succeeded and at least WINDOW failed)."""
        most = self.max_count(n_runs)
        if most is not None and failed > most:
            return (f"stopped early: {failed} runs failed, more than --max-failures {self} allows ({most}); "
                    "fix the error, then resubmit")
        if self.same_error and ok == 0 and failed >= WINDOW:
            seen = set(signatures)
            if len(seen) == 1:
                return (f"stopped early: the first {failed} finished runs all failed with {seen.pop()}; "
                        "fix it and resubmit (or pass --max-failures off to run on)")
        return None


class FailureWatch:
    """Applies a rule run by run in one process (a task, or every task of an inline sweep)."""

    def __init__(self, rule: FailureRule, n_runs: int) -> None:
        self.rule, self.n_runs = rule, n_runs
        self.ok = self.failed = 0
        self.first: set[str] = set()
        self.decided = not rule.same_error  # past the window, or a success: only the limit is left

    def record(self, ok: bool, exc_type: str = "", message: str = "") -> str | None:
        """Count one finished run; returns why to stop, or None."""
        if ok:
            self.ok += 1
            self.decided = True
            return None
        self.failed += 1
        if not self.decided:
            self.first.add(signature(exc_type, message))
            if len(self.first) > 1:
                self.decided = True
        if self.decided:
            return self.rule.check(self.n_runs, 1, self.failed)  # the window no longer matters
        if self.failed >= WINDOW:
            self.decided = True
        return self.rule.check(self.n_runs, self.ok, self.failed, self.first)


@dataclass(frozen=True)
class FailureGroup:
    """Failed runs with one signature: how many, which, and the first one (with its traceback)."""

    signature: str
    runs: list[int]
    example: dict[str, Any]
    alike: bool = False  # every run failed with the very same message: show it unmasked

    @property
    def count(self) -> int:
        return len(self.runs)

    def summary(self, examples: int = 5) -> str:
        shown = ", ".join(map(str, self.runs[:examples]))
        more = f" ... ({self.count} in all)" if self.count > examples else ""
        error = f"{self.example['type']}: {self.example['message']}" if self.alike else self.signature
        return f"{self.count} run{'s' if self.count != 1 else ''} failed with {error} (runs {shown}{more})"


def group_failures(failed: Iterable[dict[str, Any]]) -> list[FailureGroup]:
    """Failed runs (dicts with ``run``, ``type``, ``message``, ...) grouped by signature, the
    largest group first; each group's example is its lowest run."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in failed:
        groups.setdefault(signature(str(run["type"]), str(run["message"])), []).append(run)
    out = []
    for sig, runs in groups.items():
        runs.sort(key=lambda r: int(r["run"]))
        alike = len({str(r["message"]) for r in runs}) == 1
        out.append(FailureGroup(sig, [int(r["run"]) for r in runs], runs[0], alike))
    return sorted(out, key=lambda g: (-g.count, g.runs[0]))
