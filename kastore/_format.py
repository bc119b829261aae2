"""The kastore binary format, version 1.0.

A kastore file maps string keys to one-dimensional arrays of fixed-size numbers.
All integers are little-endian. A file has four parts, in this order:

1. **Header**, ``HEADER_SIZE`` (64) bytes:

   ======  =====  ==============================================
   offset  size   field
   ======  =====  ==============================================
   0       8      magic number ``89 4B 41 53 0D 0A 1A 0A``
   8       2      u16 major version (``VERSION_MAJOR``, 1)
   10      2      u16 minor version (``VERSION_MINOR``, 0)
   12      4      u32 number of items
   16      8      u64 file size in bytes
   24      40     reserved, zero
   ======  =====  ==============================================

2. **Item descriptors**, one of ``ITEM_DESCRIPTOR_SIZE`` (64) bytes per item:

   ======  =====  ==============================================
   offset  size   field
   ======  =====  ==============================================
   0       1      u8 type code (see ``DTYPES``)
   1       7      reserved, zero
   8       8      u64 key start (absolute byte offset)
   16      8      u64 key length in bytes
   24      8      u64 array start (absolute byte offset)
   32      8      u64 array length in elements
   40      24     reserved, zero
   ======  =====  ==============================================

3. **Keys**, encoded (UTF-8 by default), packed densely right after the
   descriptors, in sorted key order. The first key starts at
   ``HEADER_SIZE + n * ITEM_DESCRIPTOR_SIZE``; each next key starts where the
   previous one ends.

4. **Arrays**, in the same order as the keys. Each starts on an ``ARRAY_ALIGN``
   (8) byte boundary, zero-padded from the end of whatever precedes it, and
   arrays are otherwise packed densely. The file size is the end of the last
   array, or the aligned end of the keys if the last array is empty, and
   ``HEADER_SIZE`` for a store with no items.

Type codes 0 to 9 are int8, uint8, int16, uint16, int32, uint32, int64, uint64,
float32 and float64, always stored little-endian.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np

MAGIC: Final = b"\x89KAS\r\n\x1a\n"
VERSION_MAJOR: Final = 1
VERSION_MINOR: Final = 0
ARRAY_ALIGN: Final = 8
MAX_ITEMS: Final = 2**32 - 1

HEADER: Final = struct.Struct("<8sHHIQ40x")
HEADER_SIZE: Final = HEADER.size

#: One item descriptor; ``numpy.frombuffer`` decodes a whole block at once.
ITEM_DESCRIPTOR: Final = np.dtype(
    [
        ("type", "u1"),
        ("_reserved0", "V7"),
        ("key_start", "<u8"),
        ("key_len", "<u8"),
        ("array_start", "<u8"),
        ("array_len", "<u8"),
        ("_reserved1", "V24"),
    ]
)
ITEM_DESCRIPTOR_SIZE: Final = ITEM_DESCRIPTOR.itemsize

#: Type code -> little-endian dtype, indexed by the code.
DTYPES: Final[tuple[np.dtype[np.generic], ...]] = tuple(
    np.dtype(name).newbyteorder("<")
    for name in (
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
)
NUM_TYPES: Final = len(DTYPES)

#: (kind, itemsize) -> type code; independent of byte order and of the C type
#: numpy happens to use for a width (``long`` versus ``long long``).
TYPE_CODES: Final[dict[tuple[str, int], int]] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in enumerate(DTYPES)
}

#: Item size of each type code, as an array for vectorised layout arithmetic.
ITEM_SIZES: Final = np.array([dtype.itemsize for dtype in DTYPES], dtype=np.uint64)

PADDING: Final = tuple(bytes(n) for n in range(ARRAY_ALIGN))

assert HEADER_SIZE == 64
assert ITEM_DESCRIPTOR_SIZE == 64


def aligned(offset: int) -> int:
    """Round ``offset`` up to the next multiple of ``ARRAY_ALIGN``."""
    return (offset + ARRAY_ALIGN - 1) & ~(ARRAY_ALIGN - 1)
