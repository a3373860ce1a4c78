"""A progress bar on stderr (click's: bar, percent, ETA, a note such as ok/failed counts),
quiet when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Any, TextIO

import click


class Progress:
    """``Progress(total, "runs")``; ``advance(n)`` or ``update_to(done, note)``; ``close()`` ends the line."""

    def __init__(self, total: int, unit: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total, self.unit, self.done = total, unit, 0
        self.note = ""
        self._bar: Any = None
        if self.enabled:
            self._bar = click.progressbar(length=max(total, 1), label=unit, file=self.stream, show_eta=True,
                                          show_pos=True, item_show_func=lambda note: note, width=30)

    def advance(self, n: int = 1) -> None:
        self.update_to(self.done + n, self.note)

    def update_to(self, done: int, note: str = "") -> None:
        step, self.done, self.note = done - self.done, done, note
        if self._bar is not None:
            self._bar.update(max(step, 0), note or None)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.render_finish()
