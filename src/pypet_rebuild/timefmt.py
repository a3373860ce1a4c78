"""Time limits in SLURM's formats, checked before anything is submitted."""

from __future__ import annotations

import re

from .errors import PypetError

_FORMATS = (
    (re.compile(r"(\d+)-(\d+):(\d+):(\d+)\Z"), (86400, 3600, 60, 1)),
    (re.compile(r"(\d+)-(\d+):(\d+)\Z"), (86400, 3600, 60)),
    (re.compile(r"(\d+)-(\d+)\Z"), (86400, 3600)),
    (re.compile(r"(\d+):(\d+):(\d+)\Z"), (3600, 60, 1)),
    (re.compile(r"(\d+):(\d+)\Z"), (60, 1)),
    (re.compile(r"(\d+)\Z"), (60,)),
)


def parse_time(value: str | float | int) -> float:
    """Seconds in a time limit: minutes as a number, or ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``."""
    if isinstance(value, bool):
        raise PypetError(f"bad time limit {value!r}")
    if isinstance(value, int | float):
        if value <= 0:
            raise PypetError(f"time limit must be positive, got {value!r} minutes")
        return float(value) * 60
    text = str(value).strip()
    for pattern, scale in _FORMATS:
        m = pattern.match(text)
        if m:
            seconds = sum(int(g) * s for g, s in zip(m.groups(), scale, strict=True))
            if seconds <= 0:
                break
            return float(seconds)
    raise PypetError(
        f"bad time limit {value!r}: use minutes (90), MM:SS, HH:MM:SS or D-HH:MM:SS (e.g. 1:30:00)"
    )


def slurm_minutes(value: str | float | int) -> int:
    """A time limit as whole minutes, rounded up (what submitit's ``timeout_min`` takes)."""
    return max(1, int(-(-parse_time(value) // 60)))
