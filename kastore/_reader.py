"""Reading stores: validation of the layout and the read-only ``Store`` mapping."""

from __future__ import annotations

import itertools
import mmap
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _files
from ._format import (
    DTYPES,
    HEADER,
    HEADER_SIZE,
    ITEM_DESCRIPTOR,
    ITEM_DESCRIPTOR_SIZE,
    ITEM_SIZES,
    MAGIC,
    NUM_TYPES,
    VERSION_MAJOR,
    aligned,
)
from .exceptions import (
    FileFormatError,
    StoreClosedError,
    VersionTooNewError,
    VersionTooOldError,
)

__all__ = ["ArrayInfo", "Store", "load", "loads"]


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """What is known about a stored array without reading it."""

    dtype: np.dtype[Any]
    shape: tuple[int]
    size: int
    """Size of the array in bytes."""


@dataclass(frozen=True, slots=True)
class _Header:
    num_items: int
    file_size: int


def _parse_header(data: bytes | bytearray | memoryview, available: int) -> _Header:
    """Check the 64-byte header; ``available`` is how many bytes the source has."""
    if available == 0:
        raise EOFError("no kastore data: the source is empty or at its end")
    if len(data) < HEADER_SIZE:
        raise FileFormatError(
            f"truncated file: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header"
        )
    magic, major, _minor, num_items, file_size = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FileFormatError(f"bad magic number: expected {MAGIC!r}, got {bytes(magic)!r}")
    if major < VERSION_MAJOR:
        raise VersionTooOldError(major, VERSION_MAJOR)
    if major > VERSION_MAJOR:
        raise VersionTooNewError(major, VERSION_MAJOR)
    needed = HEADER_SIZE + num_items * ITEM_DESCRIPTOR_SIZE
    if file_size < needed:
        raise FileFormatError(
            f"bad file size in header: {file_size} bytes, but {num_items} items need "
            f"at least {needed}"
        )
    return _Header(num_items=num_items, file_size=file_size)


def _check_fits(header: _Header, available: int, *, exact: bool) -> None:
    if header.file_size > available:
        raise FileFormatError(
            f"truncated file: header gives a size of {header.file_size} bytes, "
            f"only {available} are there"
        )
    if exact and header.file_size != available:
        raise FileFormatError(
            f"bad file size in header: {header.file_size} bytes, but the file has {available}"
        )


def _first_mismatch(found: npt.NDArray[np.uint64], expected: npt.NDArray[np.uint64]) -> int:
    return int(np.flatnonzero(found != expected)[0])


@dataclass(frozen=True, slots=True)
class _Layout:
    size: int
    """The store's size in bytes."""
    keys: list[str]
    types: npt.NDArray[np.uint8]
    array_starts: npt.NDArray[np.uint64]
    array_lens: npt.NDArray[np.uint64]


