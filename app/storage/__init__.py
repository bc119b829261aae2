"""Where stores live: save (streamed, hashed, validated), open, list, delete.

A store is a name in the index pointing at an immutable blob. Saving writes
the upload to a temporary file, validates it with the codec, moves it into
place and only then points the name at it. Parsed files are kept open in a
cache keyed by content (sha256), bounded in bytes, so listing keys or serving
an array reads no file per request; parsing and removing files run in worker
threads, never on the event loop.

A full disk loses nothing and blocks nothing: an upload that cannot be
written, or whose name cannot be recorded, answers 507 and leaves no file
behind; and a small reserve file is given up when the index needs room to
delete a store, so space can always be freed through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import mmap
import os
import re
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import kastore

from ..errors import (
    InsufficientStorageError,
    InvalidStoreFileError,
    InvalidStoreNameError,
    StoreExistsError,
    StoreNotFoundError,
    UploadTooLargeError,
)
from ..keytable import OpenStore
from .local_blobs import BlobDir, TempBlob
from .sqlite_index import Index, StoreRecord

__all__ = [
    "NAME_PATTERN",
    "DataDirInUseError",
    "OpenStore",
    "Storage",
    "StoreRecord",
    "Upload",
    "check_name",
]

#: Store names: letters, digits, ``.``, ``_`` and ``-``, starting with a
#: letter or digit, at most 128 characters. Safe in paths and URLs as they are.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the quota) has no room left."""
    if isinstance(err, OSError):
        return err.errno in _DISK_FULL_ERRNOS
    if isinstance(err, sqlite3.Error):
        return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False


