"""Name rules for trajectory nodes, checked once per distinct name and cached."""

from __future__ import annotations

import keyword
import re

from .errors import NamingError

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*\Z")
_checked: dict[tuple[str, frozenset[str]], tuple[str, ...]] = {}


def split_name(name: str, reserved: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Split a dotted name into segments, raising NamingError naming the bad segment.

    A segment is ASCII letters, digits and underscores, does not start with an underscore,
    is not a Python keyword and does not clash with a ``reserved`` attribute name (the methods
    of the view it would be reached through). Segments may start with a digit (``product.1_10``)
    so that the seed's names work; those are reached with ``[]`` rather than attributes.
    """
    key = (name, reserved)
    hit = _checked.get(key)
    if hit is not None:
        return hit
    if not isinstance(name, str):
        raise NamingError(f"a name must be a string, not {type(name).__name__} ({name!r})")
    if not name:
        raise NamingError("a name must not be empty")
    parts = tuple(name.split("."))
    for part in parts:
        if not part:
            raise NamingError(f"name {name!r} has an empty segment")
        if part.startswith("_"):
            raise NamingError(f"name {name!r}: segment {part!r} starts with an underscore")
        if not _SEGMENT.match(part):
            raise NamingError(
                f"name {name!r}: segment {part!r} may only hold ASCII letters, digits and underscores"
            )
        if keyword.iskeyword(part):
            raise NamingError(f"name {name!r}: segment {part!r} is a Python keyword")
        if part in reserved:
            raise NamingError(
                f"name {name!r}: segment {part!r} clashes with a method or attribute of the trajectory"
            )
    if len(_checked) < 100_000:
        _checked[key] = parts
    return parts


def run_name(index: int) -> str:
    """pypet's run name: ``run_00000003``."""
    return f"run_{index:08d}"


def run_set_name(index: int, bucket: int = 1000) -> str:
    """The bucket group a run's per-run data lives in, so no group holds more than 1000 runs."""
    return f"run_set_{index // bucket:05d}"


ITEM_SEP = ":"  # never in a name segment: ``money:amount`` is item ``amount`` of result ``money``


def item_key(name: str, item: str) -> str:
    """How run stores (in memory and on disk) address one item of a multi-item result."""
    return f"{name}{ITEM_SEP}{item}"


def split_item(key: str) -> tuple[str, str | None]:
    """``money:amount`` -> (``money``, ``amount``); a plain name -> (name, None)."""
    name, sep, item = key.partition(ITEM_SEP)
    return (name, item) if sep else (key, None)
