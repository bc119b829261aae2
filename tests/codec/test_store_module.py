"""``kastore.store``: the reference's names for the format and its two-step writer."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given

import kastore
from kastore import store

from ._support import DTYPE_NAMES, FAST, MAGIC, stores


def _written(descriptors: list[store.ItemDescriptor], file_size: int) -> bytes:
    out = io.BytesIO()
    store.write_file(out, descriptors, file_size)
    return out.getvalue()


@pytest.mark.python_only
def test_the_constants_are_the_specs() -> None:
    assert store.MAGIC == MAGIC
    assert (store.VERSION_MAJOR, store.VERSION_MINOR) == (1, 0)
    assert (store.HEADER_SIZE, store.ITEM_DESCRIPTOR_SIZE, store.ARRAY_ALIGN) == (64, 64, 8)
    codes = [getattr(store, name.upper()) for name in DTYPE_NAMES]
    assert codes == list(range(10))
    assert store.np_dtype_to_type_map == dict(zip(DTYPE_NAMES, codes, strict=True))
    assert store.type_to_np_dtype_map == dict(zip(codes, DTYPE_NAMES, strict=True))
    assert [store.type_size(code) for code in codes] == [1, 1, 2, 2, 4, 4, 8, 8, 4, 8]
    with pytest.raises(KeyError):
        store.type_size(10)


@pytest.mark.python_only
@FAST
@given(data=stores)
def test_pack_items_then_write_file_is_what_dumps_writes(data: dict[str, np.ndarray]) -> None:
    encoded = kastore.dumps(data)
    descriptors, file_size = store.pack_items(data)
    assert file_size == len(encoded)
    size = store.ItemDescriptor.size
    assert [str(d) for d in descriptors] == [
        str(store.ItemDescriptor.unpack(encoded[64 + i * size : 64 + (i + 1) * size]))
        for i in range(len(data))
    ]
    assert _written(descriptors, file_size) == encoded


@pytest.mark.python_only
def test_a_descriptor_packs_and_unpacks() -> None:
    descriptor = store.ItemDescriptor(9, 128, 3, 136, 2**40)
    packed = descriptor.pack()
    assert packed == struct.pack("<B7xQQQQ24x", 9, 128, 3, 136, 2**40)
    again = store.ItemDescriptor.unpack(packed)
    assert (again.type, again.key_start, again.key_len, again.array_start, again.array_len) == (
        9,
        128,
        3,
        136,
        2**40,
    )
    assert str(again) == "type=9 key_start=128 key_len=3 array_start=136 array_len=1099511627776"
    with pytest.raises(ValueError, match="64 bytes"):
        store.ItemDescriptor.unpack(packed[:63])


@pytest.mark.python_only
@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([("a", [1])], TypeError),
        ({b"a": [1]}, TypeError),
        ({"": [1]}, ValueError),
        ({"a": np.zeros((2, 2))}, ValueError),
        ({"a": np.zeros(2, dtype=np.complex128)}, ValueError),
    ],
    ids=["not-a-mapping", "bytes-key", "empty-key", "2-d", "complex"],
)
def test_pack_items_refuses_what_dump_refuses(data: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        store.pack_items(data)
    with pytest.raises(error):
        kastore.dumps(data)


def _change(descriptor: store.ItemDescriptor, field: str, by: int) -> None:
    setattr(descriptor, field, getattr(descriptor, field) + by)


@pytest.mark.parametrize("read_all", [False, True])
@pytest.mark.parametrize(
    ("index", "field", "by"),
    [
        (0, "type", 11),
        (0, "key_start", 1),
        (1, "key_start", -1),
        (0, "array_start", 8),
        (1, "array_start", -8),
        (0, "key_len", 1),
        (1, "array_len", 1),
    ],
)
def test_a_changed_descriptor_makes_a_file_load_refuses(
    tmp_path: Path, index: int, field: str, by: int, read_all: bool
) -> None:
    descriptors, file_size = store.pack_items({"a": np.arange(100), "b": np.arange(3.0)})
    _change(descriptors[index], field, by)
    path = tmp_path / "bad.kas"
    path.write_bytes(_written(descriptors, file_size))
    with pytest.raises(kastore.FileFormatError):
        dict(kastore.load(path, read_all=read_all))


def test_unchanged_descriptors_make_a_file_load_reads(tmp_path: Path) -> None:
    data = {"a": np.arange(100), "b": np.arange(3.0)}
    path = tmp_path / "good.kas"
    path.write_bytes(_written(*store.pack_items(data)))
    with kastore.load(path) as loaded:
        assert sorted(loaded) == ["a", "b"]
        for key, array in data.items():
            np.testing.assert_array_equal(loaded[key], array)