class DataDirInUseError(RuntimeError):
    """Another process serves the same data directory."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid store name, else raise ``InvalidStoreNameError``."""
    if not _NAME.fullmatch(name):
        raise InvalidStoreNameError(
            f"invalid store name {name!r}: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Upload:
    """A received, validated upload waiting to be published under a name."""

    temp: TempBlob
    num_keys: int


class Storage:
    """The stores of one data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        open_stores: int = 128,
        cache_bytes: int = 256 << 20,
        fsync: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self._blobs = BlobDir(data_dir)
        self._open_limit = open_stores
        self._cache_limit = cache_bytes
        self._fsync = fsync
        self._open: OrderedDict[str, OpenStore] = OrderedDict()
        self._cached_bytes = 0
        self._opening: dict[str, asyncio.Future[OpenStore]] = {}
        #: Lookups of parsed files answered from the cache, and those that parsed one.
        self.cache_hits = 0
        self.cache_misses = 0
        # Publishing and removing blobs must not interleave with index changes.
        self._lock = asyncio.Lock()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._owner = _claim(data_dir)
        self._blobs.prepare()
        self._index = Index(data_dir / "index.sqlite3")
        self._collect_garbage()
        self._blobs.keep_reserve()

    def close(self) -> None:
        self._open.clear()
        self._cached_bytes = 0
        self._index.close()
        os.close(self._owner)

    def _collect_garbage(self) -> None:
        """Remove blobs no name points at (left by a crash between two steps)."""
        for sha256 in set(self._blobs.all()) - self._index.blobs():
            self._blobs.remove(sha256)

    # Reading

    def get(self, name: str) -> StoreRecord:
        record = self._index.get(name)
        if record is None:
            raise StoreNotFoundError(name)
        return record

    async def page(self, *, offset: int, limit: int) -> tuple[list[StoreRecord], int]:
        """Records sorted by name, ``limit`` from ``offset``, and how many there are."""
        total = self._index.count()
        if offset >= total:
            return [], total
        records = await asyncio.to_thread(self._index.page, offset=offset, limit=limit)
        return records, total

    def totals(self) -> tuple[int, int, int]:
        """How many stores there are, their keys and their bytes, all added up.

        Safe to call from a worker thread (the index reads it on its own connection).
        """
        return self._index.totals()

    async def open(self, record: StoreRecord) -> OpenStore:
        """The parsed file of a store, from the cache or parsed now in a worker thread.

        Requests for a file being parsed wait for that one parse.
        """
        sha256 = record.sha256
        opened = self._open.get(sha256)
        if opened is not None:
            self._open.move_to_end(sha256)
            self.cache_hits += 1
            return opened
        self.cache_misses += 1
        pending = self._opening.get(sha256)
        if pending is None:
            path = self._blobs.path(sha256)
            pending = asyncio.ensure_future(asyncio.to_thread(OpenStore.load, path, sha256))
            self._opening[sha256] = pending
            pending.add_done_callback(self._parsed)
        try:
            return await asyncio.shield(pending)
        except FileNotFoundError:  # deleted since the record was read
            raise StoreNotFoundError(record.name) from None

    def _parsed(self, done: asyncio.Future[OpenStore]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._opening = {sha: f for sha, f in self._opening.items() if f is not done}
            return
        opened = done.result()
        self._opening.pop(opened.sha256, None)
        if opened.sha256 not in self._open:
            self._open[opened.sha256] = opened
            self._cached_bytes += opened.cost
            self._evict()

    async def key_page(self, opened: OpenStore, *, offset: int, limit: int) -> list[bytes]:
        """A page of the key listing (see ``OpenStore.build_page``), built once."""
        pieces = opened.cached_page(offset, limit)
        if pieces is None:
            pieces = await asyncio.to_thread(opened.build_page, offset, limit)
            if self._open.get(opened.sha256) is opened:
                self._cached_bytes += opened.keep_page(offset, limit, pieces)
                self._evict()
        return pieces

    def _evict(self) -> None:
        """Drop the least recently used stores until the cache fits its limits."""
        while len(self._open) > 1 and (
            self._cached_bytes > self._cache_limit or len(self._open) > self._open_limit
        ):
            _, evicted = self._open.popitem(last=False)
            self._cached_bytes -= evicted.cost
        if self._cached_bytes > self._cache_limit:
            # One store larger than the limit: keep it parsed, not its pages.
            for opened in self._open.values():
                self._cached_bytes -= opened.drop_pages()

    @property
    def cached_bytes(self) -> int:
        """What the parsed stores in the cache hold, in bytes."""
        return self._cached_bytes

    def map_file(self, record: StoreRecord) -> memoryview:
        """The store's whole file, memory-mapped read-only."""
        try:
            fd = os.open(self._blobs.path(record.sha256), os.O_RDONLY)
        except FileNotFoundError:  # deleted since the record was read
            raise StoreNotFoundError(record.name) from None
        try:
            return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
        finally:
            os.close(fd)  # the map holds the file by itself

    def index_readable(self) -> bool:
        return self._index.readable()

    def disk_state(self) -> tuple[bool, int]:
        """Whether a file can be created in the data directory, and its free bytes.

        Blocking: call it in a worker thread.
        """
        try:
            self._blobs.create_temp().discard()
            writable = True
        except OSError:
            writable = False
        try:
            stats = os.statvfs(self.data_dir)
        except OSError:
            return False, 0
        return writable, stats.f_bavail * stats.f_frsize

    # Writing

    @contextlib.asynccontextmanager
    async def receive(self, body: AsyncIterable[bytes], *, max_bytes: int) -> AsyncIterator[Upload]:
        """Stream ``body`` to a temporary file, hashing and then validating it.

        The file is deleted when the context ends unless ``publish`` took it.

        Raises:
            UploadTooLargeError: more than ``max_bytes`` arrived.
            InvalidStoreFileError: the body is not a valid kastore file.
            InsufficientStorageError: the disk is full.
        """
        try:
            temp = self._blobs.create_temp()
        except OSError as err:
            raise _disk_error(err) from None
        try:
            try:
                await temp.write_all(body, limit=max_bytes)
                num_keys = await asyncio.to_thread(_validate, temp.path)
                if self._fsync:
                    await temp.sync()
            except OverflowError:
                raise UploadTooLargeError(max_bytes) from None
            except OSError as err:
                raise _disk_error(err) from None
            temp.close()
            yield Upload(temp, num_keys)
        finally:
            # A large file takes a while to unlink: a worker thread does it.
            removal = asyncio.ensure_future(asyncio.to_thread(temp.discard))
            try:
                await asyncio.shield(removal)
            except asyncio.CancelledError:
                # Cancelled again, as at shutdown: finish here, or the file
                # could outlive the process.
                temp.discard()
                raise

    async def publish(
        self, name: str, upload: Upload, *, replace: bool
    ) -> tuple[StoreRecord, bool]:
        """Point ``name`` at a received upload; return the record and whether the name is new.

        Raises:
            InvalidStoreNameError, StoreExistsError (when not ``replace``),
            InsufficientStorageError (nothing is kept).
        """
        check_name(name)
        temp = upload.temp
        doomed: list[Path] = []
        try:
            async with self._lock:
                try:
                    self._blobs.publish(temp)
                except OSError as err:
                    raise _disk_error(err) from None
                # The index decides, in one transaction, whether the name is free.
                try:
                    new, old = await asyncio.to_thread(
                        self._index.put,
                        name,
                        temp.sha256,
                        temp.size,
                        upload.num_keys,
                        replace=replace,
                    )
                except sqlite3.Error as err:
                    doomed += self._unpublish(temp.sha256)
                    if _disk_full(err):
                        raise InsufficientStorageError() from None
                    raise
                if new is None:
                    doomed += self._unpublish(temp.sha256)
                    raise StoreExistsError(name)
                self._index.settle(name, new, existed=old is not None)
                if old is not None and old.sha256 != new.sha256:
                    doomed += self._unpublish(old.sha256)
                return new, old is None
        finally:
            await self._remove(doomed)

    async def delete(self, name: str) -> None:
        """Remove a store; its file goes once no other name points at it.

        Works on a full disk: the reserve gives the index the room it needs.
        """
        doomed: list[Path] = []
        try:
            async with self._lock:
                old = await asyncio.to_thread(self._delete_from_index, name)
                self._index.settle(name, None, existed=old is not None)
                if old is None:
                    raise StoreNotFoundError(name)
                doomed += self._unpublish(old.sha256)
        finally:
            await self._remove(doomed)

    def _delete_from_index(self, name: str) -> StoreRecord | None:
        """Delete ``name`` from the index, with the reserve's room if the disk is full.

        Blocking: call it in a worker thread.
        """
        try:
            return self._index.delete(name)
        except sqlite3.Error as err:
            if not _disk_full(err):
                raise
        self._blobs.free_reserve()
        try:
            return self._index.delete(name)
        except sqlite3.Error as err:
            if _disk_full(err):
                raise InsufficientStorageError() from None
            raise

    def _unpublish(self, sha256: str) -> list[Path]:
        """Take a blob out of ``blobs/`` once no name points at it; return where it went.

        Moving it is quick and keeps the index and ``blobs/`` in step under
        the lock; unlinking it, which can take long for a large file, is left
        to ``_remove``. Downloads in flight keep their bytes until they end.
        """
        if self._index.references(sha256):
            return []
        opened = self._open.pop(sha256, None)
        if opened is not None:
            self._cached_bytes -= opened.cost
        moved = self._blobs.retire(sha256)
        return [] if moved is None else [moved]

    async def _remove(self, paths: Iterable[Path]) -> None:
        """Unlink retired blobs in a worker thread, then take back the reserve."""
        paths = list(paths)

        def remove() -> None:
            for path in paths:
                path.unlink(missing_ok=True)
            self._blobs.keep_reserve()

        if paths or not self._blobs.has_reserve():
            await asyncio.shield(asyncio.to_thread(remove))


def _disk_error(err: OSError) -> Exception:
    """The error to answer for a failed write: 507 for a full disk, else the error itself."""
    return InsufficientStorageError() if _disk_full(err) else err


def _claim(data_dir: Path) -> int:
    """Lock the data directory for this process: its caches assume no other writer."""
    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise DataDirInUseError(
            f"the data directory {data_dir} is in use by another kastore-service process; "
            "stop it, or give this one another KASTORE_DATA_DIR"
        ) from None
    return fd


def _validate(path: Path) -> int:
    """Check the whole structure of a stored file; return its number of keys."""
    try:
        with kastore.load(path) as store:
            return len(store)
    except EOFError:
        raise InvalidStoreFileError("the upload is empty: send a kastore file") from None
    except kastore.KastoreException as err:
        raise InvalidStoreFileError(f"not a valid kastore file: {err}") from None
