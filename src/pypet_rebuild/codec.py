"""The value codec: Python and numpy values <-> HDF5 objects, with their types kept.

Every stored object carries a ``kind`` attribute naming the Python type it came from, so a
tuple comes back a tuple, a ``np.float32`` scalar a ``np.float32`` and a Python int an int.
This module is the only place that knows how a value looks on disk.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from .errors import StorageError, UnsupportedValueError

KIND = "kind"
_PY_SCALARS: dict[type, str] = {bool: "bool", int: "int", float: "float", complex: "complex"}
_PY_DTYPES = {"bool": np.dtype(bool), "int": np.dtype(np.int64), "float": np.dtype(np.float64),
              "complex": np.dtype(np.complex128)}
_ARRAY_KINDS = frozenset("biufcSU")
_COLUMN_KINDS = frozenset("biufc")
_INT64 = (-(2**63), 2**63 - 1)
STR_DTYPE = h5py.string_dtype("utf-8")
CHECKSUMS = True  # fletcher32 on every dataset that can carry it (off only to measure its cost)


@dataclass(frozen=True)
class Pickled:
    """Marks a value to be stored pickled. Loading it back needs ``allow_pickle=True``."""

    value: Any


def holds_pickled(value: Any) -> bool:
    """Whether ``value`` is, or contains, a :class:`Pickled` value."""
    if isinstance(value, Pickled):
        return True
    if type(value) in (list, tuple):
        return any(holds_pickled(v) for v in value)
    if type(value) is dict:
        return any(holds_pickled(v) for v in value.values())
    return False


def describe(value: Any) -> str:
    return type(value).__qualname__


def check_value(value: Any, where: str) -> None:
    """Raise UnsupportedValueError unless ``value`` can be stored; ``where`` names the node."""
    t = type(value)
    if t in _PY_SCALARS or t is str or value is None:
        if t is int and not _INT64[0] <= value <= _INT64[1]:
            raise UnsupportedValueError(f"{where}: int {value} does not fit in 64 bits")
        return
    if t is bytes or t is Pickled:
        return
    if isinstance(value, np.ndarray | np.generic):
        if value.dtype.kind not in _ARRAY_KINDS:
            raise UnsupportedValueError(
                f"{where}: numpy dtype {value.dtype} is not supported "
                "(numeric, bool and fixed-length string dtypes are); wrap it in Pickled(...) to store it pickled"
            )
        return
    if t is list or t is tuple:
        for i, item in enumerate(value):
            check_value(item, f"{where}[{i}]")
        return
    if t is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise UnsupportedValueError(
                    f"{where}: dict keys must be strings, not {describe(key)} ({key!r})"
                )
            check_value(item, f"{where}[{key!r}]")
        return
    raise UnsupportedValueError(
        f"{where}: values of type {describe(value)} are not supported "
        "(bool, int, float, complex, str, bytes, None, numpy scalars and arrays, lists, tuples, "
        "dicts with string keys); wrap it in Pickled(...) to store it pickled"
    )


def value_kind(value: Any) -> str:
    """The family a value belongs to, used to check explored values against a default."""
    t = type(value)
    if t is bool or isinstance(value, np.bool_):
        return "bool"
    if t is int or isinstance(value, np.integer):
        return "int"
    if t is float or isinstance(value, np.floating):
        return "float"
    if t is complex or isinstance(value, np.complexfloating):
        return "complex"
    if isinstance(value, str | np.str_):
        return "str"
    if isinstance(value, bytes | np.bytes_):
        return "bytes"
    if isinstance(value, np.ndarray):
        return "ndarray"
    return t.__name__


# ---------------------------------------------------------------------------------------------
# Whole values as HDF5 objects (parameters, results that cannot be columns)


def _homogeneous_scalar_kind(items: list[Any] | tuple[Any, ...]) -> str | None:
    if not items:
        return None
    first = type(items[0])
    if first is str:
        return "str" if all(type(x) is str and "\x00" not in x for x in items) else None
    kind = _PY_SCALARS.get(first)
    if kind is None or any(type(x) is not first for x in items):
        return None
    return kind


def _array_for_disk(arr: np.ndarray) -> np.ndarray:
    if arr.dtype.kind == "U":
        return np.char.encode(arr, "utf-8", "surrogatepass")  # a lone surrogate ('\ud800') round-trips too
    if arr.dtype.kind == "c" and not arr.dtype.isnative:  # h5py stores a big-endian complex256
        return arr.astype(arr.dtype.newbyteorder("="))   # unswapped: write it native ("dtype" keeps ">")
    return arr


def new_dataset(group: h5py.Group, key: str, data: Any = None, **kwargs: Any) -> h5py.Dataset:
    """Create ``group[key]``: the one place the project makes a dataset. Data of a fixed-size
    type gets chunked with HDF5's fletcher32 checksum, which every read verifies (variable-length
    strings, scalars and empty datasets cannot carry a filter in HDF5 and stay unchecked)."""
    dtype = np.dtype(kwargs["dtype"]) if kwargs.get("dtype") is not None else None
    if dtype is None and data is not None and not isinstance(data, h5py.Empty):
        dtype = np.asarray(data).dtype
    shape = kwargs.get("shape", None if data is None or isinstance(data, h5py.Empty) else np.shape(data))
    chunked = kwargs.get("chunks") is not None or (shape is not None and len(shape) > 0
                                                  and int(np.prod(shape)) > 0)
    if CHECKSUMS and chunked and dtype is not None and dtype.kind != "O" and h5py.check_vlen_dtype(dtype) is None:
        kwargs.setdefault("chunks", True)
        kwargs["fletcher32"] = True
    return group.create_dataset(key, data=data, **kwargs)


def write_value(group: h5py.Group, key: str, value: Any) -> None:
    """Store ``value`` as ``group[key]`` (a dataset, or a group for containers)."""
    t = type(value)
    kind = _PY_SCALARS.get(t)
    if kind is not None:
        ds = new_dataset(group, key, data=np.asarray(value, dtype=_PY_DTYPES[kind]))
    elif t is str and "\x00" not in value:
        ds = new_dataset(group, key, data=value, dtype=STR_DTYPE)
        kind = "str"
    elif t is str:  # HDF5 strings cannot hold NUL: keep the UTF-8 bytes
        ds = new_dataset(group, key, data=np.frombuffer(value.encode(), dtype=np.uint8))
        kind = "str0"
    elif value is None:
        ds = new_dataset(group, key, data=h5py.Empty("f"))
        kind = "none"
    elif t is bytes:
        ds = new_dataset(group, key, data=np.frombuffer(value, dtype=np.uint8))
        kind = "bytes"
    elif t is Pickled:
        raw = pickle.dumps(value.value, protocol=pickle.HIGHEST_PROTOCOL)
        ds = new_dataset(group, key, data=np.frombuffer(raw, dtype=np.uint8))
        kind = "pickle"
    elif isinstance(value, np.ndarray | np.generic):
        arr = np.asarray(value)
        kind = "ndarray" if isinstance(value, np.ndarray) else "npscalar"
        ds = new_dataset(group, key, data=_array_for_disk(arr))
        ds.attrs["dtype"] = arr.dtype.str
    elif t is list or t is tuple:
        kind = t.__name__
        elem = _homogeneous_scalar_kind(value)
        if elem == "str":
            ds = new_dataset(group, key, data=np.array(value, dtype=object), dtype=STR_DTYPE)
        elif elem is not None:
            ds = new_dataset(group, key, data=np.array(value, dtype=_PY_DTYPES[elem]))
        else:
            sub = group.create_group(key)
            sub.attrs[KIND] = kind
            for i, item in enumerate(value):
                write_value(sub, str(i), item)
            return
        ds.attrs["elem"] = elem
    elif t is dict:
        sub = group.create_group(key)
        sub.attrs[KIND] = "dict"
        sub.attrs.create("keys", data=json.dumps(list(value.keys())), dtype=STR_DTYPE)
        for i, item in enumerate(value.values()):
            write_value(sub, str(i), item)
        return
    else:
        check_value(value, key)  # raises with a clear message
        raise AssertionError("unreachable")
    ds.attrs[KIND] = kind


def _array_from_disk(ds: h5py.Dataset, dtype: str) -> np.ndarray:
    arr = ds[()]
    target = np.dtype(dtype)
    if target.kind == "U":
        return np.char.decode(np.asarray(arr), "utf-8", "surrogatepass").astype(target)
    return np.asarray(arr, dtype=target)


class PickleRefusedError(StorageError):
    """A stored value is pickled and the file was loaded without ``allow_pickle``."""


def read_value(obj: h5py.Group | h5py.Dataset, allow_pickle: bool = False, where: str = "") -> Any:
    """Read back what :func:`write_value` stored, as the same type."""
    kind = _attr_str(obj, KIND)
    if isinstance(obj, h5py.Group):
        if kind == "dict":
            keys = json.loads(_attr_str(obj, "keys"))
            return {k: read_value(obj[str(i)], allow_pickle, where) for i, k in enumerate(keys)}
        if kind in ("list", "tuple"):
            items = [read_value(obj[str(i)], allow_pickle, where) for i in range(len(obj))]
            return items if kind == "list" else tuple(items)
        raise StorageError(f"{obj.name}: not a stored value (kind {kind!r})")
    if kind in _PY_DTYPES:
        return {"bool": bool, "int": int, "float": float, "complex": complex}[kind](obj[()])
    if kind == "str":
        return obj.asstr()[()]
    if kind == "none":
        return None
    if kind == "str0":
        return obj[()].tobytes().decode()
    if kind == "bytes":
        return obj[()].tobytes()
    if kind == "pickle":
        if not allow_pickle:
            raise PickleRefusedError(
                f"{where or obj.name} holds a pickled value; load the file with allow_pickle=True "
                "to unpickle it (only do that for files you trust)"
            )
        return pickle.loads(obj[()].tobytes())
    if kind in ("ndarray", "npscalar"):
        arr = _array_from_disk(obj, _attr_str(obj, "dtype"))
        return arr if kind == "ndarray" else arr[()]
    if kind in ("list", "tuple"):
        elem = _attr_str(obj, "elem")
        elems: list[Any] = list(obj.asstr()[()]) if elem == "str" else obj[()].tolist()
        return elems if kind == "list" else tuple(elems)
    raise StorageError(f"{obj.name}: unknown stored kind {kind!r}")


def _attr_str(obj: h5py.HLObject, name: str) -> str:
    v = obj.attrs.get(name)
    if v is None:
        raise StorageError(f"{obj.name}: missing attribute {name!r}; not written by pypet-hpc")
    return v.decode() if isinstance(v, bytes) else str(v)


# ---------------------------------------------------------------------------------------------
# Columns: one value per run, all of the same kind, dtype and shape


ColumnSpec = tuple[str, str, tuple[int, ...]]  # (kind, dtype.str, shape of one value)


def column_spec(value: Any) -> ColumnSpec | None:
    """How ``value`` fits in a column, or None when it must be stored on its own."""
    t = type(value)
    kind = _PY_SCALARS.get(t)
    if kind is not None:
        return (kind, _PY_DTYPES[kind].str, ())
    if t is str:
        return ("str", "str", ()) if "\x00" not in value else None
    if isinstance(value, np.ndarray):
        if value.dtype.kind in _COLUMN_KINDS and value.size and (value.dtype.isnative or value.dtype.kind != "c"):
            return ("ndarray", value.dtype.str, value.shape)  # (h5py makes a big-endian complex256 native)
        return None
    if isinstance(value, np.generic) and value.dtype.kind in _COLUMN_KINDS:
        return ("npscalar", value.dtype.str, ())
    return None


def scalar_column(values: Sequence[Any]) -> tuple[ColumnSpec, np.ndarray] | None:
    """Values that are all Python scalars of one type (bool, int, float, complex) as one array,
    at numpy speed; None for anything else (the caller then goes value by value)."""
    if isinstance(values, np.ndarray) or not len(values):
        return None
    types = set(map(type, values))
    if len(types) != 1:
        return None
    kind = _PY_SCALARS.get(types.pop())
    if kind is None:
        return None
    try:
        array = np.array(values, dtype=_PY_DTYPES[kind])
    except OverflowError:  # an int beyond 64 bits: the value-by-value path names it
        return None
    return (kind, _PY_DTYPES[kind].str, ()), array


def column_dtype(spec: ColumnSpec) -> Any:
    return STR_DTYPE if spec[0] == "str" else np.dtype(spec[1])


def column_array(spec: ColumnSpec, values: list[Any]) -> np.ndarray:
    """Stack same-spec values into one array with a leading run axis."""
    if spec[0] == "str":
        return np.array(values, dtype=object)
    if spec[0] == "ndarray":
        return np.stack(values) if values else np.empty((0, *spec[2]), dtype=spec[1])
    return np.array(values, dtype=spec[1])


def column_element(spec_kind: str, element: Any) -> Any:
    """Turn one element read from a column back into its original type."""
    if spec_kind == "int":
        return int(element)
    if spec_kind == "float":
        return float(element)
    if spec_kind == "bool":
        return bool(element)
    if spec_kind == "complex":
        return complex(element)
    if spec_kind == "str":
        return element.decode() if isinstance(element, bytes) else str(element)
    if spec_kind == "ndarray":
        return np.asarray(element)
    return np.asarray(element)[()]  # a numpy scalar of the column's dtype
