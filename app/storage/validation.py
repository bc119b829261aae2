"""Validating an upload: its structure checked from its start, kept as it streams by.

A kastore file's header, descriptors and keys come first and say where every
array lies, so they are all the codec needs to check a whole file. They are
kept as the upload passes (up to ``_HEAD_BYTES``), so a file staged in an
object store need not be read back to be checked.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import kastore
from kastore._format import HEADER_SIZE, ITEM_DESCRIPTOR

from ..errors import InvalidStoreFileError
from .interfaces import BlobReader

__all__ = ["UploadHead"]

#: The most of an upload's start kept as it streams by, to validate it without
#: reading it back: its header, descriptors and keys, when they fit.
_HEAD_BYTES = 16 << 20


class UploadHead:
    """The start of an upload, kept as it streams by: its header, descriptors and keys.

    ``keep`` passes the body through; ``validate`` then checks the staged
    file from what was kept, reading the staged file itself only for keys
    that lie beyond ``_HEAD_BYTES``.
    """

    def __init__(self) -> None:
        self.data = bytearray()
        self._wanted = HEADER_SIZE

    async def keep(self, body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for piece in body:
            taken = 0
            while len(self.data) < self._wanted and taken < len(piece):
                more = piece[taken : taken + self._wanted - len(self.data)]
                self.data += more
                taken += len(more)
                self._want_more()
            yield piece

    def _want_more(self) -> None:
        """Once the header (then the descriptors) are in, how far the keys go."""
        data = self.data
        if len(data) < HEADER_SIZE:
            return
        count = int.from_bytes(data[12:16], "little")  # the header's number of items
        end = HEADER_SIZE + count * ITEM_DESCRIPTOR.itemsize
        wanted = end
        if count and len(data) >= end:
            table = np.frombuffer(data, ITEM_DESCRIPTOR, count, HEADER_SIZE)
            wanted = max(end, int((table["key_start"] + table["key_len"]).max()))
        self._wanted = min(max(self._wanted, wanted), _HEAD_BYTES)

    async def validate(self, staged: BlobReader) -> int:
        """Check the whole structure of the staged file; return its number of keys.

        Raises:
            InvalidStoreFileError: it is not a valid kastore file.
        """
        return await _validate(_HeadFirst(staged, bytes(self.data)))


@dataclass(frozen=True, slots=True)
class _HeadFirst:
    """A staged upload's bytes, read from its kept start where that holds them."""

    staged: BlobReader
    head: bytes

    @property
    def sha256(self) -> str:
        return self.staged.sha256

    @property
    def size(self) -> int:
        return self.staged.size

    def buffer(self) -> memoryview | None:
        return self.staged.buffer()

    async def read(self, start: int, stop: int) -> bytes | memoryview:
        if stop <= len(self.head):
            return memoryview(self.head)[start:stop]
        return await self.staged.read(start, stop)

    def stream(self, start: int, stop: int) -> AsyncIterator[bytes | memoryview]:
        return self.staged.stream(start, stop)


class _RangedFile(io.RawIOBase):
    """A blob as a seekable file object, read by ranges (from a worker thread).

    The codec reads such a file lazily: validating a file reads its header,
    descriptors and keys, never its arrays.
    """

    def __init__(self, reader: BlobReader, loop: asyncio.AbstractEventLoop) -> None:
        self._reader = reader
        self._loop = loop
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._reader.size}
        self._position = max(0, base[whence] + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        stop = min(self._reader.size, self._position + len(buffer))
        if stop <= self._position:
            return 0
        future = asyncio.run_coroutine_threadsafe(
            self._reader.read(self._position, stop), self._loop
        )
        data = future.result()
        size = len(data)
        memoryview(buffer)[:size] = data
        self._position += size
        return size


async def _validate(reader: BlobReader) -> int:
    """Check the whole structure of a staged file; return its number of keys."""
    mapped = reader.buffer()
    if mapped is not None:
        return await asyncio.to_thread(_count_keys, lambda: kastore.loads(mapped))
    if reader.size == 0:
        return _count_keys(lambda: kastore.loads(b""))
    ranged = _RangedFile(reader, asyncio.get_running_loop())
    return await asyncio.to_thread(_count_keys, lambda: kastore.load(ranged))


def _count_keys(load: Callable[[], kastore.Store]) -> int:
    try:
        with load() as store:
            return len(store)
    except EOFError:
        raise InvalidStoreFileError("the upload is empty: send a kastore file") from None
    except kastore.KastoreException as err:
        raise InvalidStoreFileError(f"not a valid kastore file: {err}") from None
