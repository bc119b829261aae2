"""The names of the reference kastore's ``kastore.store`` module, for code written against it.

The format's constants (``MAGIC``, ``VERSION_MAJOR``, ``HEADER_SIZE``, the type
codes ``INT8`` to ``FLOAT64`` and their dtype names), an ``ItemDescriptor`` that
packs and unpacks one 64-byte descriptor, and a writer in two steps:
``pack_items`` lays a mapping out as descriptors, and ``write_file`` writes the
descriptors as they are then. Changing a descriptor between the two steps is how
a malformed file is made on purpose, to test a reader.

``load`` and ``dump`` do not use this module; the layout itself is described once,
in ``kastore._format``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

import numpy as np

from ._format import (
    ARRAY_ALIGN,
    DTYPES,
    HEADER,
    HEADER_SIZE,
    ITEM_DESCRIPTOR,
    ITEM_DESCRIPTOR_SIZE,
    MAGIC,
    TYPE_CODES,
    VERSION_MAJOR,
    VERSION_MINOR,
    aligned,
)
from ._writer import _array

__all__ = [
    "ARRAY_ALIGN",
    "FLOAT32",
    "FLOAT64",
    "HEADER_SIZE",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "ITEM_DESCRIPTOR_SIZE",
    "MAGIC",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "ItemDescriptor",
    "np_dtype_to_type_map",
    "pack_items",
    "type_size",
    "type_to_np_dtype_map",
    "write_file",
]

INT8, UINT8, INT16, UINT16, INT32, UINT32, INT64, UINT64, FLOAT32, FLOAT64 = range(len(DTYPES))

#: dtype name ("int8", ...) -> type code.
np_dtype_to_type_map: dict[str, int] = {dtype.name: code for code, dtype in enumerate(DTYPES)}
#: Type code -> dtype name.
type_to_np_dtype_map: dict[int, str] = {code: name for name, code in np_dtype_to_type_map.items()}


def type_size(ka_type: int) -> int:
    """The size in bytes of one element of type code ``ka_type`` (``KeyError`` if none)."""
    return _TYPE_SIZES[ka_type]


_TYPE_SIZES = {code: dtype.itemsize for code, dtype in enumerate(DTYPES)}


@dataclass(eq=False)
class ItemDescriptor:
    """One item descriptor; ``key`` and ``array`` are the item's data, for ``write_file``."""

    size: ClassVar[int] = ITEM_DESCRIPTOR_SIZE

    type: int
    key_start: int = 0
    key_len: int = 0
    array_start: int = 0
    array_len: int = 0
    key: bytes = b""
    array: np.ndarray | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return (
            f"type={self.type} key_start={self.key_start} key_len={self.key_len} "
            f"array_start={self.array_start} array_len={self.array_len}"
        )

    def pack(self) -> bytes:
        """The descriptor's 64 bytes."""
        record = np.zeros(1, dtype=ITEM_DESCRIPTOR)
        for name in ("type", "key_start", "key_len", "array_start", "array_len"):
            record[name] = getattr(self, name)
        return record.tobytes()

    @classmethod
    def unpack(cls, descriptor: bytes | bytearray | memoryview) -> ItemDescriptor:
        """The descriptor in the first 64 bytes of ``descriptor``."""
        if len(descriptor) < cls.size:
            raise ValueError(f"a descriptor is {cls.size} bytes, got {len(descriptor)}")
        record = np.frombuffer(descriptor, dtype=ITEM_DESCRIPTOR, count=1)[0]
        return cls(
            int(record["type"]),
            int(record["key_start"]),
            int(record["key_len"]),
            int(record["array_start"]),
            int(record["array_len"]),
        )


def pack_items(
    arrays: Mapping[str, Any], key_encoding: str = "utf-8"
) -> tuple[list[ItemDescriptor], int]:
    """Lay ``arrays`` out as ``dump`` does: the descriptors, in key order, and the file size.

    Raises ``TypeError`` and ``ValueError`` for what ``dump`` refuses.
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"data must be a Mapping of str to arrays, not {type(arrays).__name__}")
    for key in arrays:
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, got {key!r} of type {type(key).__name__}")
        if not key:
            raise ValueError("keys must not be empty")
    keys = sorted(arrays)
    offset = HEADER_SIZE + len(keys) * ITEM_DESCRIPTOR_SIZE
    descriptors = []
    for key in keys:
        array = _array(key, arrays[key])
        code = TYPE_CODES[array.dtype.kind, array.dtype.itemsize]
        encoded = key.encode(key_encoding)
        descriptor = ItemDescriptor(code, offset, len(encoded), key=encoded, array=array)
        descriptors.append(descriptor)
        offset += len(encoded)
    for descriptor in descriptors:
        assert descriptor.array is not None
        offset = aligned(offset)
        descriptor.array_start = offset
        descriptor.array_len = len(descriptor.array)
        offset += descriptor.array_len * type_size(descriptor.type)
    return descriptors, offset


def write_file(fileobj: IO[bytes], descriptors: list[ItemDescriptor], file_size: int) -> None:
    """Write a file with ``descriptors`` as they are, and ``file_size`` in its header.

    The keys follow the descriptors, one after another; then each array, as
    little-endian ``type`` values, zero-padded first up to its ``array_start``
    if that lies ahead. Nothing is checked, so the file may be malformed.
    """
    fileobj.write(HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, len(descriptors), file_size))
    for descriptor in descriptors:
        fileobj.write(descriptor.pack())
    position = HEADER_SIZE + len(descriptors) * ITEM_DESCRIPTOR_SIZE
    for descriptor in descriptors:
        fileobj.write(descriptor.key)
        position += len(descriptor.key)
    for descriptor in descriptors:
        if descriptor.array_start > position:
            fileobj.write(bytes(descriptor.array_start - position))
            position = descriptor.array_start
        if descriptor.array is not None and len(descriptor.array):
            dtype = DTYPES[descriptor.type] if descriptor.type < len(DTYPES) else None
            data = np.ascontiguousarray(descriptor.array, dtype=dtype).tobytes()
            fileobj.write(data)
            position += len(data)