def _parse_layout(buffer: memoryview, header: _Header, key_encoding: str) -> _Layout:
    """Check the descriptors against the layout rules and decode the keys.

    Every offset is compared with where the format says it must be, so nothing
    points outside the file or overlaps something else once this returns.
    """
    n = header.num_items
    file_size = np.uint64(header.file_size)
    descriptors = np.frombuffer(buffer, ITEM_DESCRIPTOR, n, HEADER_SIZE)
    types = descriptors["type"]
    if n and int(types.max()) >= NUM_TYPES:
        i = int(np.argmax(types >= NUM_TYPES))
        raise FileFormatError(
            f"bad type code {int(types[i])} for item {i}: expected 0 to {NUM_TYPES - 1}"
        )

    keys_start = HEADER_SIZE + n * ITEM_DESCRIPTOR_SIZE
    key_lens = descriptors["key_len"]
    key_ends = np.cumsum(key_lens, dtype=np.uint64) + np.uint64(keys_start)
    # Each length is checked alone first so that the running sum cannot wrap.
    if n and (int(key_lens.max()) > header.file_size or int(key_ends.max()) > header.file_size):
        i = int(np.argmax((key_lens > file_size) | (key_ends > file_size)))
        raise FileFormatError(
            f"key {i} lies outside the file: it ends past byte {header.file_size}"
        )
    key_starts = descriptors["key_start"]
    expected_key_starts = np.empty(n, np.uint64)
    if n:
        expected_key_starts[0] = keys_start
        expected_key_starts[1:] = key_ends[:-1]
    if not np.array_equal(key_starts, expected_key_starts):
        i = _first_mismatch(key_starts, expected_key_starts)
        raise FileFormatError(
            f"bad key start for item {i}: expected {int(expected_key_starts[i])} "
            f"(keys are packed in order after the descriptors), got {int(key_starts[i])}"
        )
    keys_end = int(key_ends[-1]) if n else keys_start

    array_lens = descriptors["array_len"]
    if n and int(array_lens.max()) > header.file_size:
        i = int(np.argmax(array_lens > file_size))
        raise FileFormatError(
            f"array {i} lies outside the file: {int(array_lens[i])} elements in a "
            f"{header.file_size}-byte file"
        )
    nbytes = array_lens * ITEM_SIZES[types]
    padded = (nbytes + np.uint64(7)) & ~np.uint64(7)
    first_array = aligned(keys_end)
    expected_starts = np.empty(n, np.uint64)
    if n:
        expected_starts[0] = first_array
        np.cumsum(padded[:-1], out=expected_starts[1:])
        expected_starts[1:] += np.uint64(first_array)
    array_starts = descriptors["array_start"]
    if not np.array_equal(array_starts, expected_starts):
        i = _first_mismatch(array_starts, expected_starts)
        raise FileFormatError(
            f"bad array start for item {i}: expected {int(expected_starts[i])} "
            f"(arrays are 8-byte aligned and packed in order after the keys), "
            f"got {int(array_starts[i])}"
        )
    end = int(array_starts[-1] + nbytes[-1]) if n else HEADER_SIZE
    if end > header.file_size:
        raise FileFormatError(
            f"array {n - 1} lies outside the file: it ends at byte {end}, the file "
            f"size is {header.file_size}"
        )
    if end != header.file_size:
        raise FileFormatError(
            f"bad file size in header: {header.file_size} bytes, but the layout ends at byte {end}"
        )
    keys = _decode_keys(buffer[keys_start:keys_end], key_ends - np.uint64(keys_start), key_encoding)
    # Copies, not views of the descriptors: a view would pin the buffer, and
    # Store.close() could then never unmap the file.
    return _Layout(
        size=header.file_size,
        keys=keys,
        types=types.copy(),
        array_starts=array_starts.copy(),
        array_lens=array_lens.copy(),
    )


def _decode_keys(block: memoryview, ends: npt.NDArray[np.uint64], key_encoding: str) -> list[str]:
    raw = bytes(block)
    bounds = [0, *ends.tolist()]
    try:
        if raw.isascii() and key_encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
            # One decode for the whole block; ASCII characters are single bytes,
            # so byte offsets are character offsets.
            text = raw.decode("ascii")
            keys = [text[a:b] for a, b in itertools.pairwise(bounds)]
        else:
            keys = [raw[a:b].decode(key_encoding) for a, b in itertools.pairwise(bounds)]
    except UnicodeDecodeError as err:
        raise FileFormatError(f"a key does not decode as {key_encoding}: {err}") from err
    return keys


def _check_unique(keys: list[str]) -> None:
    """Refuse a file that holds a key twice."""
    # Writers store keys sorted, and strictly increasing keys are all distinct:
    # one pass of comparisons instead of hashing every key.
    if all(map(operator.lt, keys, itertools.islice(keys, 1, None))):
        return
    if len(set(keys)) != len(keys):
        raise FileFormatError("duplicate keys in file")


