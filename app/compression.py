"""Compression on the wire: ``Content-Encoding`` from ``Accept-Encoding`` (RFC 9110 §12.5.3).

The codings: ``zstd`` (level 1, which keeps pace with a fast link) and
``gzip`` (zlib, level 1), or none (``identity``). ``Accept-Encoding`` is read
with its q-values: each coding gets the q of its own entry, else that of
``*``, else 1 for identity and 0 for the others; a coding with ``q=0`` is
never chosen. The highest q wins and zstd wins a tie. When neither coding is
acceptable the answer is identity, even if the header refuses identity too,
as RFC 9110 advises: the client gets the bytes rather than an error.

Every form of an array (raw, npy, JSON, CSV, text, rows) and the whole file
compress the same way: the answer is streamed a group of pieces at a time
(``PIECE_BYTES`` or more), each group made and compressed in a worker
thread, so the event loop never waits on it and memory stays at one group; a
body known to be under ``INLINE_BYTES`` is compressed at once, in less time
than the trip to a thread takes.
Its first group decides: when it does not shrink by ``MIN_SAVING``, or when
it is the whole answer and a small one, the whole answer goes as identity,
with the identity headers. A client that refuses identity gets the coding in
every case.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterable, Sequence
from functools import lru_cache
from typing import Literal, Protocol

import anyio.to_thread
import zstandard
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from .encoders import RAW_PIECE_BYTES, RangedBody

__all__ = [
    "CODINGS",
    "INLINE_BYTES",
    "MIN_SAVING",
    "PIECE_BYTES",
    "CompressedResponse",
    "Encoding",
    "Piece",
    "RangedCompressedResponse",
    "choose_encoding",
    "encoded_etag",
]

Encoding = Literal["zstd", "gzip", "identity"]
#: A piece of a body, as encoders make them.
Piece = bytes | memoryview

#: The codings offered, in the order ties are broken.
CODINGS: tuple[Encoding, ...] = ("zstd", "gzip")
#: A first piece that does not shrink by this fraction is sent as it is.
MIN_SAVING = 0.1
#: Pieces are compressed (and the first one judged) in groups of at least this size.
PIECE_BYTES = RAW_PIECE_BYTES
#: A body known to be smaller is compressed in the event loop: at most ~0.1 ms of
#: gzip, less than handing it to a worker thread and back costs (~0.2 ms, measured).
INLINE_BYTES = 16 * 1024
ZSTD_LEVEL = 1
GZIP_LEVEL = 1


def _parse(accept_encoding: str) -> dict[str, float]:
    qualities: dict[str, float] = {}
    for element in accept_encoding.split(","):
        coding, *params = element.split(";")
        coding = coding.strip().lower()
        if not coding:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        qualities[coding] = min(max(q, 0.0), 1.0)
    return qualities


@lru_cache(maxsize=64)  # clients send the same few headers again and again
def choose_encoding(accept_encoding: str | None) -> tuple[Encoding, bool]:
    """The coding to answer in, and whether identity is refused (so the coding is a must)."""
    if not accept_encoding:
        return "identity", False
    qualities = _parse(accept_encoding)
    anything = qualities.get("*")
    identity_q = qualities.get("identity", 1.0 if anything is None else anything)
    best: Encoding = "identity"
    best_q = 0.0
    for coding in CODINGS:
        q = qualities.get(coding, anything if anything is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    if best == "identity" or best_q < identity_q:
        return "identity", False
    return best, identity_q == 0.0


def encoded_etag(etag: str, encoding: Encoding) -> str:
    """The strong ETag of ``encoding`` of the representation whose ETag is ``etag``."""
    return etag if encoding == "identity" else f'{etag[:-1]}-{encoding}"'


def _coded_headers(headers: dict[str, str], encoding: Encoding) -> dict[str, str]:
    """The identity answer's ``headers``, for the answer compressed with ``encoding``."""
    return {
        **headers,
        "etag": encoded_etag(headers["etag"], encoding),
        "content-encoding": encoding,
    }


class _Compressor(Protocol):
    def piece(self, data: Sequence[Piece]) -> bytes: ...
    def end(self) -> bytes: ...


class _Zstd:
    def __init__(self, size: int) -> None:
        self._obj = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=size)

    def piece(self, data: Sequence[Piece]) -> bytes:
        out = b"".join([self._obj.compress(part) for part in data])
        return out + self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def end(self) -> bytes:
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class _Gzip:
    def __init__(self) -> None:
        self._obj = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def piece(self, data: Sequence[Piece]) -> bytes:
        out = b"".join([self._obj.compress(part) for part in data])
        return out + self._obj.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self._obj.flush(zlib.Z_FINISH)


def _compressor(encoding: Encoding, size: int) -> _Compressor:
    return _Zstd(size) if encoding == "zstd" else _Gzip()


class _Pieces:
    """Reads an iterable of pieces a group at a time, each group ``PIECE_BYTES`` or more.

    Encoders yield pieces of any size (a JSON array's opening is a few bytes):
    grouping them gives the first-piece test something to judge, and each
    flush of the compressor a block worth its few bytes of overhead. Pieces
    are never joined (no copy); ``read`` may run in a worker thread, as
    making a piece (encoding JSON, say) costs CPU too.
    """

    def __init__(self, pieces: Iterable[Piece]) -> None:
        self._iterator = iter(pieces)
        self.done = False

    def read(self) -> list[Piece]:
        group: list[Piece] = []
        size = 0
        while size < PIECE_BYTES:
            piece = next(self._iterator, None)
            if piece is None:
                self.done = True
                break
            group.append(piece)
            size += len(piece) if isinstance(piece, bytes) else piece.nbytes
        return group


