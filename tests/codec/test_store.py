"""The ``Store`` mapping: lookups, ``info``, read-only arrays, and closing."""

from __future__ import annotations

import gc
import io
import mmap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kastore

from ._support import SeekableOnly

#: What only the Python engine does: memory maps and reading in place.
pytestmark = pytest.mark.python_only

DATA: dict[str, np.ndarray] = {
    "b": np.arange(5, dtype=np.uint64),
    "a": np.array([1.5, -2.5], dtype=np.float32),
    "empty": np.array([], dtype=np.int16),
}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "store.kas"
    kastore.dump(DATA, path)
    return path


SOURCES: dict[str, Callable[[Path], kastore.Store]] = {
    "mmap": lambda path: kastore.load(path),
    "read_all": lambda path: kastore.load(path, read_all=True),
    "bytesio": lambda path: kastore.load(io.BytesIO(path.read_bytes())),
    "seekable": lambda path: kastore.load(SeekableOnly(path.read_bytes())),
    "loads": lambda path: kastore.loads(path.read_bytes()),
}


@pytest.fixture(params=SOURCES)
def store(request: pytest.FixtureRequest, path: Path) -> Any:
    with SOURCES[request.param](path) as store:
        yield store


def test_is_a_read_only_mapping_in_key_order(store: kastore.Store) -> None:
    assert isinstance(store, Mapping)
    assert len(store) == 3
    assert list(store) == list(store.keys()) == ["a", "b", "empty"]
    assert "a" in store and "missing" not in store
    assert store.get("missing") is None
    assert store["b"].tolist() == [0, 1, 2, 3, 4]
    assert [key for key, _ in store.items()] == ["a", "b", "empty"]
    with pytest.raises(KeyError):
        store["missing"]
    with pytest.raises(TypeError):
        store["new"] = np.arange(2)  # type: ignore[index]
    with pytest.raises(TypeError):
        del store["a"]  # type: ignore[attr-defined]


def test_dict_of_a_store_holds_every_array(store: kastore.Store) -> None:
    copied = dict(store)
    assert list(copied) == ["a", "b", "empty"]
    for key, value in DATA.items():
        np.testing.assert_array_equal(copied[key], value)
        assert copied[key].dtype == value.dtype


def test_arrays_are_read_only(store: kastore.Store) -> None:
    for key in store:
        assert not store[key].flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        store["b"][0] = 7
    with pytest.raises(ValueError):
        store["b"].flags.writeable = True


@pytest.mark.parametrize(
    ("key", "dtype", "length"),
    [("a", "float32", 2), ("b", "uint64", 5), ("empty", "int16", 0)],
)
def test_info_describes_without_reading(
    store: kastore.Store, key: str, dtype: str, length: int
) -> None:
    info = store.info(key)
    assert isinstance(info, kastore.ArrayInfo)
    assert info.dtype == np.dtype(dtype)
    assert info.shape == (length,)
    assert info.size == length * np.dtype(dtype).itemsize
    assert info == kastore.ArrayInfo(dtype=np.dtype(dtype), shape=(length,), size=info.size)


def test_info_of_a_missing_key_raises_key_error(store: kastore.Store) -> None:
    with pytest.raises(KeyError):
        store.info("missing")


def test_loads_does_not_copy() -> None:
    encoded = kastore.dumps(DATA)
    with kastore.loads(encoded) as store:
        assert np.shares_memory(store["b"], np.frombuffer(encoded, np.uint8))


def test_loads_of_a_writable_buffer_still_gives_read_only_arrays() -> None:
    with kastore.loads(bytearray(kastore.dumps(DATA))) as store:
        assert not store["b"].flags.writeable


# --- closing ------------------------------------------------------------------------

AFTER_CLOSE: dict[str, Callable[[kastore.Store], object]] = {
    "getitem": lambda store: store["a"],
    "getitem-missing": lambda store: store["missing"],
    "get": lambda store: store.get("a"),
    "len": len,
    "iter": lambda store: list(store),
    "keys": lambda store: list(store.keys()),
    "values": lambda store: list(store.values()),
    "items": lambda store: list(store.items()),
    "contains": lambda store: "a" in store,
    "info": lambda store: store.info("a"),
    "dict": dict,
}


@pytest.mark.parametrize("access", AFTER_CLOSE)
@pytest.mark.parametrize("source", SOURCES)
def test_any_access_after_close_raises(path: Path, source: str, access: str) -> None:
    store = SOURCES[source](path)
    store["a"]  # cached arrays must not outlive the store's own access rules
    store.close()
    with pytest.raises(kastore.StoreClosedError):
        AFTER_CLOSE[access](store)


@pytest.mark.parametrize("source", SOURCES)
def test_close_twice_is_harmless(path: Path, source: str) -> None:
    store = SOURCES[source](path)
    store.close()
    store.close()
    assert "closed" in repr(store)


@pytest.mark.parametrize("source", SOURCES)
def test_context_manager_returns_the_store_and_closes_it(path: Path, source: str) -> None:
    with SOURCES[source](path) as store:
        assert isinstance(store, kastore.Store)
        assert len(store) == 3
    with pytest.raises(kastore.StoreClosedError):
        len(store)


def test_context_manager_closes_on_error(path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), kastore.load(path) as store:
        raise RuntimeError("boom")
    with pytest.raises(kastore.StoreClosedError):
        store["a"]


@pytest.mark.parametrize("source", SOURCES)
def test_arrays_taken_before_close_stay_valid(path: Path, source: str) -> None:
    store = SOURCES[source](path)
    arrays = {key: store[key] for key in store}
    store.close()
    del store
    path.unlink()  # the mapping, if any, must not depend on the name either
    gc.collect()
    for key, value in DATA.items():
        np.testing.assert_array_equal(arrays[key], value)
        assert arrays[key].sum() == value.sum()


def _mapped(path: Path) -> int:
    """How many of this process's memory mappings are of ``path``."""
    with open("/proc/self/maps", encoding="utf-8") as maps:
        return sum(line.rstrip("\n").endswith(str(path)) for line in maps)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
@pytest.mark.parametrize("taken", [[], ["b"], ["a", "b", "empty"]])
def test_close_unmaps_the_file_when_no_array_is_held(path: Path, taken: list[str]) -> None:
    store = kastore.load(path)
    assert _mapped(path) == 1
    for key in taken:
        assert store[key] is store[key]  # taken, held a moment, and dropped
    store.close()
    assert _mapped(path) == 0


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc/self/maps")
def test_the_file_stays_mapped_while_an_array_is_held(path: Path) -> None:
    store = kastore.load(path)
    array = store["b"]
    store.close()
    del store
    gc.collect()
    assert _mapped(path) == 1
    assert array.tolist() == [0, 1, 2, 3, 4]
    del array
    gc.collect()
    assert _mapped(path) == 0


@pytest.mark.parametrize("wrap", [lambda mapped: mapped, memoryview], ids=["mmap", "memoryview"])
def test_closing_a_store_leaves_the_callers_mmap_open(
    path: Path, wrap: Callable[[mmap.mmap], Any]
) -> None:
    with path.open("rb") as source:
        mapped = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        store = kastore.loads(wrap(mapped))
        assert store["b"].tolist() == [0, 1, 2, 3, 4]
        store.close()
        del store
        gc.collect()
        assert not mapped.closed
        assert mapped[:4] == b"\x89KAS"
    finally:
        mapped.close()


def test_repr_names_the_number_of_keys(path: Path) -> None:
    with kastore.load(path) as store:
        assert "3 keys" in repr(store)