class Store(Mapping[str, np.ndarray]):
    """A read-only mapping of keys to the arrays of one kastore file.

    Arrays are read-only views of the file's bytes (memory-mapped where the
    source allows), created on first access; from a file that can seek but not
    be mapped, each array is read when it is first used. They stay valid after
    ``close()``; the store itself does not.
    """

    __slots__ = ("_arrays", "_columns", "_data", "_index", "_keys", "_layout", "_owns_map")

    def __init__(
        self,
        data: memoryview | _files.SeekableFile,
        layout: _Layout,
        *,
        owns_map: bool = False,
        keys_checked: bool = False,
    ) -> None:
        self._data: memoryview | _files.SeekableFile | None = data
        # Only a map that load() made is ours to close; loads() may be given one.
        self._owns_map = owns_map
        self._layout = layout
        self._keys = layout.keys
        if not keys_checked:  # the C library has checked them already
            _check_unique(layout.keys)
        # Built on the first lookup: listing the keys of a large store needs no
        # dict of them, and hashing every key is much of what opening costs.
        self._index: dict[str, int] | None = None
        self._arrays: dict[str, np.ndarray] = {}
        # Type codes, lengths and starts as Python lists, made on first access:
        # indexing numpy arrays one element at a time costs more than the view.
        self._columns: tuple[list[int], list[int], list[int]] | None = None

    def _lookup(self) -> dict[str, int]:
        if self._index is None:
            self._index = dict(zip(self._keys, range(len(self._keys)), strict=True))
        return self._index

    def _open_data(self) -> memoryview | _files.SeekableFile:
        if self._data is None:
            raise StoreClosedError("the store is closed")
        return self._data

    def __getitem__(self, key: str) -> np.ndarray:
        # The hot path: an array made before (close() empties the cache).
        array = self._arrays.get(key)
        if array is None:
            data = self._open_data()
            i = (self._index or self._lookup())[key]
            if self._columns is None:
                layout = self._layout
                self._columns = (
                    layout.types.tolist(),
                    layout.array_lens.tolist(),
                    layout.array_starts.tolist(),
                )
            types, lengths, starts = self._columns
            dtype = DTYPES[types[i]]
            count = lengths[i]
            start = starts[i]
            if isinstance(data, memoryview):
                array = np.frombuffer(data, dtype, count, start)
            else:
                array = np.frombuffer(_read_array(data, start, count * dtype.itemsize), dtype)
            self._arrays[key] = array
        return array

    def __iter__(self) -> Iterator[str]:
        self._open_data()
        return iter(self._keys)

    def __len__(self) -> int:
        self._open_data()
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        self._open_data()
        return key in self._lookup()

    def info(self, key: str) -> ArrayInfo:
        """Describe the array stored under ``key`` without reading it.

        Raises:
            KeyError: no such key.
            StoreClosedError: the store is closed.
        """
        self._open_data()
        i = self._lookup()[key]
        dtype = DTYPES[self._layout.types[i]]
        length = int(self._layout.array_lens[i])
        return ArrayInfo(dtype=dtype, shape=(length,), size=length * dtype.itemsize)

    def close(self) -> None:
        """Release the store's hold on its data; arrays handed out stay usable."""
        buffer, self._data = self._data, None
        self._arrays = {}
        if not isinstance(buffer, memoryview):
            return
        base = buffer.obj
        try:
            buffer.release()
            if self._owns_map and isinstance(base, mmap.mmap):
                base.close()
        except BufferError:
            # Arrays still point into the data: it goes when the last of them does.
            pass

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        if self._data is None:
            return "<kastore.Store (closed)>"
        return f"<kastore.Store with {len(self._keys)} keys>"


def _store(
    buffer: memoryview, available: int, key_encoding: str, *, exact: bool, owns_map: bool = False
) -> Store:
    header = _parse_header(buffer[:HEADER_SIZE], available)
    _check_fits(header, available, exact=exact)
    data = buffer[: header.file_size]
    return Store(data, _parse_layout(data, header, key_encoding), owns_map=owns_map)


def loads(encoded_data: Any, key_encoding: str = "utf-8") -> Store:
    """Load a store from bytes in memory, without copying them.

    Parameters:
        encoded_data: any bytes-like object (``bytes``, ``bytearray``,
            ``memoryview``, ``mmap``...) holding exactly one store.
        key_encoding: the encoding of the keys.

    Returns:
        A read-only mapping of keys to arrays that are views of ``encoded_data``.

    Raises:
        FileFormatError, VersionTooOldError, VersionTooNewError: the data is not
            a valid store. EOFError: the data is empty.
    """
    try:
        view = memoryview(encoded_data)
    except TypeError as err:
        raise TypeError(
            f"encoded_data must be a bytes-like object, not {type(encoded_data).__name__}"
        ) from err
    view = (
        view.cast("B").toreadonly() if view.format != "B" or view.ndim != 1 else view.toreadonly()
    )
    return _store(view, len(view), key_encoding, exact=True)


