"""Broken input: exactly the right exception, and never anything else."""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kastore

from .._testdata import read_json, shared_stems
from ._support import FAST, HEADER, SeekableOnly, header_bytes

MALFORMED = shared_stems("reference/malformed", ".kas")


def _load_path(path: Path) -> kastore.Store:
    return kastore.load(path)


def _load_read_all(path: Path) -> kastore.Store:
    return kastore.load(path, read_all=True)


def _load_file_object(path: Path) -> kastore.Store:
    with path.open("rb") as source:
        return kastore.load(source)


def _load_bytesio(path: Path) -> kastore.Store:
    return kastore.load(io.BytesIO(path.read_bytes()))


def _load_seekable(path: Path) -> kastore.Store:
    return kastore.load(SeekableOnly(path.read_bytes()))


def _load_seekable_unknown_size(path: Path) -> kastore.Store:
    return kastore.load(SeekableOnly(path.read_bytes(), size_known=False))


def _loads(path: Path) -> kastore.Store:
    return kastore.loads(path.read_bytes())


READERS: dict[str, Callable[[Path], kastore.Store]] = {
    "path": _load_path,
    "read_all": _load_read_all,
    "file-object": _load_file_object,
    "bytesio": _load_bytesio,
    "seekable": _load_seekable,
    "seekable-unknown-size": _load_seekable_unknown_size,
    "loads": _loads,
}
#: Sources only the Python engine reads (the C engine needs a descriptor).
_PYTHON_ONLY_READERS = {"bytesio", "seekable", "seekable-unknown-size", "loads"}
READER_PARAMS = [
    pytest.param(name, marks=[pytest.mark.python_only] if name in _PYTHON_ONLY_READERS else [])
    for name in READERS
]

EXCEPTIONS: dict[str, type[Exception]] = {
    "FileFormatError": kastore.FileFormatError,
    "VersionTooOldError": kastore.VersionTooOldError,
    "VersionTooNewError": kastore.VersionTooNewError,
    "EOFError": EOFError,
}


@pytest.mark.parametrize("reader", READER_PARAMS)
@pytest.mark.parametrize("name", MALFORMED)
def test_reference_malformed_files_raise_exactly_the_expected_error(
    testdata: Path, name: str, reader: str
) -> None:
    folder = testdata / "reference" / "malformed"
    expected = EXCEPTIONS[read_json(folder / "expected.json")[f"{name}.kas"]]
    with pytest.raises(expected) as info:
        READERS[reader](folder / f"{name}.kas")
    assert type(info.value) is expected
    assert str(info.value)


def test_expected_json_covers_every_malformed_file(testdata: Path) -> None:
    folder = testdata / "reference" / "malformed"
    assert sorted(read_json(folder / "expected.json")) == [f"{name}.kas" for name in MALFORMED]


# --- crafted headers ----------------------------------------------------------------


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "crafted.kas"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("reader", READER_PARAMS)
@pytest.mark.parametrize(
    "file_size",
    [100, 64 + 64 * (2**32 - 1), 2**63, 2**64 - 1],
    ids=["actual-size", "just-enough-for-the-descriptors", "2**63", "2**64-1"],
)
def test_a_header_claiming_2_to_the_32_items_in_100_bytes_is_refused(
    tmp_path: Path, reader: str, file_size: int
) -> None:
    data = header_bytes(2**32 - 1, file_size) + bytes(36)
    assert len(data) == 100
    with pytest.raises(kastore.FileFormatError):
        READERS[reader](_write(tmp_path, data))


@pytest.mark.parametrize("reader", READER_PARAMS)
@pytest.mark.parametrize("major", [0, 2, 2**16 - 1])
def test_major_version_is_checked(tmp_path: Path, reader: str, major: int) -> None:
    expected = kastore.VersionTooOldError if major < 1 else kastore.VersionTooNewError
    with pytest.raises(expected):
        READERS[reader](_write(tmp_path, header_bytes(0, 64, major=major)))


@pytest.mark.parametrize("reader", READER_PARAMS)
@pytest.mark.parametrize("minor", [1, 99])
def test_a_newer_minor_version_is_read(tmp_path: Path, reader: str, minor: int) -> None:
    with READERS[reader](_write(tmp_path, header_bytes(0, 64, minor=minor))) as store:
        assert len(store) == 0


def _small_store() -> bytes:
    return kastore.dumps({"a": np.arange(3, dtype=np.int8), "bc": np.arange(2, dtype=np.float64)})


SMALL = _small_store()


@pytest.mark.python_only
@pytest.mark.parametrize("cut", range(len(SMALL)))
def test_every_truncation_is_refused(cut: int) -> None:
    expected = EOFError if cut == 0 else kastore.FileFormatError
    with pytest.raises(expected):
        kastore.loads(SMALL[:cut])
    with pytest.raises(expected):
        kastore.load(io.BytesIO(SMALL[:cut]))


