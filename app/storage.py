"""Where stores live: save (streamed, hashed, validated), open, list, delete.

A store is a name in the index pointing at an immutable blob. Saving writes
the upload to a temporary file, validates it with the codec, moves it into
place and only then points the name at it. Parsed headers are kept open in a
small cache keyed by content, so listing keys or serving an array reads no
file per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import mmap
import os
import re
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import kastore

from .blobs import BlobDir, TempBlob
from .errors import (
    InvalidStoreFileError,
    InvalidStoreNameError,
    KeyNotFoundError,
    StoreExistsError,
    StoreNotFoundError,
    UploadTooLargeError,
)
from .index import Index, StoreRecord

__all__ = [
    "NAME_PATTERN",
    "DataDirInUseError",
    "KeyInfo",
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


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key: str
    dtype: str
    length: int
    size: int


class OpenStore:
    """A parsed, memory-mapped store file and what its header says."""

    def __init__(self, store: kastore.Store) -> None:
        self.store = store
        self.keys: tuple[KeyInfo, ...] = tuple(
            KeyInfo(key, str(info.dtype), info.shape[0], info.size)
            for key, info in ((key, store.info(key)) for key in store)
        )
        self.position = {entry.key: i for i, entry in enumerate(self.keys)}
        #: Encoded answers derived from this content, filled by whoever needs them.
        self.cache: dict[object, bytes] = {}

    def array(self, name: str, key: str) -> np.ndarray:
        try:
            return self.store[key]
        except KeyError:
            raise KeyNotFoundError(name, key) from None


class Storage:
    """The stores of one data directory."""

    def __init__(self, data_dir: Path, *, open_stores: int = 128, fsync: bool = True) -> None:
        self.data_dir = data_dir
        self._blobs = BlobDir(data_dir)
        self._open_limit = open_stores
        self._fsync = fsync
        self._open: OrderedDict[str, OpenStore] = OrderedDict()
        # Publishing and removing blobs must not interleave with index changes.
        self._lock = asyncio.Lock()
        data_dir.mkdir(parents=True, exist_ok=True)
        self._owner = _claim(data_dir)
        self._blobs.prepare()
        self._index = Index(data_dir / "index.sqlite3")
        self._collect_garbage()

    def close(self) -> None:
        for opened in self._open.values():
            opened.store.close()
        self._open.clear()
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

    def page(self, *, offset: int, limit: int) -> tuple[list[StoreRecord], int]:
        return self._index.page(offset=offset, limit=limit), self._index.count()

    def open(self, record: StoreRecord) -> OpenStore:
        """The parsed file of a store, from the cache or mapped now."""
        opened = self._open.get(record.sha256)
        if opened is not None:
            self._open.move_to_end(record.sha256)
            return opened
        try:
            opened = OpenStore(kastore.load(self._blobs.path(record.sha256)))
        except FileNotFoundError:  # deleted since the record was read
            raise StoreNotFoundError(record.name) from None
        self._open[record.sha256] = opened
        while len(self._open) > self._open_limit:
            _, evicted = self._open.popitem(last=False)
            evicted.store.close()
        return opened

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

    def healthy(self) -> bool:
        """Whether the data directory can be written and the index read."""
        try:
            self._blobs.create_temp().discard()
            self._index.count()
        except Exception:
            return False
        return True

    # Writing

    @contextlib.asynccontextmanager
    async def receive(self, body: AsyncIterable[bytes], *, max_bytes: int) -> AsyncIterator[Upload]:
        """Stream ``body`` to a temporary file, hashing and then validating it.

        The file is deleted when the context ends unless ``publish`` took it.

        Raises:
            UploadTooLargeError: more than ``max_bytes`` arrived.
            InvalidStoreFileError: the body is not a valid kastore file.
        """
        temp = self._blobs.create_temp()
        try:
            try:
                await temp.write_all(body, limit=max_bytes)
            except OverflowError:
                raise UploadTooLargeError(max_bytes) from None
            num_keys = await asyncio.to_thread(_validate, temp.path)
            if self._fsync:
                await temp.sync()
            temp.close()
            yield Upload(temp, num_keys)
        finally:
            temp.discard()

    async def publish(
        self, name: str, upload: Upload, *, replace: bool
    ) -> tuple[StoreRecord, bool]:
        """Point ``name`` at a received upload; return the record and whether the name is new.

        Raises:
            InvalidStoreNameError, StoreExistsError (when not ``replace``).
        """
        check_name(name)
        temp = upload.temp
        async with self._lock:
            # The index decides, in one transaction, whether the name is free.
            self._blobs.publish(temp)
            new, old = self._index.put(
                name, temp.sha256, temp.size, upload.num_keys, replace=replace
            )
            if new is None:
                self._release(temp.sha256)
                raise StoreExistsError(name)
            if old is not None and old.sha256 != new.sha256:
                self._release(old.sha256)
            return new, old is None

    async def delete(self, name: str) -> None:
        async with self._lock:
            old = self._index.delete(name)
            if old is None:
                raise StoreNotFoundError(name)
            self._release(old.sha256)

    def _release(self, sha256: str) -> None:
        """Remove a blob once no name points at it (downloads in flight keep their bytes)."""
        if self._index.references(sha256):
            return
        opened = self._open.pop(sha256, None)
        if opened is not None:
            opened.store.close()
        self._blobs.remove(sha256)


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
