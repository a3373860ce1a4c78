"""File primitives every format uses: atomic (and durable) replacement, HDF5 open and attributes."""

from __future__ import annotations

import errno
import gc
import logging
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..codec import STR_DTYPE
from ..errors import StorageError
from .journal import READER_WAIT, settle

log = logging.getLogger(__name__)
LOCKING: Any = "best-effort"  # HDF5 file locking: on where the filesystem supports it


def fsync_path(path: Path) -> None:
    """Make a file's (or a directory's, after a rename in it) content durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` all at once: readers see the old content or the new, never
    a torn file. ``durable`` also fsyncs the file and its directory, so the new content survives
    a crash of the machine (every file a sweep depends on is written this way)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    raw = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_path(p.parent)


def reserve(path: Path, size: int) -> None:
    """Make ``path`` hold at least ``size`` bytes of allocated disk, so that a full disk, quota or
    file size limit shows here (OSError) instead of in the middle of an HDF5 write. HDF5 cuts
    the file back to what it uses when it closes it."""
    fd = os.open(path, os.O_RDWR)
    try:
        if os.fstat(fd).st_size < size:
            os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def discard_writes(f: h5py.File) -> None:
    """Point the descriptor of a file being given up (a write failed: disk full...) at /dev/null.
    HDF5 still holds what it could not write and retries it on every close, which fails again
    (and can crash the process later); now those writes succeed and go nowhere."""
    try:
        nul = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(nul, f.id.get_vfd_handle())
        finally:
            os.close(nul)
    except (OSError, ValueError, RuntimeError) as why:  # the file is closed already
        log.debug("%s: %s", type(why).__name__, why)


def abandon_h5(f: h5py.File, exc: BaseException) -> None:
    """Close a file given up after ``exc`` in an order that cannot crash: its writes discarded
    (:func:`discard_writes`, called first, before any handle is dropped), every Python handle
    into it released (the traceback's frames hold them), then the file."""
    discard_writes(f)
    traceback.clear_frames(exc.__traceback__)
    gc.collect()
    try:
        f.close()
    except (OSError, RuntimeError, ValueError) as again:
        log.debug("closing a file given up after %s: %s", type(exc).__name__, again)


def os_reason(exc: BaseException) -> str:
    """The one-line reason of an OS or HDF5 write error ("No space left on device")."""
    m = re.search(r"error message = '([^']*)'", str(exc))
    if m:
        return m.group(1)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def disk_full(exc: BaseException) -> bool:
    """Whether an error says a disk, quota or file size limit is full (errno, or HDF5's text)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return True
    return any(word in str(exc) for word in ("No space left", "Disk quota exceeded", "File too large"))


def replace_durably(src: Path, dst: Path) -> None:
    """``os.replace(src, dst)`` and fsync the directory, for files written (and fsynced) elsewhere."""
    os.replace(src, dst)
    fsync_path(dst.parent)


def open_h5(path: str | os.PathLike[str], mode: str = "r", locking: Any = LOCKING) -> h5py.File:
    """Open an HDF5 file, turning the usual failures into one clear StorageError."""
    p = Path(path)
    if mode == "r":
        if not p.exists():
            raise StorageError(f"{p}: no such file")
        if p.is_dir():
            raise StorageError(f"{p}: is a directory, not an HDF5 file")
        if settle(p):  # a merge writes into it: the old content reads as before, except while it commits
            return _open_waiting(p, locking)
    try:
        return h5py.File(p, mode, locking=locking)
    except OSError as exc:
        if mode == "r" and not h5py.is_hdf5(p):
            raise StorageError(f"{p}: not an HDF5 file") from None
        raise StorageError(f"{p}: cannot open ({exc})") from None


def _open_waiting(p: Path, locking: Any) -> h5py.File:
    """Open a file a merge is changing; while the merge commits it holds the file's lock: wait."""
    deadline = time.monotonic() + READER_WAIT
    said = False
    while True:
        try:
            return h5py.File(p, "r", locking=locking)
        except OSError as exc:
            if "unable to lock file" not in str(exc) or time.monotonic() > deadline:
                raise StorageError(f"{p}: cannot open ({exc})") from None
            if not said:
                log.info("%s: waiting for a merge to commit", p)
                said = True
            time.sleep(0.02)


def hdf5_version() -> str:
    """The version of the HDF5 library h5py runs on (for provenance)."""
    return str(h5py.version.hdf5_version)


def sync_h5(f: h5py.File) -> None:
    """Flush an open HDF5 file and fsync it."""
    f.flush()
    os.fsync(f.id.get_vfd_handle())


def set_attrs(obj: h5py.HLObject, **attrs: Any) -> None:
    """Set attributes; strings are stored as UTF-8 variable-length strings."""
    for key, value in attrs.items():
        if isinstance(value, str):
            obj.attrs.create(key, value, dtype=STR_DTYPE)
        else:
            obj.attrs[key] = value


def get_attr(obj: h5py.HLObject, key: str, default: Any = None) -> Any:
    """An attribute as a Python value (bytes decoded), or ``default``."""
    v = obj.attrs.get(key, default)
    return v.decode() if isinstance(v, bytes) else v


VERIFY_BLOCK_BYTES = 32 << 20  # read per step when verifying: bounds memory


def damaged_datasets(f: h5py.File) -> list[str]:
    """The datasets of an open file that cannot be read back whole: a fletcher32 checksum that
    does not match, a chunk or string heap HDF5 cannot decode. Reads every byte, a block at a time."""
    bad: list[str] = []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        try:
            if obj.shape is None or obj.ndim == 0 or obj.chunks is None:
                obj[()]
                return
            row_bytes = max(1, obj.dtype.itemsize * int(np.prod(obj.shape[1:], dtype=np.int64)))
            step = max(obj.chunks[0], (VERIFY_BLOCK_BYTES // row_bytes) // obj.chunks[0] * obj.chunks[0])
            for a in range(0, obj.shape[0], step):
                obj[a:a + step]
        except (OSError, ValueError, KeyError, RuntimeError):
            bad.append(obj.name)

    try:
        f.visititems(visit)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # a damaged group or link table
        bad.append(f"(the group structure: {type(exc).__name__}: {exc})")
    return bad


def verify_h5(path: str | os.PathLike[str]) -> str | None:
    """What is damaged in the HDF5 file ``path`` (one line), or None when every dataset reads back."""
    try:
        with open_h5(path) as f:
            bad = damaged_datasets(f)
    except StorageError as exc:
        return str(exc).removeprefix(f"{path}: ")
    if not bad:
        return None
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return f"damaged: {', '.join(bad[:3])}{more}"
