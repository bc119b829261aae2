"""The bytes ``dumps`` writes, checked against the spec field by field."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kastore

from ._support import MAGIC, assert_same_bytes, check_layout, descriptors, little_endian_bytes


def _descriptor(code: int, key_start: int, key_len: int, array_start: int, array_len: int) -> bytes:
    return struct.pack("<B7xQQQQ24x", code, key_start, key_len, array_start, array_len)


def test_empty_store_is_a_bare_header() -> None:
    expected = MAGIC + struct.pack("<HHIQ", 1, 0, 0, 64) + bytes(40)
    assert kastore.dumps({}) == expected
    assert len(expected) == 64


def test_documentation_example_byte_by_byte(docs_example: dict[str, np.ndarray]) -> None:
    # Two descriptors end at 64 + 2 * 64 = 192, where the keys "one" and "two"
    # start. The keys end at 198; the first array starts at the next multiple of
    # 8, 200, and its 5 bytes are padded to 208, where the uint64 array starts.
    expected = b"".join(
        [
            MAGIC,
            struct.pack("<HHIQ", 1, 0, 2, 248),
            bytes(40),
            _descriptor(0, 192, 3, 200, 5),
            _descriptor(7, 195, 3, 208, 5),
            b"onetwo",
            bytes(2),
            bytes(range(5)),
            bytes(3),
            np.arange(5, dtype="<u8").tobytes(),
        ]
    )
    assert_same_bytes(kastore.dumps(docs_example), expected)


def test_keys_are_sorted_and_packed_whatever_the_insertion_order() -> None:
    data = {"zeta": [1], "b": [2], "alpha": [3], "B": [4], "é": [5], "ab": [6]}
    encoded = kastore.dumps(data)
    items = descriptors(encoded)
    keys = [encoded[item.key_start : item.key_start + item.key_len] for item in items]
    assert keys == [b"B", b"ab", b"alpha", b"b", b"zeta", "é".encode()]
    assert items[0].key_start == 64 + 6 * 64
    assert [a.key_start + a.key_len for a in items[:-1]] == [b.key_start for b in items[1:]]
    check_layout(encoded, data)


def test_a_trailing_empty_array_ends_the_file_at_its_aligned_start() -> None:
    data = {"a": np.array([1, 2, 3], dtype=np.int8), "b": np.array([], dtype=np.float64)}
    encoded = kastore.dumps(data)
    # Keys at 192 and 193; "a" at 200..203, "b" at 208 holding nothing.
    assert [(i.array_start, i.array_len) for i in descriptors(encoded)] == [(200, 3), (208, 0)]
    assert len(encoded) == 208
    assert encoded[203:] == bytes(5)
    check_layout(encoded, data)


@pytest.mark.parametrize("length", range(9))
@pytest.mark.parametrize("dtype", ["int8", "int16", "float32"])
def test_every_array_starts_8_byte_aligned_after_zero_padding(dtype: str, length: int) -> None:
    data = {
        "first": np.full(length, -1, dtype=dtype),
        "second": np.full(length + 1, -1, dtype=dtype),
        "third": np.full(3, -1, dtype="int8"),
    }
    encoded = kastore.dumps(data)
    assert all(item.array_start % 8 == 0 for item in descriptors(encoded))
    check_layout(encoded, data)


# --- inputs that are not native, contiguous arrays -------------------------------

#: Below 64 KiB, between that and 1 MiB, and over 1 MiB, where the writer uses
#: three different strategies.
LENGTHS = [0, 1, 7, 10_000, 200_000]


def _big_endian(base: np.ndarray) -> np.ndarray:
    return base.astype(base.dtype.newbyteorder(">"))


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "big-endian": _big_endian,
    "strided": lambda base: np.repeat(base, 2)[::2],
    "big-endian-strided": lambda base: _big_endian(np.repeat(base, 2))[1::2],
    "negative-stride": lambda base: base[::-1].copy()[::-1],
    "fortran-row": lambda base: np.asfortranarray(np.stack([base, base]))[0],
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("dtype", ["int16", "uint32", "float64"])
def test_non_native_inputs_write_like_their_little_endian_copies(
    dtype: str, length: int, variant: str, tmp_path: Path
) -> None:
    base = (np.arange(length) * 7919 % 65521).astype(dtype)
    value = VARIANTS[variant](base)
    assert np.array_equal(value, base)
    assert value.dtype.byteorder == ">" or not value.flags.c_contiguous or length < 2
    expected = kastore.dumps({"x": np.ascontiguousarray(base, dtype=base.dtype.newbyteorder("<"))})
    assert_same_bytes(kastore.dumps({"x": value}), expected)
    kastore.dump({"x": value}, tmp_path / "x.kas")
    assert_same_bytes((tmp_path / "x.kas").read_bytes(), expected)


def test_a_mix_of_native_and_converted_arrays_of_every_size() -> None:
    rng = np.random.default_rng(5)
    data: dict[str, Any] = {}
    for i, length in enumerate([0, 3, 5000, 9000, 150_000, 1, 40_000]):
        value = rng.integers(-1000, 1000, length).astype(["<i4", ">i4", "<f8", ">f8"][i % 4])
        data[f"native{i}"] = value
        data[f"strided{i}"] = np.repeat(value, 3)[1::3]
        data[f"big{i}"] = value.astype(value.dtype.newbyteorder(">"))
    encoded = kastore.dumps(data)
    check_layout(encoded, data)
    with kastore.loads(encoded) as store:
        for key, value in data.items():
            assert store[key].tobytes() == little_endian_bytes(value), key


class _ShortWrites(io.RawIOBase):
    """A sink that takes at most a few bytes per ``write``, as a raw file may."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.calls += 1
        taken = bytes(memoryview(data).cast("B")[: 1 + self.calls % 5])
        self.received += taken
        return len(taken)


@pytest.mark.python_only
@pytest.mark.parametrize("length", [3, 20_000])
def test_dump_finishes_short_writes(length: int) -> None:
    data = {"a": np.arange(length, dtype=">i8"), "b": np.arange(length // 3, dtype=np.uint8)}
    sink = _ShortWrites()
    kastore.dump(data, sink)
    assert_same_bytes(bytes(sink.received), kastore.dumps(data))
