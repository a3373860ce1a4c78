"""Name rules for trajectory nodes and pypet's run wildcards, checked once per distinct name and cached.

pypet's wildcards: ``$`` (or ``crun``) is the current run's name, ``$set`` (or ``crunset``) its
run set of 1000 runs. A run stores a result named ``neuron.$``, ``runs.$.z`` or ``$set.$.z``
under the name without them (``neuron``, ``z``): the same name in every run, so one column.
Reading accepts pypet's paths again (``results.runs.run_00000003.z``, ``results.neuron.crun``).
"""

from __future__ import annotations

import keyword
import re

from .errors import InvalidNameError

RUN_SET_SIZE = 1000  # runs per run set, as pypet's make_set_name
RUN_WILDCARDS = frozenset({"$", "crun"})
SET_WILDCARDS = frozenset({"$set", "crunset"})
WILDCARDS = RUN_WILDCARDS | SET_WILDCARDS
# the segments pypet's paths use for runs and run sets: reserved, so that reading them is unambiguous
_RUN_LIKE = re.compile(r"(run|r)_(\d+|ALL|A)\Z")
_SET_LIKE = re.compile(r"(run_set|rts|runtoset)_(\d+|ALL|A)\Z")
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*\Z")
_checked: dict[tuple[str, frozenset[str], bool], tuple[str, ...]] = {}
_run_forms: dict[tuple[str, frozenset[str]], str] = {}


def split_name(name: str, reserved: frozenset[str] = frozenset(), what: str = "",
               wildcards: bool = False) -> tuple[str, ...]:
    """Split a dotted name into segments, raising :class:`InvalidNameError` naming the bad
    segment, the reason and a valid spelling.

    A segment is ASCII letters, digits and underscores, does not start with an underscore,
    is not a Python keyword, does not clash with a ``reserved`` attribute name (the methods
    of the view it would be reached through) and is not one of pypet's run segments
    (``run_00000003``, ``r_3``, ``run_set_00000``, ``rts_0``, ``crun``, ``crunset``). Segments may
    start with a digit (``product.1_10``) so that the seed's names work; those are reached with
    ``[]`` rather than attributes. With ``wildcards``, ``$``, ``$set``, ``crun`` and ``crunset``
    segments (and a ``runs`` right before one) are accepted: :func:`run_form` resolves them.
    """
    key = (name, reserved, wildcards)
    hit = _checked.get(key)
    if hit is not None:
        return hit
    label = f"{what} name" if what else "name"
    if not isinstance(name, str):
        raise InvalidNameError(f"a {label} must be a string, not {type(name).__name__} ({name!r})")
    if not name:
        raise InvalidNameError(f"a {label} must not be empty; a valid spelling: 'z'")
    parts = tuple(name.split("."))
    for i, part in enumerate(parts):
        if wildcards and (part in WILDCARDS or (part == "runs" and parts[i + 1:i + 2] and parts[i + 1] in WILDCARDS)):
            continue
        why = _problem(part, reserved, wildcards)
        if why is not None:
            fixed = ".".join(_fixed(p, reserved, wildcards) for p in parts if p)
            sep = " " if why.startswith("has") else ": "
            raise InvalidNameError(f"{label} {name!r}{sep}{why}; a valid spelling: {fixed!r}")
    if len(_checked) < 100_000:
        _checked[key] = parts
    return parts


def _problem(part: str, reserved: frozenset[str], wildcards: bool) -> str | None:
    """Why ``part`` cannot be a segment, or None."""
    if not part:
        return "has an empty segment"
    if part.startswith("_"):
        return f"segment {part!r} starts with an underscore"
    if part.startswith("$"):
        if wildcards:
            return f"segment {part!r} is an unknown wildcard (known: '$' the current run, '$set' its run set)"
        return f"segment {part!r}: a wildcard ('$', '$set') belongs only in a name added during a run"
    if not _SEGMENT.match(part):
        return f"segment {part!r} may only hold ASCII letters, digits and underscores"
    if keyword.iskeyword(part):
        return f"segment {part!r} is a Python keyword"
    if part in reserved:
        return f"segment {part!r} clashes with a method or attribute of the trajectory"
    if part in WILDCARDS:
        return f"segment {part!r} stands for the current run, which exists only while a run executes"
    if _RUN_LIKE.match(part) or _SET_LIKE.match(part):
        return f"segment {part!r} is reserved for pypet's run paths (use '$' or '$set' in a run's names)"
    return None


