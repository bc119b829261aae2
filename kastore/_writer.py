"""Writing stores: the layout of a mapping, then its bytes, without copying arrays."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _files
from ._format import (
    ARRAY_ALIGN,
    DTYPES,
    HEADER,
    HEADER_SIZE,
    ITEM_DESCRIPTOR,
    ITEM_DESCRIPTOR_SIZE,
    MAGIC,
    MAX_ITEMS,
    PADDING,
    TYPE_CODES,
    VERSION_MAJOR,
    VERSION_MINOR,
    aligned,
)

__all__ = ["dump", "dumps"]

#: Type code by ``dtype.char``: a cheap lookup for the per-key loop.
_CODE_BY_CHAR: dict[str, int] = {
    np.dtype(char).char: TYPE_CODES[np.dtype(char).kind, np.dtype(char).itemsize]
    for char in "bBhHiIlLqQfd"
}

#: Arrays that need converting (byte-swapped or strided) go out in pieces of
#: about this many bytes, so writing never holds a second full copy.
_PIECE_BYTES = 1 << 20
#: Arrays smaller than this are gathered into one write with their neighbours.
_SMALL_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class _Plan:
    head: bytes
    """Header, descriptors, keys and the padding before the first array."""
    arrays: list[np.ndarray]
    sizes: list[int]
    """Bytes of each array, little-endian."""
    file_size: int


def _array(key: str, value: object) -> np.ndarray:
    try:
        array = np.asarray(value)
    except Exception as err:  # numpy raises many types for odd objects
        raise ValueError(f"cannot convert the value for key {key!r} to an array: {err}") from err
    if array.ndim != 1:
        raise ValueError(
            f"the array for key {key!r} must be one-dimensional, got {array.ndim} dimensions"
        )
    if array.dtype.char not in _CODE_BY_CHAR:
        raise ValueError(
            f"the array for key {key!r} has dtype {array.dtype}, which kastore cannot "
            f"store: use one of {', '.join(str(d) for d in DTYPES)}"
        )
    return array


def _plan(data: object, key_encoding: str) -> _Plan:
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a Mapping of str to arrays, not {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise TypeError(f"keys must be str, got {key!r} of type {type(key).__name__}")
    keys = sorted(data)
    n = len(keys)
    if n > MAX_ITEMS:
        raise ValueError(f"too many keys: {n}, the format allows at most {MAX_ITEMS}")
    if n and not keys[0]:
        raise ValueError("keys must not be empty")

    arrays: list[np.ndarray] = []
    codes: list[int] = []
    append_array = arrays.append
    append_code = codes.append
    code_by_char = _CODE_BY_CHAR
    ndarray = np.ndarray
    for key in keys:
        value = data[key]
        if type(value) is not ndarray or value.ndim != 1 or value.dtype.char not in code_by_char:
            value = _array(key, value)
        append_array(value)
        append_code(code_by_char[value.dtype.char])

    encoded = [key.encode(key_encoding) for key in keys]
    key_lens = np.fromiter(map(len, encoded), dtype=np.uint64, count=n)
    types = np.array(codes, dtype=np.uint8)
    lengths = np.fromiter(map(len, arrays), dtype=np.uint64, count=n)
    item_sizes = np.array([dtype.itemsize for dtype in DTYPES], dtype=np.uint64)
    nbytes = lengths * item_sizes[types]

    keys_start = HEADER_SIZE + n * ITEM_DESCRIPTOR_SIZE
    key_ends = np.cumsum(key_lens, dtype=np.uint64) + np.uint64(keys_start)
    keys_end = int(key_ends[-1]) if n else keys_start
    first_array = aligned(keys_end)
    padded = (nbytes + np.uint64(ARRAY_ALIGN - 1)) & ~np.uint64(ARRAY_ALIGN - 1)
    array_starts = np.empty(n, np.uint64)
    if n:
        array_starts[0] = first_array
        np.cumsum(padded[:-1], out=array_starts[1:])
        array_starts[1:] += np.uint64(first_array)
    file_size = int(array_starts[-1] + nbytes[-1]) if n else HEADER_SIZE

    descriptors = np.zeros(n, ITEM_DESCRIPTOR)
    descriptors["type"] = types
    descriptors["key_start"][:1] = keys_start
    descriptors["key_start"][1:] = key_ends[:-1]
    descriptors["key_len"] = key_lens
    descriptors["array_start"] = array_starts
    descriptors["array_len"] = lengths
    head = b"".join(
        (
            HEADER.pack(MAGIC, VERSION_MAJOR, VERSION_MINOR, n, file_size),
            descriptors.tobytes(),
            *encoded,
            PADDING[first_array - keys_end],
        )
    )
    return _Plan(head=head, arrays=arrays, sizes=nbytes.tolist(), file_size=file_size)


def _is_writable_as_is(array: np.ndarray) -> bool:
    return bool(array.flags.c_contiguous) and array.dtype.byteorder != ">"


def _converted_pieces(array: np.ndarray) -> Iterator[np.ndarray]:
    """Little-endian, contiguous pieces of ``array``, a bounded amount at a time."""
    little = array.dtype.newbyteorder("<")
    step = max(1, _PIECE_BYTES // array.dtype.itemsize)
    for start in range(0, len(array), step):
        yield np.ascontiguousarray(array[start : start + step], dtype=little)


def _pieces(plan: _Plan) -> Iterator[Any]:
    """The file's bytes as buffers: small neighbours joined, large arrays as views."""
    pending: list[Any] = [plan.head]
    pending_bytes = len(plan.head)
    last = len(plan.arrays) - 1
    for i, (array, size) in enumerate(zip(plan.arrays, plan.sizes, strict=True)):
        padding = PADDING[-size % ARRAY_ALIGN] if i != last else b""
        if size < _SMALL_BYTES:
            pending.append(array if _is_writable_as_is(array) else array.astype(array.dtype.newbyteorder("<")))
            pending.append(padding)
            pending_bytes += size + len(padding)
            if pending_bytes >= _PIECE_BYTES:
                yield b"".join(pending)
                pending = []
                pending_bytes = 0
            continue
        if pending:
            yield b"".join(pending)
            pending = []
            pending_bytes = 0
        if _is_writable_as_is(array):
            yield array
        else:
            yield from _converted_pieces(array)
        if padding:
            pending.append(padding)
            pending_bytes = len(padding)
    if pending:
        yield b"".join(pending)


