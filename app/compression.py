"""Compression on the wire: ``Content-Encoding`` from ``Accept-Encoding`` (RFC 9110 §12.5.3).

The codings: ``zstd`` (level 1, which keeps pace with a fast link) and
``gzip`` (zlib, level 1), or none (``identity``). ``Accept-Encoding`` is read
with its q-values: each coding gets the q of its own entry, else that of
``*``, else 1 for identity and 0 for the others; a coding with ``q=0`` is
never chosen. The highest q wins and zstd wins a tie. When neither coding is
acceptable the answer is identity, even if the header refuses identity too,
as RFC 9110 advises: the client gets the bytes rather than an error.

A compressed answer is streamed a piece at a time, each piece compressed in a
worker thread, so the event loop never waits on it and memory stays at one
piece. Its first piece decides: when it does not shrink by
``MIN_SAVING``, the whole answer goes as identity, with the identity
headers. A client that refuses identity gets the coding in every case.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Literal, Protocol

import anyio.to_thread
import zstandard
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .encoders import RAW_PIECE_BYTES, BufferResponse

__all__ = [
    "CODINGS",
    "MIN_SAVING",
    "CompressedResponse",
    "Encoding",
    "choose_encoding",
    "encoded_etag",
]

Encoding = Literal["zstd", "gzip", "identity"]

#: The codings offered, in the order ties are broken.
CODINGS: tuple[Encoding, ...] = ("zstd", "gzip")
#: A first piece that does not shrink by this fraction is sent as it is.
MIN_SAVING = 0.1
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


class _Compressor(Protocol):
    def piece(self, data: bytes | memoryview) -> bytes: ...
    def end(self) -> bytes: ...


class _Zstd:
    def __init__(self, size: int) -> None:
        self._obj = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj(size=size)

    def piece(self, data: bytes | memoryview) -> bytes:
        out = self._obj.compress(data)
        return out + self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)

    def end(self) -> bytes:
        return self._obj.flush(zstandard.COMPRESSOBJ_FLUSH_FINISH)


class _Gzip:
    def __init__(self) -> None:
        self._obj = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)

    def piece(self, data: bytes | memoryview) -> bytes:
        return self._obj.compress(data) + self._obj.flush(zlib.Z_SYNC_FLUSH)

    def end(self) -> bytes:
        return self._obj.flush(zlib.Z_FINISH)


def _compressor(encoding: Encoding, size: int) -> _Compressor:
    return _Zstd(size) if encoding == "zstd" else _Gzip()


class CompressedResponse(Response):
    """``prefix`` then ``buffer``, compressed as it streams, without ``Content-Length``.

    ``headers`` are those of the identity answer; the coding changes the ETag
    and adds ``Content-Encoding``. Unless ``required``, a first piece that does
    not shrink sends the whole as identity instead (a ``BufferResponse``).
    """

    def __init__(
        self,
        buffer: memoryview,
        *,
        encoding: Encoding,
        headers: dict[str, str],
        prefix: bytes = b"",
        media_type: str = "application/octet-stream",
        required: bool = False,
    ) -> None:
        self.buffer, self.prefix, self.encoding, self.required = buffer, prefix, encoding, required
        self.identity_headers = headers
        self.status_code = 200
        self.media_type = self.stored_media_type = media_type
        self.background = None
        self.init_headers(
            {
                **headers,
                "etag": encoded_etag(headers["etag"], encoding),
                "content-encoding": encoding,
                "accept-ranges": "bytes",
            }
        )

    def _pieces(self) -> list[bytes | memoryview]:
        first_size = RAW_PIECE_BYTES - len(self.prefix) if self.prefix else RAW_PIECE_BYTES
        view = self.buffer
        pieces: list[bytes | memoryview] = []
        head = view[: max(first_size, 0)]
        pieces.append(self.prefix + bytes(head) if self.prefix else head)
        for start in range(head.nbytes, view.nbytes, RAW_PIECE_BYTES):
            pieces.append(view[start : start + RAW_PIECE_BYTES])
        return pieces

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pieces = self._pieces()
        compressor = _compressor(self.encoding, len(self.prefix) + self.buffer.nbytes)
        first = await anyio.to_thread.run_sync(compressor.piece, pieces[0])
        if not self.required and len(first) > len(pieces[0]) * (1 - MIN_SAVING):
            identity = BufferResponse(
                self.buffer,
                headers=self.identity_headers,
                prefix=self.prefix,
                media_type=self.stored_media_type,
            )
            await identity(scope, receive, send)
            return
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if scope.get("method") != "HEAD":
            await send({"type": "http.response.body", "body": first, "more_body": True})
            for piece in pieces[1:]:
                out = await anyio.to_thread.run_sync(compressor.piece, piece)
                await send({"type": "http.response.body", "body": out, "more_body": True})
            await send({"type": "http.response.body", "body": compressor.end(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
