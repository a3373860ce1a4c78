"""The run table: one row per run, the same columns in shards and in trajectory files."""

from __future__ import annotations

from enum import IntEnum


class RunStatus(IntEnum):
    """A run's outcome as stored in ``run_info/status``."""

    MISSING = 0
    OK = 1
    FAILED = 2

    def __str__(self) -> str:
        return self.name.lower()
