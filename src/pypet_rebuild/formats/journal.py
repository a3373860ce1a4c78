"""A rollback journal: crash-safe changes to an HDF5 file in place (the journal's bytes live here).

HDF5 writes the file through a :class:`JournaledFile` (h5py's ``fileobj`` driver). Bytes past the
file's old end are new: they go straight to disk, and a rollback cuts them off. Bytes the file
held before (HDF5's metadata, a chunk rewritten) are kept in memory until a checkpoint; a
checkpoint first appends their old content to the journal ``.<name>.journal`` and fsyncs it, then
writes them. The commit is the journal's removal, after the file is fsynced. Whoever opens the
file next and finds a journal whose writer is gone (its flock is free) rolls it back first: the
file is then byte for byte what it was before. So a kill at any moment leaves the old file or
the new one, and a reader that opens the file during the change reads the old one (the new
bytes are past the old end of file, which HDF5 does not look at before the commit).

Journal layout: header ``MAGIC, old size (u64)``, then records ``offset (u64), length (u64),
crc32 (u32), old bytes``; a torn last record (a kill while it was written) is ignored, as its
bytes were never overwritten.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import signal
import struct
import time
import zlib
from pathlib import Path

from ..errors import LockBusyError, StorageError

log = logging.getLogger(__name__)
MAGIC = b"PYPETJ01"
HEADER = struct.Struct("<8sQ")
RECORD = struct.Struct("<QQI")
PAGE = 4096
OVERLAY_BYTES = 32 << 20  # old bytes changed in memory before a checkpoint writes them: bounds memory
READER_WAIT = 600.0  # seconds a checkpoint waits for readers of the file to close it


KILL_AT = "PYPET_HPC_KILL_AT"  # tests: a merge kills itself (SIGKILL) at the named step


def kill_point(step: str) -> None:
    """Die here by SIGKILL when the environment names this step (the crash tests' hook)."""
    if os.environ.get(KILL_AT) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def journal_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.journal")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JournaledFile(io.RawIOBase):
    """``path`` opened for a crash-safe change: pass it to ``h5py.File(obj, "r+")``, close that,
    then :meth:`commit` (or :meth:`rollback` after a failure). Holds the journal's flock
    throughout, so no one rolls back a live change."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.journal = journal_path(self.path)
        self.fd = os.open(self.path, os.O_RDWR)
        try:
            self.size = os.fstat(self.fd).st_size  # the committed file's length
            self.jfd = os.open(self.journal, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        except BaseException:
            os.close(self.fd)
            raise
        fcntl.flock(self.jfd, fcntl.LOCK_EX)
        os.write(self.jfd, HEADER.pack(MAGIC, self.size))
        os.fsync(self.jfd)
        _fsync_dir(self.path.parent)
        self.pos = 0
        self.overlay: dict[int, bytearray] = {}  # page -> its new content, not yet on disk
        self.journaled: set[int] = set()  # pages whose old content is in the journal (and fsynced)
        self.exclusive = False  # holds the file's lock against readers (HDF5's flock)
        self.reader_wait = READER_WAIT
        self.written = 0  # bytes HDF5 wrote
        self.discard = False  # after a failure: HDF5's last writes go nowhere (the rollback undoes all)

    # the file-object protocol h5py's fileobj driver uses
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            self.pos = os.fstat(self.fd).st_size + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        mv = memoryview(buf).cast("B")
        off, n = self.pos, len(mv)
        got = os.preadv(self.fd, [mv], off)
        if self.overlay and off < self.size:
            end = min(off + n, self.size)
            first, last = off // PAGE, (end - 1) // PAGE
            pages = (range(first, last + 1) if last - first < len(self.overlay)
                     else sorted(p for p in self.overlay if first <= p <= last))
            for page in pages:
                data = self.overlay.get(page)
                if data is None:
                    continue
                a, b = max(off, page * PAGE), min(end, page * PAGE + len(data))
                mv[a - off:b - off] = data[a - page * PAGE:b - page * PAGE]
        self.pos += got
        return got

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        mv = memoryview(data).cast("B")
        off, n = self.pos, len(mv)
        if self.discard:
            self.pos += n
            return n
        split = min(max(self.size - off, 0), n)  # the first `split` bytes overwrite old bytes
        if split < n:
            os.pwrite(self.fd, mv[split:], off + split)
        page = off // PAGE
        while split and page * PAGE < off + split:
            a, b = max(off, page * PAGE), min(off + split, (page + 1) * PAGE)
            if page in self.journaled:
                os.pwrite(self.fd, mv[a - off:b - off], a)
            else:
                buf = self.overlay.get(page)
                if buf is None:
                    buf = self.overlay[page] = bytearray(os.pread(self.fd, min(PAGE, self.size - page * PAGE),
                                                                  page * PAGE))
                buf[a - page * PAGE:b - page * PAGE] = mv[a - off:b - off]
            page += 1
        self.pos += n
        self.written += n
        if len(self.overlay) * PAGE > OVERLAY_BYTES:
            self.checkpoint()
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self.pos if size is None else size
        os.ftruncate(self.fd, max(size, self.size))  # the old bytes stay until the commit
        return size

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        return self.fd

    def reserve(self, extra: int) -> None:
        """Allocate ``extra`` bytes past the old end, so a full disk shows here, before HDF5 writes."""
        if extra > 0:
            os.posix_fallocate(self.fd, self.size, extra)

    def checkpoint(self) -> None:
        """Save the old content of the changed pages in the journal (fsynced), then write them."""
        if not self.overlay:
            return
        self._exclude_readers()
        pages = sorted(self.overlay)
        start = 0
        records = []
        while start < len(pages):  # one record per run of adjacent pages
            stop = start + 1
            while stop < len(pages) and pages[stop] == pages[stop - 1] + 1:
                stop += 1
            a = pages[start] * PAGE
            b = min(pages[stop - 1] * PAGE + PAGE, self.size)
            old = os.pread(self.fd, b - a, a)
            records.append(RECORD.pack(a, len(old), zlib.crc32(old)) + old)
            start = stop
        os.lseek(self.jfd, 0, os.SEEK_END)
        for rec in records:
            os.write(self.jfd, rec)
        os.fsync(self.jfd)
        kill_point("journaled")
        for k, page in enumerate(pages):
            os.pwrite(self.fd, self.overlay[page], page * PAGE)
            if k == len(pages) // 2:
                kill_point("applying")
        self.journaled.update(pages)
        self.overlay.clear()

    def _exclude_readers(self) -> None:
        """Take the file's flock (HDF5's own lock) before old bytes change: wait until readers that
        opened it have closed it, and keep new ones out (they wait, see :func:`settle`)."""
        if self.exclusive:
            return
        deadline = time.monotonic() + self.reader_wait
        said = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockBusyError(f"{self.path}: a reader has kept the file open for over "
                                        f"{self.reader_wait:.0f} s; close it and merge again") from None
                if not said:
                    log.warning("waiting for readers of %s to close it", self.path)
                    said = True
                time.sleep(0.05)
            except OSError as exc:  # a filesystem without flock: nothing to wait for
                log.debug("%s: no flock (%s)", self.path, exc)
                break
        self.exclusive = True

    def commit(self) -> None:
        """Make the change durable and final: write the last changed pages, fsync, drop the journal."""
        self.checkpoint()
        os.fsync(self.fd)
        kill_point("applied")
        os.unlink(self.journal)
        _fsync_dir(self.path.parent)
        self._release()

    def rollback(self) -> None:
        """Give the change up: the file is again what it was."""
        self.overlay.clear()
        try:
            _roll_back(self.fd, self.jfd, self.path)
            os.unlink(self.journal)
            _fsync_dir(self.path.parent)
        finally:
            self._release()

    def _release(self) -> None:
        for fd in (self.jfd, self.fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.jfd = self.fd = -1

    def close(self) -> None:  # h5py closes the file object; the descriptors go with commit/rollback
        pass


def _roll_back(fd: int, jfd: int, path: Path) -> None:
    raw = os.pread(jfd, HEADER.size, 0)
    if len(raw) < HEADER.size:  # killed before the header was written: nothing was changed yet
        return
    magic, size = HEADER.unpack(raw)
    if magic != MAGIC:
        raise StorageError(f"{journal_path(path)}: not a pypet-hpc journal; move it aside")
    pos = HEADER.size
    while True:
        head = os.pread(jfd, RECORD.size, pos)
        if len(head) < RECORD.size:
            break
        offset, length, crc = RECORD.unpack(head)
        old = os.pread(jfd, length, pos + RECORD.size)
        if len(old) < length or zlib.crc32(old) != crc:
            break  # torn: a kill while the journal was written, before those bytes were overwritten
        os.pwrite(fd, old, offset)
        pos += RECORD.size + length
    os.ftruncate(fd, size)
    os.fsync(fd)


def settle(path: Path) -> bool:
    """Roll back a change to ``path`` whose writer is gone (a killed merge); returns whether a
    change is still live (its writer runs: the file reads as before the change until its commit).
    Cheap when there is no journal: one stat."""
    journal = journal_path(path)
    if not journal.exists():
        return False
    try:
        jfd = os.open(journal, os.O_RDWR)
    except FileNotFoundError:
        return False
    except PermissionError:
        raise StorageError(f"{path}: an interrupted merge left {journal.name}; "
                           "run `pypet-hpc merge` (or open it once with write access) to roll it back") from None
    try:
        try:
            fcntl.flock(jfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        try:
            if os.fstat(jfd).st_ino != os.stat(journal).st_ino:
                return False  # rolled back and removed meanwhile
        except FileNotFoundError:
            return False
        try:
            fd = os.open(path, os.O_RDWR)
        except PermissionError:
            raise StorageError(f"{path}: an interrupted merge left {journal.name}; run `pypet-hpc merge` "
                               "(with write access) to roll it back") from None
        try:
            _roll_back(fd, jfd, path)
        finally:
            os.close(fd)
        os.unlink(journal)
        _fsync_dir(path.parent)
        log.warning("%s: rolled back an interrupted merge", path)
        return False
    finally:
        os.close(jfd)