def _write_all(write: Any, piece: Any) -> None:
    view = memoryview(piece).cast("B")
    while view:
        written = write(view)
        if written is None or written >= len(view):
            return
        view = view[written:]


def dumps(data: Mapping[str, Any], key_encoding: str = "utf-8") -> bytes:
    """Encode ``data`` in kastore format.

    Parameters:
        data: a mapping of non-empty ``str`` keys to one-dimensional array-likes
            of a supported dtype (converted with ``numpy.asarray``).
        key_encoding: the encoding of the keys.

    Returns:
        The encoded store, byte for byte what ``dump`` writes.

    Raises:
        TypeError: ``data`` is not a mapping, or a key is not a ``str``.
        ValueError: an empty key, or a value that is not a 1-D array of a
            supported dtype.
    """
    plan = _plan(data, key_encoding)
    return b"".join(_pieces(plan))


def dump(
    data: Mapping[str, Any],
    file: _files.FileArg,
    key_encoding: str = "utf-8",
    engine: str = "python",
) -> None:
    """Write ``data`` to ``file`` in kastore format.

    Parameters:
        data: as for ``dumps``.
        file: a path, an integer file descriptor or a file object with
            ``write()``. Descriptors and file objects are left open, positioned
            after the store. Everything is checked before anything is written.
        key_encoding: the encoding of the keys.
        engine: ``"python"``; ``"c"`` raises ``RuntimeError`` in this build.

    Raises:
        TypeError, ValueError: as for ``dumps``; also ``TypeError`` for a
            ``file`` of an unsupported type and ``ValueError`` for an unknown
            ``engine``.
    """
    _files.check_engine(engine)
    if not (_files.is_path(file) or isinstance(file, int) or hasattr(file, "write")):
        raise TypeError(
            "file must be a path (str, bytes or os.PathLike), an integer file descriptor "
            f"or a file object with a write() method, not {type(file).__name__}"
        )
    plan = _plan(data, key_encoding)
    with _files.open_sink(file) as sink:
        write = sink.write
        for piece in _pieces(plan):
            _write_all(write, piece)
