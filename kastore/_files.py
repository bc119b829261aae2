"""Where a store comes from or goes to: a path, a file descriptor or a file object.

Everything that depends on what kind of ``file`` the caller passed lives here, so
the reader and writer only see two shapes of input: a regular file they may
memory-map (``MappableFile``) or a stream they read from (``Stream``).
"""

from __future__ import annotations

import contextlib
import errno
import io
import mmap
import os
import select
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, TypeAlias, TypeGuard

FileArg: TypeAlias = "str | bytes | os.PathLike[str] | os.PathLike[bytes] | int | Any"

PY_ENGINE = "python"
C_ENGINE = "c"
ENGINES = (PY_ENGINE, C_ENGINE)


def check_engine(engine: object) -> None:
    """Raise ``ValueError`` if ``engine`` does not name an implementation."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")


PathArg: TypeAlias = "str | bytes | os.PathLike[str] | os.PathLike[bytes]"


def is_path(file: object) -> TypeGuard[PathArg]:
    return isinstance(file, str | bytes | os.PathLike)


def is_url(file: object) -> TypeGuard[str]:
    """Whether ``file`` is an ``http://`` or ``https://`` URL (read over HTTP, not opened)."""
    return isinstance(file, str) and file[:8].lower().startswith(("http://", "https://"))


def open_url(url: str) -> Any:
    """A read-only, seekable file object reading ``url`` by HTTP Range requests."""
    from ._http import HTTPFile  # only loaded by those who read over HTTP

    return HTTPFile(url)


def _describe(file: object) -> str:
    return type(file).__name__


def _wrong_type(file: object, needs: str) -> TypeError:
    return TypeError(
        f"file must be a path (str, bytes or os.PathLike), an integer file descriptor "
        f"or a file object with a {needs}() method, not {_describe(file)}"
    )


@dataclass(frozen=True, slots=True)
class MappableFile:
    """A regular file, positioned at ``offset``, ``size`` bytes long in all."""

    fd: int
    offset: int
    size: int
    seek: Callable[[int], object]

    def map(self) -> memoryview:
        """Map the file from ``offset`` to its end, read-only."""
        start = self.offset - self.offset % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(self.fd, self.size - start, access=mmap.ACCESS_READ, offset=start)
        return memoryview(mapped)[self.offset - start :]


@dataclass(frozen=True, slots=True)
class Stream:
    """Something to read from that cannot (or should not) be mapped."""

    read: Callable[[int], bytes]

    def read_exactly(self, size: int) -> bytes | bytearray:
        """Read ``size`` bytes, or fewer only if the stream ends first.

        Streams such as pipes and sockets return short reads; keep asking until
        the amount is there, so a store is never mistaken for a truncated one.
        """
        first = self.read(size)
        if first is None:
            raise BlockingIOError("the file object has no data available (non-blocking)")
        if len(first) == size or not first:
            return first
        buf = bytearray(first)
        while len(buf) < size:
            chunk = self.read(size - len(buf))
            if not chunk:
                break
            buf += chunk
        return buf


@dataclass(frozen=True, slots=True)
class SeekableFile:
    """A file that can seek but not be mapped (an HTTP or S3 file object, say).

    It is read in place: the header, descriptors and keys when the store is
    loaded, then each array when it is first used. Positions are relative to
    where the store starts, and every read puts the file's position back where
    it was, so the caller's position is not disturbed.
    """

    fh: Any
    offset: int
    size: int | None
    """Bytes from ``offset`` to the end of the file, if the file can tell."""

    def read_at(self, position: int, size: int) -> bytes | bytearray:
        """Read ``size`` bytes at ``position``, or fewer only if the file ends first."""
        fh = self.fh
        saved = fh.tell()
        try:
            fh.seek(self.offset + position)
            return Stream(read=fh.read).read_exactly(size)
        finally:
            fh.seek(saved)


Source: TypeAlias = "MappableFile | SeekableFile | Stream"


def _regular_size(fd: int) -> int | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


@contextlib.contextmanager
def open_source(file: object, *, read_all: bool) -> Iterator[Source]:
    """Yield the source behind ``file`` for reading one store.

    Paths are opened (and closed again); descriptors and file objects belong to
    the caller and stay open. With ``read_all`` everything is read as a stream,
    which for a regular file is one large read. An ``http://`` or ``https://``
    URL is read by Range requests (``_http.HTTPFile``); the store keeps the
    file open to read its arrays, and it closes when the store is collected.
    """
    if is_url(file):
        fh = open_url(file)
        try:
            yield _from_file_object(fh, read_all=read_all)
        except BaseException:
            fh.close()
            raise
        if read_all:
            fh.close()
    elif is_path(file):
        with open(file, "rb") as fh:
            yield _from_file_object(fh, read_all=read_all)
    elif isinstance(file, int) and not isinstance(file, bool):
        with open(file, "rb", buffering=0, closefd=False) as fh:
            yield _from_file_object(fh, read_all=read_all)
    elif callable(getattr(file, "read", None)):
        yield _from_file_object(file, read_all=read_all)
    else:
        raise _wrong_type(file, "read")


