"""The C engine's Python side: ``load`` and ``dump`` through the ``_ckastore`` extension.

The extension reads a whole store with the C library into one buffer; the
``Store`` handed back is the same class the Python engine returns, with arrays
that are read-only views of that buffer. Where the two engines differ, this
one follows the reference's C engine: it takes a path or anything with a
``fileno()``, and reads exactly one store from a stream.
"""

from __future__ import annotations

import codecs
import io
import os
import stat
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import numpy as np

from . import _files
from ._format import HEADER, HEADER_SIZE
from .exceptions import FileFormatError, VersionTooNewError, VersionTooOldError

try:
    from . import _ckastore  # type: ignore[attr-defined]
except ImportError as err:  # built without a C compiler
    _ckastore = None
    _IMPORT_ERROR: ImportError | None = err
else:
    _IMPORT_ERROR = None

# The C library's error codes (kastore.h) that mean something in Python.
_KAS_ERR_BAD_FILE_FORMAT = -5
_KAS_ERR_VERSION_TOO_OLD = -6
_KAS_ERR_VERSION_TOO_NEW = -7
_KAS_ERR_EMPTY_KEY = -9
_KAS_ERR_DUPLICATE_KEY = -10
_KAS_ERR_EOF = -14


def extension() -> ModuleType:
    """The extension module, or ``RuntimeError`` if this build has none."""
    if _ckastore is None:
        raise RuntimeError(f"C engine not available: {_IMPORT_ERROR}")
    return _ckastore  # type: ignore[no-any-return]


def available() -> bool:
    """Whether this installation has the C engine."""
    return _ckastore is not None


def _translate(err: Exception) -> Exception:
    """The kastore exception for an error code from the C library."""
    code, message = err.args
    if code == _KAS_ERR_EOF:
        return EOFError(f"no kastore data: {message}")
    if code == _KAS_ERR_VERSION_TOO_OLD:
        return VersionTooOldError()
    if code == _KAS_ERR_VERSION_TOO_NEW:
        return VersionTooNewError()
    if code == _KAS_ERR_BAD_FILE_FORMAT:
        return FileFormatError(f"not a valid kastore file: {message}")
    if code in (_KAS_ERR_EMPTY_KEY, _KAS_ERR_DUPLICATE_KEY):
        return ValueError(message)
    return OSError(f"kastore C library error {code}: {message}")


def _is_utf8(key_encoding: str) -> bool:
    return codecs.lookup(key_encoding).name == "utf-8"


def _store_from(parts: tuple[Any, ...], key_encoding: str, *, owns_map: bool = False) -> Any:
    from ._reader import Store, _check_unique, _Layout

    data, keys, types, offsets, lengths, size = parts
    if not _is_utf8(key_encoding):
        try:
            keys = [key.decode(key_encoding) for key in keys]
        except UnicodeDecodeError as err:
            raise FileFormatError(f"a key does not decode as {key_encoding}: {err}") from err
        _check_unique(sorted(keys))  # distinct bytes may decode to equal strings
    layout = _Layout(
        size=size,
        keys=keys,
        types=np.frombuffer(types, np.uint8),
        array_starts=np.frombuffer(offsets, np.uint64),
        array_lens=np.frombuffer(lengths, np.uint64),
    )
    view = memoryview(data).toreadonly()
    if owns_map:
        view = view[:size]
    return Store(view, layout, owns_map=owns_map, keys_checked=True)


def _call(function: Any, *args: Any) -> Any:
    ext = extension()
    try:
        return function(*args)
    except ext.Error as err:
        raise _translate(err) from None
    except UnicodeDecodeError as err:
        raise FileFormatError(f"a key does not decode as utf-8: {err}") from err


def _fileno(file: Any, needs: str) -> int:
    """The descriptor behind a file object; the reference's error if it has none."""
    if not callable(getattr(file, needs, None)):
        raise _files._wrong_type(file, needs)
    fileno = getattr(file, "fileno", None)
    if fileno is None:
        raise io.UnsupportedOperation("fileno")
    return int(fileno())


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def _load_fd(fd: int, utf8: bool, key_encoding: str, *, read_all: bool) -> Any:
    """One store from ``fd``'s position, which is left just after it.

    From a regular file, unless ``read_all``, the C library reads and checks
    the header, descriptors and keys only, and the arrays are views of a map
    of the file, as with the Python engine. Otherwise the whole store is read.
    """
    if read_all or not _is_regular(fd):
        return _store_from(_call(extension().load, fd, utf8), key_encoding)
    position = os.lseek(fd, 0, os.SEEK_CUR)
    parts = _call(extension().load, fd, utf8, True)
    size = parts[5]
    mapped = _files.MappableFile(
        fd=fd, offset=position, size=position + size, seek=lambda _: None
    ).map()
    return _store_from((mapped, *parts[1:]), key_encoding, owns_map=True)


