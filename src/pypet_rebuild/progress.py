"""A small progress bar on stderr, quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "runs")``; ``advance(n)`` or ``update_to(done)``; ``close()`` ends the line."""

    def __init__(self, total: int, unit: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total, self.unit, self.done = total, unit, 0
        self.start = time.monotonic()
        self.note = ""
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.update_to(self.done + n)

    def update_to(self, done: int, note: str = "") -> None:
        self.done = done
        self.note = note
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.1 or done >= self.total):
            self._last = now
            frac = done / self.total if self.total else 1.0
            bar = "#" * int(30 * frac)
            rate = done / max(now - self.start, 1e-9)
            note = f", {self.note}" if self.note else ""
            self.stream.write(f"\r[{bar:<30}] {done}/{self.total} {self.unit} ({rate:.0f}/s{note})  ")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