def _from_file_object(fh: Any, *, read_all: bool) -> Source:
    if not read_all:
        try:
            fd = fh.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            fd = None
        size = None if fd is None else _regular_size(fd)
        if size is not None:
            try:
                offset = fh.tell()
            except (AttributeError, OSError):
                offset = None
            if offset is not None and 0 <= offset <= size:
                return MappableFile(fd=fd, offset=offset, size=size, seek=fh.seek)
        # In-memory buffers gain nothing from reading piece by piece.
        if not isinstance(fh, io.BytesIO):
            seekable = _seekable(fh)
            if seekable is not None:
                return seekable
    return Stream(read=fh.read)


def _seekable(fh: Any) -> SeekableFile | None:
    try:
        if not fh.seekable():
            return None
        offset = fh.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    try:
        end = fh.seek(0, io.SEEK_END)
        size = None if end is None else max(0, end - offset)
    except (OSError, ValueError, io.UnsupportedOperation):
        size = None
    fh.seek(offset)
    return SeekableFile(fh=fh, offset=offset, size=size)


@contextlib.contextmanager
def open_sink(file: object) -> Iterator[BinaryIO | Any]:
    """Yield an object with ``write()`` for ``file``; close only what we opened.

    A path to a regular file (or to nothing yet) is written to a temporary file
    beside it, which replaces the target only once the whole store is written:
    the old file's bytes stay in place for any map that still reads them (such
    as the arrays of a store loaded from that same path), and a failed or
    interrupted write leaves the old file as it was. FIFOs, devices and the
    like are written in place.
    """
    if is_path(file):
        with _replacing(file) as fh:
            yield fh
    elif isinstance(file, int) and not isinstance(file, bool):
        with open(file, "wb", closefd=False) as fh:
            yield fh
    elif callable(getattr(file, "write", None)):
        yield file
    else:
        raise _wrong_type(file, "write")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _replacing(path: PathArg) -> Iterator[BinaryIO]:
    """Open ``path`` for writing, through a temporary file where that is safe."""
    target = os.path.realpath(os.fsdecode(path))  # through symlinks, to the file itself
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        # A FIFO, a terminal, /dev/stdout, /dev/null: there is nothing to replace.
        with open(path, "wb") as fh:
            yield fh
        return
    folder, name = os.path.split(target)
    try:
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except PermissionError:
        # The folder is read-only but the file may be writable: in place it is.
        # (Arrays mapped from this file must not be what is being written.)
        with open(path, "wb") as fh:
            yield fh
        return
    try:
        with open(fd, "wb") as fh:
            yield fh
        # mkstemp makes the file private; give it what open() would have, or
        # the mode of the file it replaces.
        os.chmod(temporary, stat.S_IMODE(st.st_mode) if st else 0o666 & ~_umask())
        if st is not None and os.geteuid() == 0:
            with contextlib.suppress(OSError):
                os.chown(temporary, st.st_uid, st.st_gid)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_all(sink: Any, piece: Any) -> None:
    """Write every byte of ``piece`` to ``sink``, or raise.

    ``write()`` may take only part of a buffer, and on a non-blocking file it
    may take none (raw files return ``None``, buffered ones raise
    ``BlockingIOError`` with the count they took). Wait until the file can take
    more rather than report bytes as written that were not.
    """
    view = memoryview(piece).cast("B")
    write = sink.write
    while view:
        try:
            written = write(view)
        except BlockingIOError as err:
            written = err.characters_written
            _wait_writable(sink, err)
        else:
            if written is None:
                written = 0
                _wait_writable(sink, None)
        if written >= len(view):
            return
        view = view[written:]


def _wait_writable(sink: Any, err: BlockingIOError | None) -> None:
    try:
        fd = sink.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        raise err or BlockingIOError(
            errno.EAGAIN, "the file object is non-blocking and took no bytes"
        ) from err
    select.select([], [fd], [])


def preallocate(sink: Any, size: int) -> None:
    """Reserve ``size`` bytes of disk at the sink's position, if it is a regular file.

    Allocating the blocks up front lets the kernel copy large arrays into the
    page cache much faster (numpy's ``tofile`` does the same). Anything that is
    not a regular file, or a file system that cannot do it, is left alone.
    """
    try:
        fd = sink.fileno()
        if _regular_size(fd) is None:
            return
        os.posix_fallocate(fd, sink.tell(), size)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pass