@pytest.mark.parametrize("reader", ["path", "read_all", "loads"])
def test_trailing_bytes_after_a_whole_file_are_refused(tmp_path: Path, reader: str) -> None:
    with pytest.raises(kastore.FileFormatError):
        READERS[reader](_write(tmp_path, SMALL + b"\0"))


def _replace_key(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) == 1
    return data.replace(old, new)


@pytest.mark.parametrize("reader", READER_PARAMS)
def test_duplicate_keys_are_refused(tmp_path: Path, reader: str) -> None:
    data = kastore.dumps({"ka": [1], "kb": [2]})
    with pytest.raises(kastore.FileFormatError):
        READERS[reader](_write(tmp_path, _replace_key(data, b"kakb", b"kaka")))


@pytest.mark.parametrize("reader", READER_PARAMS)
def test_unsorted_distinct_keys_are_read(tmp_path: Path, reader: str, engine: str) -> None:
    """Other writers may not sort the keys: that is no reason to refuse their files.

    The Python engine lists them in file order; the C library sorts them.
    """
    data = kastore.dumps({"ab": np.array([1], dtype=np.int8), "ba": np.array([2], dtype=np.int8)})
    store = READERS[reader](_write(tmp_path, _replace_key(data, b"abba", b"baab")))
    assert list(store) == (["ba", "ab"] if engine == "python" else ["ab", "ba"])
    assert (store["ba"].tolist(), store["ab"].tolist()) == ([1], [2])
    assert "ab" in store and "aa" not in store


@pytest.mark.parametrize("reader", READER_PARAMS)
def test_keys_that_do_not_decode_are_refused(tmp_path: Path, reader: str) -> None:
    data = kastore.dumps({"é": [1]}, key_encoding="latin-1")
    with pytest.raises(kastore.FileFormatError):
        READERS[reader](_write(tmp_path, data))


# --- fuzzing ------------------------------------------------------------------------


def _read_everything(load: Callable[[], kastore.Store]) -> None:
    """Load, then touch every key, array and info: only kastore's errors may escape."""
    try:
        with load() as store:
            for key in store:
                store.info(key)
                store[key].sum()
    except kastore.KastoreException:
        pass


FUZZ_BASE = kastore.dumps(
    {
        "a": np.arange(3, dtype=np.int8),
        "bb": np.array([], dtype=np.uint64),
        "ccc": np.linspace(-1, 1, 5),
        "é": np.arange(4, dtype=np.uint16),
    }
)

overwrites = st.lists(
    st.tuples(st.integers(0, len(FUZZ_BASE) - 1), st.integers(0, 255)), min_size=1, max_size=6
)


def _corrupt(data: bytes, changes: list[tuple[int, int]]) -> bytes:
    buffer = bytearray(data)
    for position, value in changes:
        buffer[position] = value
    return bytes(buffer)


@pytest.mark.python_only
@settings(FAST, max_examples=300)
@given(changes=overwrites)
def test_corrupted_bytes_raise_only_kastore_errors(changes: list[tuple[int, int]]) -> None:
    data = _corrupt(FUZZ_BASE, changes)
    _read_everything(lambda: kastore.loads(data))
    _read_everything(lambda: kastore.load(io.BytesIO(data)))
    _read_everything(lambda: kastore.load(SeekableOnly(data)))
    _read_everything(lambda: kastore.load(SeekableOnly(data, size_known=False)))


#: Offsets of the header's item count and size, and of each descriptor's fields.
_FIELDS = [(12, "<I"), (16, "<Q")] + [
    (64 + 64 * item + offset, fmt)
    for item in range(4)
    for offset, fmt in [(0, "<B"), (8, "<Q"), (16, "<Q"), (24, "<Q"), (32, "<Q")]
]


@FAST
@given(
    field=st.sampled_from(_FIELDS),
    value=st.one_of(st.integers(0, 300), st.integers(0, 2**64 - 1)),
)
def test_corrupted_fields_raise_only_kastore_errors(
    tmp_path: Path, field: tuple[int, str], value: int
) -> None:
    offset, fmt = field
    value %= 2 ** (8 * struct.calcsize(fmt))
    data = bytearray(FUZZ_BASE)
    struct.pack_into(fmt, data, offset, value)
    path = tmp_path / f"{offset}-{value}.kas"
    path.write_bytes(data)
    _read_everything(lambda: kastore.loads(bytes(data)))
    _read_everything(lambda: kastore.load(path))
    _read_everything(lambda: kastore.load(path, read_all=True))


def test_fuzz_base_is_valid() -> None:
    assert HEADER.unpack_from(FUZZ_BASE)[3] == 4
    with kastore.loads(FUZZ_BASE) as store:
        assert len(store) == 4
