"""A stored file, opened for serving: its keys found and listed without a Python object per key.

Stored files were fully validated when they were uploaded and never change,
so opening one only maps it and reads its descriptors as numpy arrays (views
of the map): the memory a store holds is its descriptors and keys (mapped
pages of the file), plus, for a file whose keys are not sorted, one integer
per key giving their sorted order. A key is found by binary search over the
keys in the map, and the key listing is built a page at a time, from slices
of those arrays, and kept encoded.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import orjson

from kastore._format import DTYPES, HEADER, HEADER_SIZE, ITEM_DESCRIPTOR, ITEM_SIZES, MAGIC

if TYPE_CHECKING:
    from .storage.interfaces import BlobReader

__all__ = ["PAGES_FLOOR", "OpenStore", "quote_key"]

_DTYPE_NAMES = [str(dtype).encode() for dtype in DTYPES]
#: Keys compared at a time when checking whether a file has them sorted.
_SORT_CHECK_BLOCK = 1 << 14
#: Keys up to this long are compared as numpy rows of bytes, not one by one.
_VECTOR_KEY_BYTES = 64
#: ...and sorted that way if all rows together take at most this.
_VECTOR_SORT_BYTES = 64 << 20
#: Encoded key listing pages any store may keep, however few its keys.
PAGES_FLOOR = 1 << 20
#: What a cached object costs besides its bytes (a rough Python object header).
_OBJECT_COST = 64


def _rows_increase(rows: npt.NDArray[np.uint8], lengths: npt.NDArray[np.uint64]) -> bool:
    """Whether each zero-padded key (row) is less than the next in byte order."""
    before, after = rows[:-1], rows[1:]
    differ = before != after
    column = differ.argmax(axis=1)
    at = np.arange(len(column))
    less = np.where(
        differ.any(axis=1),
        before[at, column] < after[at, column],
        lengths[:-1] < lengths[1:],
    )
    return bool(less.all())


def quote_key(key: str) -> str:
    """A key as a path segment: every character but letters, digits and ``_.-~`` encoded."""
    encoded = quote(key, safe="")
    if encoded in (".", ".."):  # would be taken as a relative path step
        encoded = encoded.replace(".", "%2E")
    return encoded


class OpenStore:
    """A stored file mapped read-only, with its descriptors as arrays.

    Open one with ``OpenStore.load`` in a worker thread: it reads every
    descriptor once, and sorts the keys if the file did not.
    """

    def __init__(self, head: memoryview, reader: BlobReader) -> None:
        """``head``: the file from its start to the end of its keys at least."""
        self.sha256 = reader.sha256
        self.size = reader.size
        self.reader = reader
        magic, _, _, n, file_size = HEADER.unpack_from(head)
        if magic != MAGIC or file_size != self.size:
            raise ValueError(f"stored file {self.sha256} is damaged: its header does not match it")
        self._buffer = head
        descriptors = np.frombuffer(head, ITEM_DESCRIPTOR, n, HEADER_SIZE)
        self.types: npt.NDArray[np.uint8] = descriptors["type"]
        self.array_starts: npt.NDArray[np.uint64] = descriptors["array_start"]
        self.array_lens: npt.NDArray[np.uint64] = descriptors["array_len"]
        self.key_starts: npt.NDArray[np.uint64] = descriptors["key_start"]
        self.key_lens: npt.NDArray[np.uint64] = descriptors["key_len"]
        nbytes = self.array_lens * ITEM_SIZES[self.types] if n else np.zeros(0, np.uint64)
        if n and (
            int((self.array_starts + nbytes).max()) > self.size
            or int((self.key_starts + self.key_lens).max()) > head.nbytes
        ):
            raise ValueError(f"stored file {self.sha256} is damaged: an item lies outside it")
        self.num_keys = int(n)
        #: Positions of the keys in sorted order, or None when the file has them sorted.
        self.order: npt.NDArray[np.int64] | None = self._sort_order()
        keys = int(self.key_lens.sum()) if n else 0
        order = 0 if self.order is None else self.order.nbytes
        self._base_cost = HEADER_SIZE + self.num_keys * ITEM_DESCRIPTOR.itemsize + keys + order
        #: Encoded key listing pages, by (offset, limit); see ``build_page``.
        self.pages: dict[tuple[int, int], list[bytes]] = {}
        self.page_bytes = 0

    @classmethod
    async def open(cls, reader: BlobReader) -> OpenStore:
        """Read a stored file's header, descriptors and keys.

        A mapped file is read in place (in a worker thread: sorting keys may
        take a while); otherwise in three ranged reads: the header, the
        descriptors, then the keys.
        """
        mapped = reader.buffer()
        if mapped is not None:
            return await asyncio.to_thread(cls, mapped, reader)
        header = bytes(await reader.read(0, HEADER_SIZE))
        if len(header) < HEADER_SIZE:
            raise ValueError(f"stored file {reader.sha256} is damaged: it has no header")
        n = HEADER.unpack_from(header)[3]
        end = HEADER_SIZE + n * ITEM_DESCRIPTOR.itemsize
        descriptors = bytes(await reader.read(HEADER_SIZE, end)) if n else b""
        keys_end = end
        if n:
            table = np.frombuffer(descriptors, ITEM_DESCRIPTOR, n)
            keys_end = max(end, int((table["key_start"] + table["key_len"]).max()))
        keys = bytes(await reader.read(end, keys_end)) if keys_end > end else b""
        head = memoryview(header + descriptors + keys)
        return await asyncio.to_thread(cls, head, reader)

    def span(self, i: int) -> tuple[int, int]:
        """Where the array at position ``i`` lies in the file: its start and end offsets."""
        start = int(self.array_starts[i])
        return start, start + int(self.array_lens[i]) * int(ITEM_SIZES[int(self.types[i])])

    def dtype(self, i: int) -> np.dtype[Any]:
        return DTYPES[int(self.types[i])]

    def length(self, i: int) -> int:
        return int(self.array_lens[i])

    async def fetch(self, i: int, first: int = 0, end: int | None = None) -> np.ndarray:
        """Elements ``[first, end)`` of the array at ``i``: a view of the map, or read now."""
        if self.reader.buffer() is not None:
            return self.array(i)[first:end]
        dtype = self.dtype(i)
        start = self.span(i)[0]
        end = self.length(i) if end is None else end
        data = await self.reader.read(start + first * dtype.itemsize, start + end * dtype.itemsize)
        return np.frombuffer(data, dtype)

    @property
    def cost(self) -> int:
        """Bytes this store holds: its descriptors and keys, its sort order, its cached pages."""
        return self._base_cost + self.page_bytes

    def _key_bytes(self, i: int) -> bytes:
        start = int(self.key_starts[i])
        return bytes(self._buffer[start : start + int(self.key_lens[i])])

    def key(self, i: int) -> str:
        return self._key_bytes(i).decode("utf-8")

    def _sort_order(self) -> npt.NDArray[np.int64] | None:
        """None if the keys are in byte order (UTF-8 byte order is code point order,
        the order writers sort keys in); else the positions of the keys in that order.
        """
        n = self.num_keys
        if n < 2:
            return None
        width = int(self.key_lens.max())
        if width > _VECTOR_KEY_BYTES:  # long keys: compared one by one
            return self._sort_order_by_key()
        # Keys as rows of ``width`` bytes, zero-padded, a block of rows at a time:
        # padded rows compare as the keys do, but for a key that is another
        # followed by zero bytes, which the lengths then tell apart.
        for first in range(0, n - 1, _SORT_CHECK_BLOCK):
            stop = min(n, first + _SORT_CHECK_BLOCK + 1)  # one row shared with the next block
            rows = self._padded_rows(first, stop, width)
            lengths = self.key_lens[first:stop]
            if not _rows_increase(rows, lengths):
                break
        else:
            return None
        if n * width > _VECTOR_SORT_BYTES:
            return self._sort_order_by_key()
        rows = self._padded_rows(0, n, width)
        columns: list[npt.NDArray[np.generic]] = [
            self.key_lens,
            *(rows[:, i] for i in reversed(range(width))),
        ]
        return np.lexsort(columns).astype(np.int64)

    def _padded_rows(self, first: int, stop: int, width: int) -> npt.NDArray[np.uint8]:
        starts = self.key_starts[first:stop].astype(np.int64)
        lengths = self.key_lens[first:stop].astype(np.int64)
        columns = np.arange(width, dtype=np.int64)
        inside = columns < lengths[:, None]
        positions = np.where(inside, starts[:, None] + columns, 0)
        rows = np.frombuffer(self._buffer, np.uint8)[positions]
        rows[~inside] = 0
        return rows

    def _sort_order_by_key(self) -> npt.NDArray[np.int64] | None:
        keys = [self._key_bytes(i) for i in range(self.num_keys)]
        if all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
            return None
        return np.array(sorted(range(self.num_keys), key=keys.__getitem__), dtype=np.int64)

    def find(self, key: str) -> int | None:
        """The position of ``key`` in the file, or None."""
        try:
            wanted = key.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no stored key has them
            return None
        order = self.order
        low, high = 0, self.num_keys
        while low < high:
            middle = (low + high) // 2
            i = middle if order is None else int(order[middle])
            found = self._key_bytes(i)
            if found < wanted:
                low = middle + 1
            elif found > wanted:
                high = middle
            else:
                return i
        return None

    def array(self, i: int) -> np.ndarray:
        """The array at position ``i``: a read-only view of the mapped file (mapped files only)."""
        mapped = self.reader.buffer()
        if mapped is None:
            raise RuntimeError("the stored file is not mapped: use fetch()")
        return np.frombuffer(
            mapped,
            dtype=DTYPES[int(self.types[i])],
            count=int(self.array_lens[i]),
            offset=int(self.array_starts[i]),
        )

    def cached_page(self, offset: int, limit: int) -> list[bytes] | None:
        return self.pages.get((offset, limit))

    def build_page(self, offset: int, limit: int) -> list[bytes]:
        """Keys ``offset`` to ``offset + limit`` as a JSON list, split where URLs start.

        Joined with the JSON-escaped URL of the store (``/stores/NAME``, after
        any root path) as separator, the pieces make the list: the store's
        name is not part of the content, so the pieces serve every name
        pointing at this content.
        """
        stop = min(self.num_keys, offset + limit)
        if offset >= stop:
            return [b"[]"]
        types = self.types[offset:stop]
        lengths = self.array_lens[offset:stop]
        sizes = (lengths * ITEM_SIZES[types]).tolist()
        pieces: list[bytes] = []
        before = b"["
        for i, code, length, size in zip(
            range(offset, stop), types.tolist(), lengths.tolist(), sizes, strict=True
        ):
            key = self.key(i)
            pieces.append(
                b'%s{"key":%s,"dtype":"%s","length":%d,"size":%d,"url":"'
                % (before, orjson.dumps(key), _DTYPE_NAMES[code], length, size)
            )
            before = b'/arrays/%s"},' % quote_key(key).encode()
        pieces.append(before[:-1] + b"]")
        return pieces

    def keep_page(self, offset: int, limit: int, pieces: list[bytes]) -> int:
        """Keep a built page if the store's share allows; return the bytes it adds to ``cost``.

        A store keeps pages up to the size of its descriptors (or
        ``PAGES_FLOOR`` for small stores), so what it holds stays proportional
        to them however many pages clients ask for.
        """
        if (offset, limit) in self.pages:
            return 0
        added = sum(map(len, pieces)) + _OBJECT_COST * (len(pieces) + 1)
        share = max(PAGES_FLOOR, self.num_keys * ITEM_DESCRIPTOR.itemsize)
        if self.page_bytes + added > share:
            return 0
        self.pages[(offset, limit)] = pieces
        self.page_bytes += added
        return added

    def drop_pages(self) -> int:
        """Forget every kept page; return the bytes freed."""
        freed, self.pages, self.page_bytes = self.page_bytes, {}, 0
        return freed
