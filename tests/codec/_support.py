"""Helpers shared by the codec tests: strategies, a spec-only layout parser, comparisons.

The layout parser deliberately uses nothing from ``kastore._format``: it reads the
bytes with offsets taken from the spec, so a wrong constant in the codec cannot
hide itself by being used on both sides of a check.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

#: The type codes 0..9 of the spec, in order.
DTYPE_NAMES = (
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float32",
    "float64",
)

MAGIC = b"\x89KAS\r\n\x1a\n"

#: Hypothesis settings for these tests: few examples, no deadline (shared CI
#: machines are noisy), and ``tmp_path`` is fine to reuse across examples because
#: every example writes to a fresh file name.
FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


# --- strategies -------------------------------------------------------------------

keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)

dtypes = st.builds(
    lambda name, order: np.dtype(name).newbyteorder(order),
    st.sampled_from(DTYPE_NAMES),
    st.sampled_from("<>"),
)

arrays = hnp.arrays(dtype=dtypes, shape=st.integers(0, 50))

stores = st.dictionaries(keys, arrays, max_size=8)


# --- sources ----------------------------------------------------------------------


class SeekableOnly(io.RawIOBase):
    """A file object that can seek but has no descriptor (like an HTTP or S3 file).

    It counts the bytes handed out, so tests can see what a load really read.
    ``size_known=False`` makes seeking to the end fail, as for a file object
    that cannot tell its length.
    """

    def __init__(self, data: bytes, *, size_known: bool = True) -> None:
        self._data = data
        self._position = 0
        self._size_known = size_known
        self.bytes_read = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_END:
            if not self._size_known:
                raise io.UnsupportedOperation("the length of this file is unknown")
            offset += len(self._data)
        elif whence == io.SEEK_CUR:
            offset += self._position
        self._position = offset
        return offset

    def readinto(self, buffer: Any) -> int:
        chunk = self._data[self._position : self._position + len(buffer)]
        buffer[: len(chunk)] = chunk
        self._position += len(chunk)
        self.bytes_read += len(chunk)
        self.reads += 1
        return len(chunk)


# --- comparisons ------------------------------------------------------------------


def little_endian_bytes(value: Any) -> bytes:
    """The bytes kastore must store for ``value``: contiguous, little-endian."""
    array = np.asarray(value)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def assert_same_bytes(got: bytes, expected: bytes) -> None:
    """Like ``got == expected``, but a failure names the first differing offset."""
    if got == expected:
        return
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    pytest.fail(
        f"bytes differ at offset {at} (got {len(got)} bytes, expected {len(expected)}): "
        f"got {got[at : at + 16]!r}, expected {expected[at : at + 16]!r}"
    )


def assert_store_equals(store: Mapping[str, np.ndarray], data: Mapping[str, Any]) -> None:
    """``store`` holds exactly ``data``: sorted keys, dtypes, bytes; arrays read-only."""
    assert list(store) == sorted(data)
    for key, value in data.items():
        expected = np.asarray(value)
        got = store[key]
        assert isinstance(got, np.ndarray)
        assert got.dtype == expected.dtype.newbyteorder("<"), key
        assert got.shape == expected.shape, key
        assert got.tobytes() == little_endian_bytes(expected), key
        assert not got.flags.writeable, key


# --- the layout, read straight from the spec --------------------------------------

HEADER = struct.Struct("<8sHHIQ40s")
DESCRIPTOR = struct.Struct("<B7sQQQQ24s")
ITEM_SIZES = (1, 1, 2, 2, 4, 4, 8, 8, 4, 8)


def aligned(offset: int) -> int:
    return -(-offset // 8) * 8


@dataclass(frozen=True)
class Item:
    type_code: int
    key_start: int
    key_len: int
    array_start: int
    array_len: int
    reserved: bytes


def descriptors(data: bytes) -> list[Item]:
    n = HEADER.unpack_from(data)[3]
    block = data[HEADER.size : HEADER.size + n * DESCRIPTOR.size]
    return [
        Item(code, key_start, key_len, array_start, array_len, reserved0 + reserved1)
        for code, reserved0, key_start, key_len, array_start, array_len, reserved1 in (
            DESCRIPTOR.iter_unpack(block)
        )
    ]


def check_layout(data: bytes, expected: Mapping[str, Any], key_encoding: str = "utf-8") -> None:
    """Assert that ``data`` is ``expected`` laid out exactly as the spec says."""
    magic, major, minor, n, file_size, reserved = HEADER.unpack_from(data)
    assert magic == MAGIC
    assert (major, minor) == (1, 0)
    assert n == len(expected)
    assert file_size == len(data)
    assert reserved == bytes(40)

    items = descriptors(data)
    keys = sorted(expected)
    position = HEADER.size + n * DESCRIPTOR.size
    for item, key in zip(items, keys, strict=True):
        encoded = key.encode(key_encoding)
        assert item.reserved == bytes(31), key
        assert (item.key_start, item.key_len) == (position, len(encoded)), key
        assert data[item.key_start : item.key_start + item.key_len] == encoded
        position += item.key_len
    for item, key in zip(items, keys, strict=True):
        array = np.asarray(expected[key])
        assert item.type_code == DTYPE_NAMES.index(array.dtype.name), key
        assert item.array_len == len(array), key
        assert item.array_start == aligned(position), key
        assert data[position : item.array_start] == bytes(item.array_start - position), key
        position = item.array_start + item.array_len * ITEM_SIZES[item.type_code]
        assert data[item.array_start : position] == little_endian_bytes(array), key
    assert file_size == position


def header_bytes(num_items: int, file_size: int, major: int = 1, minor: int = 0) -> bytes:
    return HEADER.pack(MAGIC, major, minor, num_items, file_size, bytes(40))


# --- shared test data -------------------------------------------------------------
