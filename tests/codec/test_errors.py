"""Bad arguments: the documented exception, raised before anything is written."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kastore

GOOD = {"a": np.arange(3, dtype=np.int32)}


def _function() -> None:  # pragma: no cover - only its identity matters
    pass


# --- data -------------------------------------------------------------------------

NOT_MAPPINGS = [None, [("a", [1])], "abc", 5, {"a"}, np.arange(3)]
NON_STR_KEYS = [
    {1: [1]},
    {b"a": [1]},
    {None: [1]},
    {("a",): [1]},
    {"a": [1], 2.5: [2]},
    # With arrays for values, so no value sends a writer to its slow path.
    {b"a": np.zeros(1)},
    {"a": np.zeros(1), b"b": np.zeros(1)},
]
EMPTY_KEYS = [{"": [1]}, {"": [1], "a": [2]}]

BAD_VALUES = {
    "0-d-array": np.array(5),
    "scalar": 5,
    "2-d": np.zeros((2, 2)),
    "3-d": np.zeros((1, 1, 1), dtype=np.int8),
    "nested-list": [[1, 2]],
    "ragged": [[1], [1, 2]],
    "complex": np.array([1 + 2j]),
    "bool": np.array([True, False]),
    "object": np.array([1, "a"], dtype=object),
    "float16": np.zeros(3, dtype=np.float16),
    "str-array": np.array(["a", "b"]),
    "bytes-array": np.array([b"a"]),
    "datetime64": np.array(["2024-01-01"], dtype="datetime64[D]"),
    "timedelta64": np.array([1], dtype="timedelta64[s]"),
    "structured": np.zeros(2, dtype=[("x", "i4")]),
    "void": np.zeros(2, dtype="V4"),
    "None": None,
    "function": _function,
    "str": "1234",
    "bytes": b"1234",
    "object()": object(),
}
if np.dtype(np.longdouble).itemsize > 8:  # on some platforms it is just float64
    BAD_VALUES["longdouble"] = np.zeros(2, dtype=np.longdouble)


def _dumps(data: Any, tmp_path: Path, **kwargs: Any) -> None:
    kastore.dumps(data, **kwargs)


def _dump_path(data: Any, tmp_path: Path, **kwargs: Any) -> None:
    kastore.dump(data, tmp_path / "out.kas", **kwargs)


def _dump_bytesio(data: Any, tmp_path: Path, **kwargs: Any) -> None:
    kastore.dump(data, io.BytesIO(), **kwargs)


WRITERS: dict[str, Callable[..., None]] = {
    "dumps": _dumps,
    "dump-path": _dump_path,
    "dump-bytesio": _dump_bytesio,
}


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("data", NOT_MAPPINGS, ids=repr)
def test_data_must_be_a_mapping(writer: str, data: Any, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="Mapping"):
        WRITERS[writer](data, tmp_path)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("data", NON_STR_KEYS, ids=repr)
def test_keys_must_be_str(writer: str, data: Any, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="str"):
        WRITERS[writer](data, tmp_path)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("data", EMPTY_KEYS, ids=repr)
def test_keys_must_not_be_empty(writer: str, data: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        WRITERS[writer](data, tmp_path)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_values_must_be_1d_arrays_of_a_supported_dtype(
    writer: str, value: Any, tmp_path: Path
) -> None:
    # A good key first, so a writer that streams as it goes would already have started.
    with pytest.raises(ValueError, match="'the_key'"):
        WRITERS[writer]({"a_good_one": [1, 2], "the_key": value}, tmp_path)


def test_a_key_the_encoding_cannot_hold_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        kastore.dumps({"é": [1]}, key_encoding="ascii")


# --- engine -----------------------------------------------------------------------

BAD_ENGINES: list[Any] = [None, {}, "x", b"x", "Python", "python ", 1]


@pytest.mark.parametrize("engine", BAD_ENGINES, ids=repr)
def test_load_refuses_an_unknown_engine(engine: Any, tmp_path: Path) -> None:
    kastore.dump(GOOD, tmp_path / "good.kas")
    with pytest.raises(ValueError, match="engine"):
        kastore.load(tmp_path / "good.kas", engine=engine)


@pytest.mark.parametrize("engine", BAD_ENGINES, ids=repr)
def test_dump_refuses_an_unknown_engine(engine: Any, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine"):
        kastore.dump(GOOD, tmp_path / "out.kas", engine=engine)
    assert not (tmp_path / "out.kas").exists()


# --- file -------------------------------------------------------------------------

BAD_FILES = [None, [], {}, 1.5, object(), True]


@pytest.mark.parametrize("file", BAD_FILES, ids=repr)
def test_load_refuses_a_file_of_the_wrong_type(file: Any) -> None:
    with pytest.raises(TypeError, match="file must be"):
        kastore.load(file)


@pytest.mark.parametrize("file", BAD_FILES, ids=repr)
def test_dump_refuses_a_file_of_the_wrong_type(
    file: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(TypeError, match="file must be"):
        kastore.dump(GOOD, file)
    # True is not file descriptor 1.
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("read_all", [False, True])
def test_a_negative_file_descriptor_is_a_value_error(read_all: bool) -> None:
    with pytest.raises(ValueError, match="negative file descriptor"):
        kastore.load(-1, read_all=read_all)
    with pytest.raises(ValueError, match="negative file descriptor"):
        kastore.dump(GOOD, -1)


@pytest.mark.parametrize("read_all", [False, True])
def test_a_descriptor_that_is_not_open_is_an_os_error(read_all: bool) -> None:
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)  # now a number no file has (this thread opens none meanwhile)
    with pytest.raises(OSError) as error:
        kastore.load(fd, read_all=read_all)
    assert error.value.errno == errno.EBADF
    with pytest.raises(OSError) as error:
        kastore.dump(GOOD, fd)
    assert error.value.errno == errno.EBADF


@pytest.mark.parametrize("encoded", [None, "text", 5, [1, 2]], ids=repr)
def test_loads_needs_bytes(encoded: Any) -> None:
    with pytest.raises(TypeError, match="bytes-like"):
        kastore.loads(encoded)


@pytest.mark.parametrize("read_all", [False, True])
def test_load_of_a_missing_path(tmp_path: Path, read_all: bool) -> None:
    with pytest.raises(FileNotFoundError):
        kastore.load(tmp_path / "missing.kas", read_all=read_all)


def test_dump_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        kastore.dump(GOOD, tmp_path / "missing" / "out.kas")


@pytest.mark.parametrize("read_all", [False, True])
def test_load_of_a_directory(tmp_path: Path, read_all: bool) -> None:
    with pytest.raises(IsADirectoryError):
        kastore.load(tmp_path, read_all=read_all)


def test_dump_to_a_directory(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        kastore.dump(GOOD, tmp_path)


# --- a failed dump writes nothing ("everything is checked before anything is written")

FAILING_DUMPS: dict[str, tuple[Any, dict[str, Any]]] = {
    "not-a-mapping": ([("a", [1])], {}),
    "non-str-key": ({"a": [1], 3: [2]}, {}),
    "empty-key": ({"": [1]}, {}),
    "bad-value-last": ({"a": [1], "z": np.zeros((2, 2))}, {}),
    "bad-dtype": ({"a": np.arange(100_000), "b": np.array([1j])}, {}),
    "unencodable-key": ({"a": [1], "é": [2]}, {"key_encoding": "ascii"}),
    "bad-engine": (GOOD, {"engine": "x"}),
}


@pytest.mark.parametrize("case", FAILING_DUMPS)
def test_a_failed_dump_creates_no_file(tmp_path: Path, case: str) -> None:
    data, kwargs = FAILING_DUMPS[case]
    with pytest.raises((TypeError, ValueError, RuntimeError)):
        kastore.dump(data, tmp_path / "out.kas", **kwargs)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", FAILING_DUMPS)
def test_a_failed_dump_leaves_an_existing_file_alone(tmp_path: Path, case: str) -> None:
    data, kwargs = FAILING_DUMPS[case]
    path = tmp_path / "out.kas"
    path.write_bytes(b"previous contents")
    with pytest.raises((TypeError, ValueError, RuntimeError)):
        kastore.dump(data, path, **kwargs)
    assert path.read_bytes() == b"previous contents"


@pytest.mark.parametrize("case", FAILING_DUMPS)
def test_a_failed_dump_writes_nothing_to_a_file_object(case: str) -> None:
    data, kwargs = FAILING_DUMPS[case]
    sink = io.BytesIO()
    with pytest.raises((TypeError, ValueError, RuntimeError)):
        kastore.dump(data, sink, **kwargs)
    assert sink.getvalue() == b""