def _fixed(part: str, reserved: frozenset[str], wildcards: bool) -> str:
    """A valid segment close to ``part``, for the error message's suggestion."""
    if wildcards and part in WILDCARDS:
        return part
    if part.startswith("$"):
        return ("$set" if part.startswith("$set") else "$") if wildcards else "x"
    if wildcards and (_RUN_LIKE.match(part) or _SET_LIKE.match(part)):
        return "$set" if _SET_LIKE.match(part) else "$"
    fixed = re.sub(r"[^A-Za-z0-9_]", "_", part).lstrip("_") or "x"
    if keyword.iskeyword(fixed) or fixed in reserved or _problem(fixed, reserved, False) is not None:
        fixed += "_"
    return fixed


def has_wildcard(name: str) -> bool:
    """Whether a dotted name holds a wildcard segment (``$``, ``$set``, ``crun``, ``crunset``)."""
    return ("$" in name or "crun" in name) and not WILDCARDS.isdisjoint(name.split("."))


def run_form(name: str, reserved: frozenset[str] = frozenset(), what: str = "result") -> str:
    """The name a run stores ``name`` under: its wildcard segments (and a ``runs`` before them)
    dropped, so that ``neuron.$``, ``runs.$.z`` and ``$set.$.z`` recur as ``neuron`` and ``z`` in
    every run. Resolved once per name and cached; raises :class:`InvalidNameError`."""
    key = (name, reserved)
    hit = _run_forms.get(key)
    if hit is not None:
        return hit
    parts = split_name(name, reserved, what, wildcards=True)
    form = name
    if not WILDCARDS.isdisjoint(parts):
        label = f"{what} name"
        if RUN_WILDCARDS.isdisjoint(parts):
            last = max(i for i, p in enumerate(parts) if p in SET_WILDCARDS)
            fixed = ".".join((*parts[:last + 1], "$", *parts[last + 1:]))
            raise InvalidNameError(f"{label} {name!r}: '$set' alone names a group of {RUN_SET_SIZE} runs, "
                                   f"not the run; a valid spelling: {fixed!r}")
        kept = [p for i, p in enumerate(parts) if p not in WILDCARDS
                and not (p == "runs" and parts[i + 1:i + 2] and parts[i + 1] in WILDCARDS)]
        if not kept:
            raise InvalidNameError(f"{label} {name!r} holds only wildcards, no name of its own; "
                                   f"a valid spelling: {name + '.z'!r}")
        form = ".".join(kept)
        split_name(form, reserved, what)
    if len(_run_forms) < 100_000:
        _run_forms[key] = form
    return form


def run_name(index: int) -> str:
    """pypet's run name: ``run_00000003``."""
    return f"run_{index:08d}"


def run_set_name(index: int, bucket: int = RUN_SET_SIZE) -> str:
    """The bucket group a run's per-run data lives in, so no group holds more than 1000 runs."""
    return f"run_set_{index // bucket:05d}"


def run_segment(segment: str) -> tuple[str, int | None] | None:
    """What a segment of a path being read names: ``("run", i)`` for ``run_00000003``/``r_3``,
    ``("set", k)`` for ``run_set_00000``/``rts_N`` (run N's set, as pypet), ``("run", None)`` or
    ``("set", None)`` for the current run (``crun``, ``$``) or its set (``crunset``, ``$set``);
    None for any other segment."""
    if segment in RUN_WILDCARDS:
        return ("run", None)
    if segment in SET_WILDCARDS:
        return ("set", None)
    match = _RUN_LIKE.match(segment)
    if match is not None and match.group(2).isdigit():
        return ("run", int(match.group(2)))
    match = _SET_LIKE.match(segment)
    if match is not None and match.group(2).isdigit():
        index = int(match.group(2))
        return ("set", index if match.group(1) == "run_set" else index // RUN_SET_SIZE)
    return None

