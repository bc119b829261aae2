"""Files that can seek but not be mapped are read in place, not read whole."""

from __future__ import annotations

import numpy as np
import pytest

import kastore

from ._support import SeekableOnly, assert_store_equals

#: What only the Python engine does: memory maps and reading in place.
pytestmark = pytest.mark.python_only

#: 100 MB in 10 arrays, and a few small ones: what a remote simulation file holds.
BIG = {f"x{i}": np.arange(1_250_000, dtype=np.float64) + i for i in range(10)} | {
    f"small/{i}": np.arange(i, dtype=np.int32) for i in range(20)
}


@pytest.fixture(scope="module")
def big() -> bytes:
    return kastore.dumps(BIG)


@pytest.mark.parametrize("size_known", [True, False])
def test_listing_a_100_mb_store_reads_under_1_mb(big: bytes, size_known: bool) -> None:
    assert len(big) > 100_000_000
    source = SeekableOnly(big, size_known=size_known)
    store = kastore.load(source)
    assert list(store) == sorted(BIG)
    assert [store.info(key).size for key in store] == [BIG[key].nbytes for key in sorted(BIG)]
    assert 0 < source.bytes_read < 1_000_000
    assert source.tell() == len(big), "the file is left positioned after the store"


def test_each_array_is_read_once_with_exactly_its_bytes(big: bytes) -> None:
    source = SeekableOnly(big)
    store = kastore.load(source)
    before = source.bytes_read
    x3 = store["x3"]
    assert source.bytes_read - before == BIG["x3"].nbytes
    assert np.array_equal(x3, BIG["x3"]) and not x3.flags.writeable
    again = source.bytes_read
    assert store["x3"] is x3
    assert source.bytes_read == again
    assert source.tell() == len(big), "reading an array moved the caller's position"


def test_everything_reads_back(big: bytes) -> None:
    with kastore.load(SeekableOnly(big)) as store:
        assert_store_equals(store, BIG)


def test_stores_back_to_back_load_in_turn() -> None:
    first, second = {"a": np.arange(3)}, {"b": np.arange(5.0), "c": np.zeros(2, np.int8)}
    source = SeekableOnly(kastore.dumps(first) + kastore.dumps(second))
    one, two = kastore.load(source), kastore.load(source)
    with pytest.raises(EOFError):
        kastore.load(source)
    assert_store_equals(two, second)
    assert_store_equals(one, first)


def test_read_all_reads_the_whole_store(big: bytes) -> None:
    source = SeekableOnly(big)
    store = kastore.load(source, read_all=True)
    assert source.bytes_read == len(big)
    assert np.array_equal(store["x9"], BIG["x9"])


def test_a_file_cut_short_is_refused_when_its_size_is_unknown(big: bytes) -> None:
    with pytest.raises(kastore.FileFormatError, match="truncated"):
        kastore.load(SeekableOnly(big[:-8], size_known=False))
