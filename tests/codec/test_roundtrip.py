"""Whatever is written comes back: every dtype, byte order, key and way of reading."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given

import kastore

from ._support import FAST, assert_store_equals, check_layout, stores


def _fresh(directory: Path) -> Path:
    # Every example gets its own file: rewriting a file that an earlier store
    # still maps would pull the pages from under it.
    return directory / f"{uuid.uuid4().hex}.kas"


def _via_dumps(data: Any, directory: Path) -> kastore.Store:
    return kastore.loads(kastore.dumps(data))


def _via_str_path(data: Any, directory: Path) -> kastore.Store:
    path = str(_fresh(directory))
    kastore.dump(data, path)
    return kastore.load(path)


def _via_pathlib(data: Any, directory: Path) -> kastore.Store:
    path = _fresh(directory)
    kastore.dump(data, path)
    return kastore.load(path)


def _via_bytes_path(data: Any, directory: Path) -> kastore.Store:
    path = os.fsencode(_fresh(directory))
    kastore.dump(data, path)
    return kastore.load(path)


def _via_read_all(data: Any, directory: Path) -> kastore.Store:
    path = _fresh(directory)
    kastore.dump(data, path)
    return kastore.load(path, read_all=True)


def _via_file_object(data: Any, directory: Path) -> kastore.Store:
    path = _fresh(directory)
    with path.open("wb") as out:
        kastore.dump(data, out)
    with path.open("rb") as source:
        return kastore.load(source)


def _via_bytesio(data: Any, directory: Path) -> kastore.Store:
    buffer = io.BytesIO()
    kastore.dump(data, buffer)
    buffer.seek(0)
    return kastore.load(buffer)


def _via_fd(data: Any, directory: Path) -> kastore.Store:
    path = _fresh(directory)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        kastore.dump(data, fd)
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        return kastore.load(fd)
    finally:
        os.close(fd)


WAYS: dict[str, Callable[[Any, Path], kastore.Store]] = {
    "dumps-loads": _via_dumps,
    "str-path": _via_str_path,
    "pathlib-path": _via_pathlib,
    "bytes-path": _via_bytes_path,
    "read_all": _via_read_all,
    "file-object": _via_file_object,
    "bytesio": _via_bytesio,
    "fd": _via_fd,
}
#: Ways through memory, which the C engine (descriptors only) does not take.
_IN_MEMORY = {"dumps-loads", "bytesio"}


def _ways(names: list[str]) -> list[Any]:
    return [
        pytest.param(name, marks=[pytest.mark.python_only] if name in _IN_MEMORY else [])
        for name in names
    ]


@pytest.mark.parametrize("way", _ways(list(WAYS)))
@FAST
@given(data=stores)
def test_round_trip(way: str, data: dict[str, np.ndarray], tmp_path: Path) -> None:
    with WAYS[way](data, tmp_path) as store:
        assert_store_equals(store, data)


@FAST
@given(data=stores)
def test_dumps_follows_the_spec(data: dict[str, np.ndarray]) -> None:
    check_layout(kastore.dumps(data), data)


@pytest.mark.parametrize("sink", ["path", "file-object", "fd"])
@FAST
@given(data=stores)
def test_dump_writes_what_dumps_returns(
    sink: str, data: dict[str, np.ndarray], tmp_path: Path
) -> None:
    path = _fresh(tmp_path)
    if sink == "path":
        kastore.dump(data, path)
    elif sink == "file-object":
        with path.open("wb") as out:
            kastore.dump(data, out)
            assert out.tell() == len(kastore.dumps(data))
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            kastore.dump(data, fd)
            assert os.lseek(fd, 0, os.SEEK_CUR) == len(kastore.dumps(data))
        finally:
            os.close(fd)
    assert path.read_bytes() == kastore.dumps(data)


@pytest.mark.parametrize(
    "value",
    [[1, 2, 3], [0.5, 2.75], [-(2**40), 7], [], (1, 2), range(4), [True, 2]],
    ids=["ints", "floats", "big-ints", "empty-list", "tuple", "range", "bool-and-int"],
)
def test_sequences_take_numpys_default_dtype(value: Any) -> None:
    with kastore.loads(kastore.dumps({"a": value})) as store:
        assert store["a"].dtype == np.asarray(value).dtype
        assert store["a"].tolist() == list(value)


@pytest.mark.parametrize(
    ("dtype", "stored_as"),
    [
        (np.byte, "int8"),
        (np.ubyte, "uint8"),
        (np.short, "int16"),
        (np.ushort, "uint16"),
        (np.intc, "int32"),
        (np.uintc, "uint32"),
        (np.longlong, "int64"),
        (np.ulonglong, "uint64"),
        (np.intp, "int64"),
        (np.uintp, "uint64"),
        (np.single, "float32"),
        (np.double, "float64"),
    ],
)
def test_c_type_aliases_are_stored_by_kind_and_size(dtype: type, stored_as: str) -> None:
    """``long`` and ``long long`` are distinct numpy types of one size: both are int64."""
    value: np.ndarray = np.array([1, 2, 3], dtype=dtype)
    with kastore.loads(kastore.dumps({"a": value})) as store:
        assert store["a"].dtype == np.dtype(stored_as)
        assert store["a"].tolist() == [1, 2, 3]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32-be", "latin-1", "ascii"])
def test_key_encoding_round_trips(encoding: str) -> None:
    keys = ["a", "b/c", "Zz", "x y"] + (["é", "ÿ"] if encoding != "ascii" else [])
    data = {key: np.array([i], dtype=np.int32) for i, key in enumerate(keys)}
    encoded = kastore.dumps(data, key_encoding=encoding)
    check_layout(encoded, data, key_encoding=encoding)
    with kastore.loads(encoded, key_encoding=encoding) as store:
        assert_store_equals(store, data)


def test_unicode_keys_round_trip(tmp_path: Path) -> None:
    data = {
        key: np.array([len(key)], dtype=np.uint8)
        for key in ["é", "日本語", "🧬/dna", "a?b#c%d&e", "with space", "\x00nul", "\u00e9"]
    }
    kastore.dump(data, tmp_path / "keys.kas")
    with kastore.load(tmp_path / "keys.kas") as store:
        assert_store_equals(store, data)


@pytest.fixture(scope="module")
def many_keys() -> dict[str, np.ndarray]:
    """More keys than fit in 16 bits, the count at which the reference writer broke."""
    values = np.arange(70_000, dtype=np.int32)
    # Inserted in reverse so that writing has to sort them.
    return {f"k{i:05d}": values[i : i + 1] for i in reversed(range(70_000))}


def test_more_than_65535_keys_follow_the_spec(many_keys: dict[str, np.ndarray]) -> None:
    check_layout(kastore.dumps(many_keys), many_keys)


@pytest.mark.parametrize("way", _ways(["dumps-loads", "pathlib-path", "bytesio"]))
def test_more_than_65535_keys_round_trip(
    way: str, many_keys: dict[str, np.ndarray], tmp_path: Path
) -> None:
    with WAYS[way](many_keys, tmp_path) as store:
        assert len(store) == 70_000
        assert list(store) == sorted(many_keys)
        assert store["k00000"].tolist() == [0]
        assert store["k65535"].tolist() == [65535]
        assert store["k65536"].tolist() == [65536]
        assert store["k69999"].tolist() == [69999]
        values = np.concatenate([store[key] for key in store])
        np.testing.assert_array_equal(values, np.arange(70_000, dtype=np.int32))
