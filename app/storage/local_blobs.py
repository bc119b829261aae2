"""Immutable files named by their sha256, and the temporary files they start as.

Layout under the data directory::

    blobs/ab/abcdef....kas   one file per distinct content, never modified
    tmp/                     uploads in progress, and blobs being removed;
                             emptied on start
    reserve                  a few MiB held back, given up when the disk is full
                             so that the index can still record deletions

An upload is written to ``tmp/`` while it is hashed, then renamed into
``blobs/`` in one step, so a crash leaves either nothing or a whole file.
Removing a blob moves it to ``tmp/`` at once, then unlinks it: a download
that has it open or mapped keeps reading the same bytes until it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import AsyncIterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["BlobDir", "TempBlob"]

#: Received pieces are gathered up to this size before one write.
WRITE_BATCH = 1 << 20
#: ...or up to this many pieces, well under the system's limit for one writev.
WRITE_BATCH_PIECES = 256
#: Space held back for the index to record deletions on a full disk.
RESERVE_BYTES = 4 << 20


class BlobDir:
    """The ``blobs/`` and ``tmp/`` folders of a data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "blobs"
        self.tmp = data_dir / "tmp"
        self.reserve = data_dir / "reserve"
        self._retired = itertools.count()

    def prepare(self) -> None:
        """Create the folders and drop uploads left over by a crash."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover)
            else:
                leftover.unlink(missing_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.kas"

    def all(self) -> Iterator[str]:
        """The sha256 of every blob on disk."""
        for path in self.root.glob("??/*.kas"):
            yield path.stem

    def publish(self, temp: TempBlob) -> Path:
        """Move a finished temporary file to its place, named by its content."""
        target = self.path(temp.sha256)
        target.parent.mkdir(exist_ok=True)
        os.replace(temp.path, target)
        return target

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def retire(self, sha256: str) -> Path | None:
        """Move a blob to ``tmp/`` to be unlinked there; None if it was not there."""
        target = self.tmp / f"{sha256}.{os.getpid()}-{next(self._retired)}.removed"
        try:
            os.replace(self.path(sha256), target)
        except FileNotFoundError:
            return None
        return target

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

    def create_temp(self) -> TempBlob:
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".upload")
        return TempBlob(fd, Path(name))


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
