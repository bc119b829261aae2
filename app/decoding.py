"""Bodies sent compressed: ``Content-Encoding: zstd`` or ``gzip`` undone as they arrive.

A compressed upload is decompressed a piece at a time, and no call to a
decompressor gives more than ``OUT_PIECE_BYTES``, however little input it
had: a few kilobytes that would expand to gigabytes (a decompression bomb)
never fill memory. The size limit of an upload, applied where the body is
stored, counts the decompressed bytes, so such a body gets 413 as soon as
it passes the limit, and nothing is kept.

A piece of ``INLINE_BYTES`` or more, and every further call that drains
the output of one piece, runs in a worker thread, so the event loop never
waits on it. Either coding may hold several frames (gzip: members) one
after the other, as ``cat a.zst b.zst`` makes; a body that is not valid
data of its coding, or stops within a frame, gets 400 (``CorruptBodyError``).
``identity`` is no coding; any other gets 415 (``UnsupportedEncodingError``).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Literal, Protocol

import anyio.to_thread

try:
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # before Python 3.14
    from backports import zstd  # type: ignore[no-redef,unused-ignore]

from .errors import CorruptBodyError, UnsupportedEncodingError

__all__ = [
    "BODY_CODINGS",
    "INLINE_BYTES",
    "OUT_PIECE_BYTES",
    "BodyCoding",
    "body_coding",
    "decoded",
]

BodyCoding = Literal["zstd", "gzip"]
#: The codings a body may arrive in.
BODY_CODINGS: tuple[BodyCoding, ...] = ("zstd", "gzip")
#: RFC 9110 §8.4.1.3: a recipient should take ``x-gzip`` for ``gzip``.
_ALIASES = {"x-gzip": "gzip"}
#: The most one call to a decompressor gives.
OUT_PIECE_BYTES = 1 << 20
#: Pieces smaller than this are decompressed in the event loop (their first call).
INLINE_BYTES = 16 * 1024
#: What a first call in the event loop gives at most (~0.1 ms of inflating).
INLINE_OUT_BYTES = 64 * 1024


def body_coding(headers: Mapping[str, str]) -> BodyCoding | None:
    """The coding of a request's body, from its ``Content-Encoding``; None if it has none.

    Raises:
        UnsupportedEncodingError: another coding, or several.
    """
    header = headers.get("content-encoding")
    if header is None:
        return None
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [_ALIASES.get(c, c) for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) == 1:
        for coding in BODY_CODINGS:
            if codings[0] == coding:
                return coding
    raise UnsupportedEncodingError(header, BODY_CODINGS)


class _Frame(Protocol):
    """One frame's decompressor: zstd's, or zlib's (its leftover input kept here)."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int) -> bytes: ...


class _Gzip:
    """zlib's decompressor, with its ``unconsumed_tail`` fed back on the next call."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._obj.eof

    @property
    def unused_data(self) -> bytes:
        return self._obj.unused_data

    def decompress(self, data: bytes, max_length: int) -> bytes:
        tail = self._obj.unconsumed_tail
        return self._obj.decompress(tail + data if tail else data, max_length)


class _Decoder:
    """Frames of one coding, one after the other, at most ``limit`` bytes out a call."""

    def __init__(self, coding: BodyCoding) -> None:
        self.coding = coding
        self._frame = self._new()
        self._fed = False  # the current frame has had input

    def _new(self) -> _Frame:
        frame: _Frame = zstd.ZstdDecompressor() if self.coding == "zstd" else _Gzip()
        return frame

    def step(self, data: bytes, limit: int) -> tuple[bytes, bool]:
        """Output from ``data`` and the input before it; and whether more is ready without input."""
        try:
            if self._frame.eof:  # the next frame starts with what the last one left
                data, self._frame, self._fed = self._frame.unused_data + data, self._new(), False
            self._fed = self._fed or bool(data)
            out = self._frame.decompress(data, limit)
        except (zlib.error, zstd.ZstdError) as err:
            raise CorruptBodyError(self.coding, str(err)) from None
        return out, len(out) >= limit or (self._frame.eof and bool(self._frame.unused_data))

    def finish(self) -> None:
        """Check that the body ended where a frame does."""
        if not self._frame.eof:
            reason = "the data ends within a frame" if self._fed else "the body is empty"
            raise CorruptBodyError(self.coding, reason)


async def decoded(pieces: AsyncIterable[bytes], coding: BodyCoding) -> AsyncIterator[bytes]:
    """``pieces`` of a body in ``coding``, decompressed, no piece over ``OUT_PIECE_BYTES``.

    Raises:
        CorruptBodyError: not valid data of the coding, or it stops within a frame.
    """
    decoder = _Decoder(coding)
    async for piece in pieces:
        data: bytes = piece
        inline = len(piece) < INLINE_BYTES
        while True:
            if inline:
                out, more = decoder.step(data, INLINE_OUT_BYTES)
            else:
                out, more = await anyio.to_thread.run_sync(decoder.step, data, OUT_PIECE_BYTES)
            if out:
                yield out
            if not more:
                break
            data, inline = b"", False
    decoder.finish()