def load(
    file: _files.FileArg,
    read_all: bool = False,
    key_encoding: str = "utf-8",
    engine: str = "python",
) -> Store:
    """Load a store from a file.

    Parameters:
        file: a path (``str``, ``bytes`` or ``os.PathLike``), an integer file
            descriptor, or a file object with ``read()``. Descriptors and file
            objects are left open, positioned just after the store, so stores
            written back to back load one after another. An ``http://`` or
            ``https://`` URL is read by Range requests: the header and keys
            now, each array on first use (``OSError`` s such as
            ``FileNotFoundError`` for a 404 or ``PermissionError`` for a 403).
        read_all: read the whole store into memory instead of memory-mapping
            it. Sources that cannot be mapped (pipes, sockets, ``BytesIO``) are
            always read.

    Without ``read_all``, the arrays of a store loaded from a regular file are
    views of a read-only memory map of it, as with ``numpy.memmap``. ``dump``
    onto the same path is safe: it replaces the file rather than rewriting it.
    What is not safe is cutting the file short or rewriting it in place while
    arrays are in use (another program, or ``open(path, "wb")``): they then read
    other bytes, or the process dies of SIGBUS. ``read_all=True`` copies the
    data and has no such tie to the file.
        key_encoding: the encoding of the keys.
        engine: ``"python"`` (``PY_ENGINE``) or ``"c"`` (``C_ENGINE``), which
            reads with the C library from a path or anything with a
            ``fileno()`` (a regular file's arrays are mapped, as here; other
            sources are read whole), and raises ``RuntimeError`` if this
            installation was built without a C compiler.

    Returns:
        A read-only mapping of keys to read-only numpy arrays.

    Raises:
        FileFormatError, VersionTooOldError, VersionTooNewError: the file is
            not a valid store. EOFError: there is no data left to read.
        TypeError: ``file`` is of an unsupported type.
        ValueError: unknown ``engine``.
    """
    _files.check_engine(engine)
    if engine == _files.C_ENGINE:
        from . import _cengine

        _cengine.extension()
        return _cengine.load(  # type: ignore[no-any-return]
            file, read_all=read_all, key_encoding=key_encoding
        )
    exact = _files.is_path(file)
    with _files.open_source(file, read_all=read_all) as source:
        if isinstance(source, _files.MappableFile):
            available = source.size - source.offset
            if available == 0:
                raise EOFError("no kastore data: the file is empty or at its end")
            store = _store(source.map(), available, key_encoding, exact=exact, owns_map=True)
            source.seek(source.offset + store._layout.size)
            return store
        if isinstance(source, _files.SeekableFile):
            return _read_seekable(source, key_encoding)
        return _read_stream(source, key_encoding, exact=exact)


def _read_array(source: _files.SeekableFile, start: int, size: int) -> bytes | bytearray:
    data = source.read_at(start, size)
    if len(data) != size:
        raise FileFormatError(
            f"truncated file: an array at byte {start} needs {size} bytes, "
            f"only {len(data)} are there"
        )
    return data


def _key_bytes(buffer: bytearray, n: int) -> int:
    """The keys' total length, as the descriptors in ``buffer`` claim it."""
    # A float sum cannot wrap: a sum past the file size is caught before the
    # exact (and possibly wrapping) integer sum is trusted.
    key_lens = np.frombuffer(buffer, ITEM_DESCRIPTOR, n, HEADER_SIZE)["key_len"]
    if float(key_lens.sum(dtype=np.float64)) > 2.0**62:
        return 2**62
    return int(key_lens.sum(dtype=np.uint64))


def _read_seekable(source: _files.SeekableFile, key_encoding: str) -> Store:
    """Read header, descriptors and keys in place; arrays wait until they are used."""
    head = source.read_at(0, HEADER_SIZE)
    header = _parse_header(head, len(head) if source.size is None else source.size)
    if source.size is not None:
        _check_fits(header, source.size, exact=False)
    elif header.file_size > HEADER_SIZE:
        # The file cannot say how long it is: check that its last byte is there.
        _read_array(source, header.file_size - 1, 1)
    n = header.num_items
    buffer = bytearray(head)
    buffer += _read_array(source, HEADER_SIZE, n * ITEM_DESCRIPTOR_SIZE)
    key_bytes = _key_bytes(buffer, n)
    # Keys that cannot fit are left unread: the layout check reports them.
    if key_bytes <= header.file_size:
        buffer += _read_array(source, len(buffer), key_bytes)
    view = memoryview(buffer).toreadonly()
    layout = _parse_layout(view, header, key_encoding)
    source.fh.seek(source.offset + header.file_size)
    return Store(source, layout)


def _read_stream(source: _files.Stream, key_encoding: str, *, exact: bool) -> Store:
    head = source.read_exactly(HEADER_SIZE)
    header = _parse_header(head, len(head))
    # Read the rest in pieces, so a header that claims more than the stream
    # holds costs no more memory than the stream really has.
    data = bytearray(head)
    remaining = header.file_size - HEADER_SIZE
    while remaining > 0:
        chunk = source.read_exactly(min(remaining, 1 << 26))
        if not chunk:
            _check_fits(header, len(data), exact=False)
        data += chunk
        remaining -= len(chunk)
    if exact and source.read(1):
        raise FileFormatError(
            f"bad file size in header: {header.file_size} bytes, but the file is longer"
        )
    view = memoryview(data).toreadonly()
    return Store(view, _parse_layout(view, header, key_encoding))