def _size(group: Sequence[Piece]) -> int:
    return sum(len(piece) if isinstance(piece, bytes) else piece.nbytes for piece in group)


class CompressedResponse(Response):
    """``pieces``, compressed as they stream, without ``Content-Length``.

    ``pieces`` may be lazy (JSON encoded as it goes): each group of them is
    made and compressed in a worker thread, unless the body is known (``size``)
    to be under ``INLINE_BYTES``. ``headers`` are those of the
    identity answer; the coding changes the ETag and adds
    ``Content-Encoding``. Unless ``required``, the answer goes as identity
    instead when its first group does not shrink by ``MIN_SAVING``, or when
    the whole answer is that group and it holds under ``min_bytes``:
    ``identity`` is that answer if given (one that can start again from the
    first byte, a buffer's), else the pieces are streamed as they are.
    ``size`` is the body's size when known (zstd records it).
    """

    def __init__(
        self,
        pieces: Iterable[Piece],
        *,
        encoding: Encoding,
        headers: dict[str, str],
        media_type: str,
        required: bool = False,
        min_bytes: int = 0,
        identity: Response | None = None,
        size: int = -1,
    ) -> None:
        self.pieces, self.encoding, self.required = pieces, encoding, required
        self.min_bytes, self.identity, self.size = min_bytes, identity, size
        self.identity_headers = headers
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(_coded_headers(headers, encoding))

    def _pays(self, first: list[Piece], compressed: bytes, done: bool) -> bool:
        if self.required:
            return True
        size = _size(first)
        if done and size < self.min_bytes:
            return False
        return len(compressed) <= size * (1 - MIN_SAVING)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reader = _Pieces(self.pieces)
        compressor = _compressor(self.encoding, self.size)

        def next_compressed() -> tuple[list[Piece], bytes]:
            group = reader.read()
            return group, compressor.piece(group)

        if 0 <= self.size < INLINE_BYTES:  # cheaper here than the trip to a thread
            first, out = next_compressed()
        else:
            first, out = await anyio.to_thread.run_sync(next_compressed)
        if not self._pays(first, out, reader.done):
            if self.identity is not None:
                await self.identity(scope, receive, send)
            else:
                await self._send_identity(scope, receive, send, reader, first)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope.get("method") != "HEAD":
            while True:
                await send({"type": "http.response.body", "body": out, "more_body": True})
                if reader.done:
                    break
                _, out = await anyio.to_thread.run_sync(next_compressed)
            await send({"type": "http.response.body", "body": compressor.end(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_identity(
        self, scope: Scope, receive: Receive, send: Send, reader: _Pieces, group: list[Piece]
    ) -> None:
        """The pieces as they are; with ``Content-Length`` when the first group was all."""
        headers, media_type = self.identity_headers, self.media_type
        if reader.done:
            answer: Response = Response(b"".join(group), headers=headers, media_type=media_type)
            await answer(scope, receive, send)
            return

        async def rest() -> AsyncIterator[Piece]:
            if scope.get("method") == "HEAD":
                return
            for piece in group:
                yield piece
            while not reader.done:
                for piece in await anyio.to_thread.run_sync(reader.read):
                    yield piece

        await StreamingResponse(rest(), headers=headers, media_type=media_type)(
            scope, receive, send
        )


async def _group(pieces: AsyncIterator[Piece]) -> list[Piece]:
    """The next pieces, ``PIECE_BYTES`` or more of them unless the body ends first."""
    group: list[Piece] = []
    size = 0
    while size < PIECE_BYTES:
        piece = await anext(pieces, None)
        if piece is None:
            break
        group.append(piece)
        size += len(piece) if isinstance(piece, bytes) else piece.nbytes
    return group


class RangedCompressedResponse(Response):
    """``prefix`` then a ``RangedBody``, compressed as its pieces arrive.

    As ``CompressedResponse``, for blobs read by ranges (an object in S3):
    unless ``required``, a first group that does not shrink sends
    ``identity`` instead (a ``RangedResponse``, which asks for the bytes
    again). ``missing`` is raised, before the answer starts, when the blob
    is gone.
    """

    def __init__(
        self,
        body: RangedBody,
        *,
        encoding: Encoding,
        headers: dict[str, str],
        media_type: str,
        identity: Response,
        prefix: bytes = b"",
        required: bool = False,
        missing: Exception | None = None,
    ) -> None:
        self.ranged, self.prefix, self.encoding = body, prefix, encoding
        self.required, self.identity, self.missing = required, identity, missing
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers({**_coded_headers(headers, encoding), "accept-ranges": "bytes"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pieces = self.ranged.pieces()
        try:
            group = await _group(pieces)
        except FileNotFoundError:
            if self.missing is None:
                raise
            raise self.missing from None
        if self.prefix:
            group.insert(0, self.prefix)
        compressor = _compressor(self.encoding, len(self.prefix) + self.ranged.nbytes)
        out = await anyio.to_thread.run_sync(compressor.piece, group)
        if not self.required and len(out) > _size(group) * (1 - MIN_SAVING):
            await pieces.aclose()
            await self.identity(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope.get("method") != "HEAD":
            while group:
                await send({"type": "http.response.body", "body": out, "more_body": True})
                group = await _group(pieces)
                if group:
                    out = await anyio.to_thread.run_sync(compressor.piece, group)
            await send({"type": "http.response.body", "body": compressor.end(), "more_body": True})
        await pieces.aclose()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
