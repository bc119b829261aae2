"""Writing stores: the layout of a mapping, then its bytes, without copying arrays."""

from __future__ import annotations

import codecs
import itertools
import operator
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
    ITEM_SIZES,
    MAGIC,
    MAX_ITEMS,
    PADDING,
    TYPE_CODES,
    VERSION_MAJOR,
    VERSION_MINOR,
    aligned,
)

__all__ = ["dump", "dumps"]

#: Type code by native dtype: a cheap lookup for the per-key loop. Byte-swapped
#: dtypes miss it on purpose and take the slow path, which converts them.
_CODE_BY_DTYPE: dict[np.dtype[Any], int] = {
    np.dtype(char): TYPE_CODES[np.dtype(char).kind, np.dtype(char).itemsize]
    for char in "bBhHiIlLqQfd"
}

#: Arrays that need converting (byte-swapped or strided) go out in pieces of
#: about this many bytes, so writing never holds a second full copy.
_PIECE_BYTES = 1 << 20
#: Outputs at least this large get their disk space reserved before writing.
_PREALLOCATE_BYTES = 1 << 24
#: Arrays smaller than this are gathered into one write with their neighbours.
_SMALL_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class _Plan:
    head: bytes
    """Header, descriptors, keys and the padding before the first array."""
    arrays: list[np.ndarray]
    paddings: list[bytes]
    """The zero bytes after each array."""
    converted: frozenset[int]
    """Indexes of the arrays that must be converted (byte-swapped or strided)."""
    largest: int
    """Size of the largest array in bytes."""
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
    if (array.dtype.kind, array.dtype.itemsize) not in TYPE_CODES:
        raise ValueError(
            f"the array for key {key!r} has dtype {array.dtype}, which kastore cannot "
            f"store: use one of {', '.join(str(d) for d in DTYPES)}"
        )
    return array


_dtype_of = operator.attrgetter("dtype")
_ndim_of = operator.attrgetter("ndim")
_is_contiguous = operator.attrgetter("flags.c_contiguous")


def _arrays(keys: list[str], values: list[Any]) -> tuple[list[np.ndarray], list[int], list[int]]:
    """The arrays to write, their type codes, and which of them need converting.

    The common case, native contiguous 1-D arrays, is checked a whole column at
    a time; anything else goes through ``_array`` one value at a time.
    """
    if set(map(type, values)) <= {np.ndarray}:
        codes = list(map(_CODE_BY_DTYPE.get, map(_dtype_of, values)))
        if (
            None not in codes
            and set(map(_ndim_of, values)) <= {1}
            and all(map(_is_contiguous, values))
        ):
            return values, codes, []  # type: ignore[return-value]
    arrays: list[np.ndarray] = []
    codes = []
    converted: list[int] = []
    for i, (key, value) in enumerate(zip(keys, values, strict=True)):
        array = _array(key, value)
        arrays.append(array)
        codes.append(TYPE_CODES[array.dtype.kind, array.dtype.itemsize])
        if not _is_writable_as_is(array):
            converted.append(i)
    return arrays, codes, converted  # type: ignore[return-value]


def _plan(data: object, key_encoding: str) -> _Plan:
    if not isinstance(data, Mapping):
        raise TypeError(f"data must be a Mapping of str to arrays, not {type(data).__name__}")
    if not all(map(isinstance, data, itertools.repeat(str))):
        key = next(key for key in data if not isinstance(key, str))
        raise TypeError(f"keys must be str, got {key!r} of type {type(key).__name__}")
    keys = sorted(data)
    n = len(keys)
    if n > MAX_ITEMS:
        raise ValueError(f"too many keys: {n}, the format allows at most {MAX_ITEMS}")
    if n and not keys[0]:
        raise ValueError("keys must not be empty")

    arrays, codes, converted = _arrays(keys, list(map(data.__getitem__, keys)))

    key_block, key_lens = _encode_keys(keys, key_encoding)
    types = np.array(codes, dtype=np.uint8)
    lengths = np.fromiter(map(len, arrays), dtype=np.uint64, count=n)
    nbytes = lengths * ITEM_SIZES[types]

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
            key_block,
            PADDING[first_array - keys_end],
        )
    )
    paddings = [PADDING[p] for p in (padded - nbytes).tolist()]
    if n:
        paddings[-1] = b""
    return _Plan(
        head=head,
        arrays=arrays,
        paddings=paddings,
        converted=frozenset(converted),
        largest=int(nbytes.max()) if n else 0,
        file_size=file_size,
    )


