"""Immutable files named by their sha256, in a folder: the default blob store.

Layout under the data directory::

    blobs/ab/abcdef....kas   one file per distinct content, never modified
    tmp/                     uploads in progress, and blobs being removed
    reserve                  a few MiB held back, given up when the disk is full
                             so that the index can still record deletions

An upload is written to ``tmp/`` while it is hashed, then renamed into
``blobs/`` in one step, so a crash leaves either nothing or a whole file.
Removing a blob moves it to ``tmp/`` at once, then unlinks it: a download
that has it open or mapped keeps reading the same bytes until it ends.
Several processes may share the folder: renames are atomic, and what a
crash leaves in ``tmp/`` is removed once it is older than the grace period
(``collect_temporaries``), never while another process may still write it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import itertools
import mmap
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterable, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..errors import InsufficientStorageError
from .interfaces import Staged
from .shield import shielded

__all__ = ["LocalBlobs", "LocalReader", "TempBlob", "disk_error"]

#: Received pieces are gathered up to this size before one write.
WRITE_BATCH = 1 << 20
#: ...or up to this many pieces, well under the system's limit for one writev.
WRITE_BATCH_PIECES = 256
#: Space held back for the index to record deletions on a full disk.
RESERVE_BYTES = 4 << 20
#: Pieces of a streamed read.
STREAM_PIECE = 1 << 20

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_error(err: OSError) -> Exception:
    """The error to answer for a failed write: 507 for a full disk, else the error itself."""
    return InsufficientStorageError() if err.errno in _DISK_FULL_ERRNOS else err


def map_file(path: Path) -> memoryview:
    """The file at ``path``, mapped read-only (empty files cannot be mapped: empty view)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
    finally:
        os.close(fd)  # the map holds the file by itself


@dataclass(frozen=True, slots=True)
class LocalReader:
    """A blob's bytes in memory: a mapped file, or a small upload held whole."""

    sha256: str
    mapped: memoryview

    @property
    def size(self) -> int:
        return self.mapped.nbytes

    def buffer(self) -> memoryview:
        return self.mapped

    async def read(self, start: int, stop: int) -> memoryview:
        return self.mapped[start:stop]

    async def stream(self, start: int, stop: int) -> AsyncIterator[memoryview]:
        for at in range(start, stop, STREAM_PIECE):
            yield self.mapped[at : min(stop, at + STREAM_PIECE)]


@dataclass(slots=True)
class LocalStaged:
    """An upload written to ``tmp/``."""

    temp: TempBlob
    committed: bool = False

    @property
    def sha256(self) -> str:
        return self.temp.sha256

    @property
    def size(self) -> int:
        return self.temp.size

    def reader(self) -> LocalReader:
        return LocalReader(self.sha256, map_file(self.temp.path))


