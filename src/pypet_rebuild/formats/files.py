"""File primitives every format uses: atomic (and durable) replacement, HDF5 open and attributes."""

from __future__ import annotations

import errno
import gc
import glob
import logging
import os
import re
import shutil
import socket
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from filelock import FileLock, Timeout

from ..codec import STR_DTYPE
from ..errors import DamagedFileError, LockBusyError, NoSpaceError, StorageError
from .journal import READER_WAIT, settle

log = logging.getLogger(__name__)
LOCKING: Any = "best-effort"  # HDF5 file locking: on where the filesystem supports it
LOCK_TIMEOUT = 600.0  # seconds a merge waits for another merge of the same target
LOCK_NOTICE = 2.0  # after this long waiting, a merge says whom it waits for


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


@contextmanager
def merge_lock(target: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the lock of merges into ``target``. Its side file names the holder (pid and host);
    a merge that has waited :data:`LOCK_NOTICE` seconds says whom it waits for. The lock is the
    kernel's (flock): it goes when its holder dies, so no lock of a dead process can remain;
    a stopped or hung holder keeps it, and the waiting merge gives up after ``timeout``."""
    lock = FileLock(target.with_name(f".{target.name}.lock"))  # hidden: it stays after the merge
    holder = target.with_name(f".{target.name}.lock.holder")
    try:
        lock.acquire(timeout=min(timeout, LOCK_NOTICE))
    except Timeout:
        who = _holder(holder)
        log.warning("waiting for another merge (%s) into %s, up to %.0f s (--lock-timeout)", who, target, timeout)
        try:
            lock.acquire(timeout=max(0.0, timeout - LOCK_NOTICE))
        except Timeout:
            raise LockBusyError(f"{target}: another merge ({who}) has held {lock.lock_file} for over {timeout:.0f} s; "
                                "if it is stopped or hung, end it, or raise --lock-timeout") from None
    try:
        try:
            atomic_write(holder, f"{os.getpid()} {socket.gethostname()}\n", durable=False)
        except OSError as exc:  # who holds the lock is a courtesy to waiting merges (a full disk...)
            log.debug("cannot write %s: %s", holder, exc)
        yield
    finally:
        holder.unlink(missing_ok=True)
        lock.release()


def _holder(side_file: Path) -> str:
    try:
        pid, host = side_file.read_text().split()[:2]
    except (OSError, ValueError):
        return "holder unknown"
    return f"pid {pid} on host {host}"


@contextmanager
def rewrite_locked(target: Path, extra_bytes: int, timeout: float = LOCK_TIMEOUT,
                   source: Path | None = None) -> Iterator[Path]:
    """A working copy of ``target`` (or of ``source``) beside it, under the merge lock of
    ``target``; when the block ends without error the copy replaces ``target`` atomically and
    durably, otherwise it is removed. A kill at any moment leaves the old file or the new one
    (a temp file left by a kill is removed by the next merge or rewrite)."""
    with merge_lock(target, timeout):
        for stale in target.parent.glob(f".{glob.escape(target.name)}.merging-*"):
            stale.unlink()  # left by a killed merge or rewrite (we hold the lock)
        start = source or target
        damage = verify_h5(start)
        if damage is not None:  # never carry damage forward
            raise DamagedFileError(f"{start} is damaged: {damage.removeprefix('damaged: ')}; it is left as it was")
        tmp = target.with_name(f".{target.name}.merging-{os.getpid()}")
        needed = start.stat().st_size + extra_bytes + (256 << 10)
        try:
            try:
                shutil.copyfile(start, tmp)
                reserve(tmp, needed)
            except OSError as exc:
                raise NoSpaceError(f"{tmp.parent}: no space to rewrite {target.name} (it needs about "
                                   f"{needed / 1e6:.1f} MB: {os_reason(exc)}); it is left as it was") from None
            yield tmp
            replace_durably(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