#: Codecs that give one byte per character or fail, with no state between
#: characters: encoding the keys together gives the bytes of each in turn.
_BYTE_PER_CHARACTER = frozenset({"ascii", "latin-1", "iso8859-1", "utf-8"})


def _encode_keys(keys: list[str], key_encoding: str) -> tuple[bytes, npt.NDArray[np.uint64]]:
    """The keys' bytes, packed, and the length in bytes of each."""
    n = len(keys)
    if n and codecs.lookup(key_encoding).name in _BYTE_PER_CHARACTER:
        text = "".join(keys)
        block = text.encode(key_encoding)
        if len(block) == len(text):  # every character took one byte (UTF-8: all ASCII)
            return block, np.fromiter(map(len, keys), dtype=np.uint64, count=n)
    encoded = [key.encode(key_encoding) for key in keys]
    return b"".join(encoded), np.fromiter(map(len, encoded), dtype=np.uint64, count=n)


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
    if not plan.converted and plan.largest < _SMALL_BYTES:
        # Many small arrays: gather them without a Python step per array.
        pairs = zip(plan.arrays, plan.paddings, strict=True)
        parts: list[Any] = [plan.head, *itertools.chain.from_iterable(pairs)]
        batch = 2 * max(1, _PIECE_BYTES // max(1, plan.largest))
        for start in range(0, len(parts), batch):
            yield b"".join(parts[start : start + batch])
        return
    pending: list[Any] = [plan.head]
    pending_bytes = len(plan.head)
    for i, (array, padding) in enumerate(zip(plan.arrays, plan.paddings, strict=True)):
        if array.nbytes < _SMALL_BYTES:
            if i in plan.converted:
                array = array.astype(array.dtype.newbyteorder("<"))
            pending += (array, padding)
            pending_bytes += array.nbytes + len(padding)
            if pending_bytes >= _PIECE_BYTES:
                yield b"".join(pending)
                pending, pending_bytes = [], 0
            continue
        if pending:
            yield b"".join(pending)
        if i in plan.converted:
            yield from _converted_pieces(array)
        else:
            yield array
        pending, pending_bytes = [padding], len(padding)
    if pending:
        yield b"".join(pending)


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
            A path to a regular file is written to a temporary file in the same
            folder, renamed over the target once complete (keeping its mode),
            so stores loaded from that path keep their data, and a failed or
            interrupted dump leaves the old file as it was. Symbolic links are
            followed; FIFOs and devices are written in place.
        key_encoding: the encoding of the keys.
        engine: ``"python"`` (``PY_ENGINE``) or ``"c"`` (``C_ENGINE``), which
            writes with the C library to a path or anything with a
            ``fileno()``, and raises ``RuntimeError`` if this installation was
            built without a C compiler.

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
    if engine == _files.C_ENGINE:
        from . import _cengine

        _cengine.extension()
        with _files.open_sink(file) as sink:
            _cengine.dump(data, sink, key_encoding=key_encoding)
        return
    plan = _plan(data, key_encoding)
    with _files.open_sink(file) as sink:
        if plan.file_size >= _PREALLOCATE_BYTES:
            _files.preallocate(sink, plan.file_size)
        for piece in _pieces(plan):
            _files.write_all(sink, piece)