class LocalBlobs:
    """The ``blobs/`` and ``tmp/`` folders of a data directory."""

    def __init__(self, data_dir: Path, *, fsync: bool = True) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "blobs"
        self.tmp = data_dir / "tmp"
        self.reserve = data_dir / "reserve"
        self._fsync = fsync
        self._retired = itertools.count()

    @classmethod
    async def create(cls, data_dir: Path, *, fsync: bool = True) -> LocalBlobs:
        """The blob store of ``data_dir``, its folders created."""
        blobs = cls(data_dir, fsync=fsync)
        await asyncio.to_thread(blobs._prepare)
        return blobs

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.keep_reserve()

    def describe(self) -> str:
        return str(self.root)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.kas"

    # Writing

    async def stage(self, body: AsyncIterable[bytes], *, limit: int) -> LocalStaged:
        try:
            temp = self.create_temp()
        except OSError as err:
            raise disk_error(err) from None
        try:
            await temp.write_all(body, limit=limit)
            if self._fsync:
                await temp.sync()
            temp.close()
        except BaseException as err:
            await shielded(asyncio.to_thread(temp.discard))
            if isinstance(err, OSError):
                raise disk_error(err) from None
            raise
        return LocalStaged(temp)

    def create_temp(self) -> TempBlob:
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".upload")
        return TempBlob(fd, Path(name))

    async def commit(self, staged: Staged) -> None:
        assert isinstance(staged, LocalStaged)

        def commit() -> None:
            target = self.path(staged.sha256)
            target.parent.mkdir(exist_ok=True)
            os.replace(staged.temp.path, target)
            staged.committed = True  # its temporary name may now be another upload's

        try:
            await asyncio.to_thread(commit)
        except OSError as err:
            raise disk_error(err) from None

    async def discard(self, staged: Staged) -> None:
        assert isinstance(staged, LocalStaged)
        if not staged.committed:
            await shielded(asyncio.to_thread(staged.temp.discard))

    async def remove(self, sha256: str) -> None:
        def remove() -> None:
            # Moved first, so the name is free at once; unlinking a large file takes a while.
            target = self.tmp / f"{sha256}.{os.getpid()}-{next(self._retired)}.removed"
            try:
                os.replace(self.path(sha256), target)
            except FileNotFoundError:
                return
            target.unlink(missing_ok=True)
            self.keep_reserve()

        await shielded(asyncio.to_thread(remove))

    # Reading

    async def open(self, sha256: str) -> LocalReader:
        return LocalReader(sha256, await asyncio.to_thread(map_file, self.path(sha256)))

    async def list(self) -> AsyncIterator[tuple[str, datetime]]:
        def scan() -> list[tuple[str, datetime]]:
            found = []
            for path in self.root.glob("??/*.kas"):
                with contextlib.suppress(FileNotFoundError):
                    mtime = path.stat().st_mtime
                    found.append((path.stem, datetime.fromtimestamp(mtime, UTC)))
            return found

        for item in await asyncio.to_thread(scan):
            yield item

    async def collect_temporaries(self, older_than: datetime) -> int:
        def collect() -> int:
            cutoff = older_than.timestamp()
            removed = 0
            for path in self.tmp.iterdir():
                with contextlib.suppress(FileNotFoundError):
                    if path.lstat().st_mtime >= cutoff:
                        continue  # perhaps another process's upload under way
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink()
                    removed += 1
            return removed

        return await asyncio.to_thread(collect)

    async def health(self) -> tuple[bool, int | None]:
        def health() -> tuple[bool, int | None]:
            try:
                self.create_temp().discard()
                writable = True
            except OSError:
                writable = False
            try:
                stats = os.statvfs(self.data_dir)
            except OSError:
                return False, 0
            return writable, stats.f_bavail * stats.f_frsize

        return await asyncio.to_thread(health)

    async def close(self) -> None:
        return None

    # The reserve

    def has_reserve(self) -> bool:
        try:
            return self.reserve.stat().st_size >= RESERVE_BYTES
        except FileNotFoundError:
            return False

    def keep_reserve(self) -> None:
        """Hold ``RESERVE_BYTES`` in the reserve file, if the disk has them."""
        if self.has_reserve():
            return
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no room: try again after the next removal
        finally:
            os.close(fd)

    def free_reserve(self) -> None:
        """Give the reserve's space back to the disk."""
        self.reserve.unlink(missing_ok=True)


class TempBlob:
    """A temporary file being written, hashed as it is written.

    Hashing and writing run on a worker thread (both release the GIL) while
    the event loop receives the next pieces; at most one batch is in flight,
    so memory stays at a few MiB whatever the upload's size.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path
        self.size = 0
        self._hash = hashlib.sha256()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        self._closing = threading.Lock()

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def _write(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self._hash.update(piece)
        # One system call for the batch, no joined copy of it.
        views = [memoryview(piece) for piece in pieces]
        first = 0
        while first < len(views):
            written = os.writev(self.fd, views[first:])
            while first < len(views) and written >= len(views[first]):
                written -= len(views[first])
                first += 1
            if written:
                views[first] = views[first][written:]

    def _sync(self) -> None:
        os.fsync(self.fd)

    async def write_all(self, pieces: AsyncIterable[bytes], *, limit: int) -> None:
        """Write every piece; raise ``OverflowError`` once more than ``limit`` bytes came."""
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[None] | None = None
        batch: list[bytes] = []
        batched = 0
        async for piece in pieces:
            self.size += len(piece)
            if self.size > limit:
                raise OverflowError(limit)
            batch.append(piece)
            batched += len(piece)
            if batched >= WRITE_BATCH or len(batch) >= WRITE_BATCH_PIECES:
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(self._executor, self._write, batch)
                batch, batched = [], 0
        if pending is not None:
            await pending
        if batch:
            await loop.run_in_executor(self._executor, self._write, batch)

    async def sync(self) -> None:
        """Flush the file's bytes to the disk."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._sync)

    def close(self) -> None:
        """Close the file (keeping it on disk) and the worker thread; from any thread."""
        self._executor.shutdown(wait=True)
        with self._closing:  # a descriptor is closed once, never one reused since
            fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def discard(self) -> None:
        """Close and delete the file; from any thread, as often as needed."""
        self.close()
        self.path.unlink(missing_ok=True)