def load(file: Any, *, read_all: bool, key_encoding: str) -> Any:
    """Read one store from ``file`` with the C library."""
    ext = extension()
    utf8 = _is_utf8(key_encoding)
    if _files.is_url(file):
        # The C library reads whole stores: fetch the file whole, then parse it.
        with _files.open_url(file) as fh:
            data = fh.readall()
        store = _store_from(_call(ext.loads, data, utf8), key_encoding)
        if store._layout.size != len(data):
            raise FileFormatError(
                f"bad file size in header: {store._layout.size} bytes, but the file has {len(data)}"
            )
        return store
    if _files.is_path(file):
        with open(file, "rb", buffering=0) as fh:
            store = _load_fd(fh.fileno(), utf8, key_encoding, read_all=read_all)
            size = os.fstat(fh.fileno()).st_size
        if store._layout.size != size:
            raise FileFormatError(
                f"bad file size in header: {store._layout.size} bytes, but the file has {size}"
            )
        return store
    if isinstance(file, int) and not isinstance(file, bool):
        if file < 0:
            raise ValueError("negative file descriptor")  # as the Python engine's open(fd)
        return _load_fd(file, utf8, key_encoding, read_all=read_all)
    fd = _fileno(file, "read")
    try:
        position = file.tell() if file.seekable() else None
    except (AttributeError, OSError, io.UnsupportedOperation):
        position = None
    if position is not None:
        # A buffered file object may have read ahead of its position: read from
        # the position, then put the object itself just after the store.
        os.lseek(fd, position, os.SEEK_SET)
        store = _load_fd(fd, utf8, key_encoding, read_all=read_all)
        file.seek(position + store._layout.size)
        return store
    if isinstance(file, io.RawIOBase):
        return _load_fd(fd, utf8, key_encoding, read_all=read_all)
    # A buffered stream that cannot seek (a pipe): its buffer may hold bytes
    # the descriptor has already given up, so read the store through it.
    stream = _files.Stream(read=file.read)
    head = stream.read_exactly(HEADER_SIZE)
    rest: bytes | bytearray = b""
    if len(head) == HEADER_SIZE:
        file_size = HEADER.unpack_from(head)[4]
        rest = stream.read_exactly(max(0, file_size - HEADER_SIZE))
    return _store_from(_call(ext.loads, bytes(head) + bytes(rest), utf8), key_encoding)


def dump(data: Mapping[str, Any], sink: Any, *, key_encoding: str) -> None:
    """Write ``data`` to ``sink`` (which must have a descriptor) with the C library."""
    from ._writer import _plan

    ext = extension()
    if not isinstance(data, Mapping):
        _plan(data, key_encoding)  # raises the Python engine's error
    try:
        fd = _fileno(sink, "write")
    except io.UnsupportedOperation:
        _plan(data, key_encoding)  # a fault in the data is the first thing to report
        raise
    keys: list[Any] = list(data)
    values: list[Any] = list(data.values())
    if not _is_utf8(key_encoding):
        _plan(data, key_encoding)  # checks the keys
        keys = [key.encode(key_encoding) for key in keys]
    flush = getattr(sink, "flush", None)
    if flush is not None:
        flush()
    # stdio gives up on a non-blocking descriptor that is full; wait instead.
    blocking = os.get_blocking(fd)
    if not blocking:
        os.set_blocking(fd, True)
    try:
        _dump_values(ext, fd, data, keys, values, key_encoding)
    finally:
        if not blocking:
            os.set_blocking(fd, False)
    _resync(sink, fd)


def _dump_values(
    ext: Any,
    fd: int,
    data: Mapping[str, Any],
    keys: list[Any],
    values: list[Any],
    key_encoding: str,
) -> None:
    from ._writer import _plan

    encoded = not _is_utf8(key_encoding)  # then keys are bytes, else str
    try:
        _call(ext.dump, fd, keys, values, encoded)
    except ext.Unsupported:
        # Values that are not contiguous little-endian 1-D arrays of a kastore
        # type: the Python engine's checks give the error, or the arrays.
        plan = _plan(data, key_encoding)
        keys = sorted(data)
        if encoded:
            keys = [key.encode(key_encoding) for key in keys]
        values = [np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")) for a in plan.arrays]
        _call(ext.dump, fd, keys, values, encoded)


def _resync(sink: Any, fd: int) -> None:
    """Tell a buffered file object where its descriptor now is."""
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode) and sink.seekable():
            sink.seek(os.lseek(fd, 0, os.SEEK_CUR))
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
