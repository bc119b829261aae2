"""How arrays leave the service: raw bytes, npy, JSON, CSV or text, streamed in large pieces."""

from __future__ import annotations

import io
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import orjson
from numpy.lib import format as npy_format
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

if TYPE_CHECKING:
    from .storage.interfaces import BlobReader

#: A piece of a body.
Piece = bytes | memoryview

__all__ = [
    "CSV_PIECE_ELEMENTS",
    "JSON_PIECE_ELEMENTS",
    "RAW_PIECE_BYTES",
    "TEXT_MEDIA_TYPES",
    "BufferResponse",
    "RangedBody",
    "RangedResponse",
    "attachment",
    "csv_pieces",
    "json_body",
    "npy_header",
    "rows_pieces",
    "shape_only",
    "utf8_text",
]

#: Raw downloads are sent in pieces of this size, straight from the mapped file.
RAW_PIECE_BYTES = 1 << 20
#: JSON is encoded this many elements at a time.
JSON_PIECE_ELEMENTS = 1 << 16
#: The media types of the forms written as text.
TEXT_MEDIA_TYPES = {
    "json": "application/json",
    "rows": "application/json",
    "csv": "text/csv; header=present",
    "text": "text/plain; charset=utf-8",
}


class BufferResponse(Response):
    """Send a read-only buffer (a mapped array or file), or a span of it, without copying it.

    ``prefix`` (an ``.npy`` header, say) goes before the buffer, and the two
    are one body to ``span``: the inclusive byte span of a 206 answer (see
    ``conditional``), or None for the whole (200). The buffer is never
    released by hand: the server may still hold pieces of it in its write
    buffers after the last ``send``; it goes when the last of them does.
    """

    def __init__(
        self,
        buffer: memoryview,
        *,
        headers: dict[str, str],
        span: tuple[int, int] | None = None,
        media_type: str = "application/octet-stream",
        prefix: bytes = b"",
    ) -> None:
        size = len(prefix) + buffer.nbytes
        headers = {**headers, "accept-ranges": "bytes"}
        if span is None:
            self.status_code = 200
            self.prefix, self.buffer = prefix, buffer
        else:
            first, last = span
            self.status_code = 206
            self.prefix = prefix[first : last + 1]
            self.buffer = buffer[max(0, first - len(prefix)) : max(0, last + 1 - len(prefix))]
            headers["content-range"] = f"bytes {first}-{last}/{size}"
        self.media_type = media_type
        self.background = None
        length = len(self.prefix) + self.buffer.nbytes
        self.init_headers({**headers, "content-length": str(length)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        view = self.buffer
        if scope.get("method") != "HEAD":
            if self.prefix:
                await send({"type": "http.response.body", "body": self.prefix, "more_body": True})
            for start in range(0, view.nbytes, RAW_PIECE_BYTES):
                piece = view[start : start + RAW_PIECE_BYTES]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def shape_only(dtype: np.dtype[Any], length: int) -> np.ndarray:
    """An array of ``dtype`` and ``length`` that holds no memory (for headers, not values)."""
    return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape=(length,), strides=(0,))


def npy_header(array: np.ndarray) -> bytes:
    """The ``.npy`` header (format 1.0) that, followed by the array's bytes, makes the file."""
    out = io.BytesIO()
    npy_format.write_array_header_1_0(out, npy_format.header_data_from_array_1_0(array))
    return out.getvalue()


#: CSV is written this many values at a time.
CSV_PIECE_ELEMENTS = 1 << 16


def csv_pieces(key: str, array: np.ndarray) -> Iterator[bytes]:
    """One value a line, under the key as the header line; written as it is read."""
    # Python's repr of a float is the shortest text that reads back the same.
    yield (_csv_field(key) + "\n").encode()
    for start in range(0, len(array), CSV_PIECE_ELEMENTS):
        values = array[start : start + CSV_PIECE_ELEMENTS].tolist()
        yield ("\n".join(map(repr, values)) + "\n").encode()


def _csv_field(text: str) -> str:
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def utf8_text(array: np.ndarray) -> str | None:
    """The text an int8/uint8 array holds, or None if its bytes are not UTF-8."""
    try:
        return array.tobytes().decode("utf-8")
    except UnicodeDecodeError:
        return None


def rows_pieces(key: str, array: np.ndarray, bounds: list[int]) -> Iterator[bytes]:
    """A ragged column as rows, written when read: row ``i`` is ``array[bounds[i]:bounds[i + 1]]``.

    Rows of an int8/uint8 column are text when every one of them is UTF-8
    (tskit's metadata and provenance records), and lists of numbers otherwise.
    """
    pieces = [array[a:b] for a, b in itertools.pairwise(bounds)]
    rows: list[Any] = []
    if array.dtype.itemsize == 1 and array.dtype.kind in "iu":
        texts = [utf8_text(piece) for piece in pieces]
        if None not in texts:
            rows = texts
    if not rows and pieces:
        rows = [piece.tolist() for piece in pieces]
    yield orjson.dumps({"key": key, "dtype": str(array.dtype), "length": len(rows), "rows": rows})


def attachment(filename: str) -> str:
    """A ``Content-Disposition`` value that survives any characters in ``filename``."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _json_head(key: str, array: np.ndarray) -> bytes:
    head = orjson.dumps({"key": key, "dtype": str(array.dtype), "length": len(array)})
    return head[:-1] + b',"data":['


def _json_values(values: np.ndarray) -> memoryview:
    """The elements as JSON, without the brackets and without copying them out.

    orjson writes NaN and ±inf as null, which is what the API documents.
    """
    return memoryview(orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY))[1:-1]


def _json_pieces(key: str, array: np.ndarray) -> Iterator[bytes | memoryview]:
    yield _json_head(key, array)
    for start in range(0, len(array), JSON_PIECE_ELEMENTS):
        if start:
            yield b","
        yield _json_values(array[start : start + JSON_PIECE_ELEMENTS])
    yield b"]}"


def json_body(key: str, array: np.ndarray) -> bytes | Iterator[bytes | memoryview]:
    """``{"key", "dtype", "length", "data"}``: whole, or pieces encoded as read if large."""
    if len(array) <= JSON_PIECE_ELEMENTS:
        return b"".join((_json_head(key, array), _json_values(array), b"]}"))
    return _json_pieces(key, array)


@dataclass(frozen=True, slots=True)
class RangedBody:
    """Bytes ``[start, stop)`` of a blob that is not mapped (an object in S3): read by
    ranged requests as they are sent, never held whole."""

    reader: BlobReader
    start: int
    stop: int

    @property
    def nbytes(self) -> int:
        return self.stop - self.start

    async def pieces(self, first: int = 0, stop: int | None = None) -> AsyncGenerator[Piece]:
        """Bytes ``[first, stop)`` of the body in pieces, in one ranged request.

        The request is made before the first piece is yielded, so a blob
        removed meanwhile raises ``FileNotFoundError`` before any byte is sent.
        """
        end = self.nbytes if stop is None else stop
        if end <= first:
            return
        async for piece in self.reader.stream(self.start + first, self.start + end):
            yield piece


async def _first_and_rest(
    pieces: AsyncIterator[Piece],
) -> tuple[Piece | None, AsyncIterator[Piece]]:
    """The first piece (its request made, errors raised now), and the iterator."""
    first = await anext(pieces, None)
    return first, pieces


class RangedResponse(Response):
    """``prefix`` then a ``RangedBody``, or a span of the two (206), as pieces arrive.

    As ``BufferResponse``, for blobs read by ranges: with ``Content-Length``;
    the first piece is asked for before the answer starts, so a blob removed
    meanwhile is a 404 rather than a cut answer.
    """

    def __init__(
        self,
        body: RangedBody,
        *,
        headers: dict[str, str],
        span: tuple[int, int] | None = None,
        media_type: str = "application/octet-stream",
        prefix: bytes = b"",
        missing: Exception | None = None,
    ) -> None:
        size = len(prefix) + body.nbytes
        headers = {**headers, "accept-ranges": "bytes"}
        first, last = (0, size - 1) if span is None else span
        self.status_code = 200 if span is None else 206
        if span is not None:
            headers["content-range"] = f"bytes {first}-{last}/{size}"
        self.prefix = prefix[first : last + 1]
        self.body_span = (max(0, first - len(prefix)), max(0, last + 1 - len(prefix)))
        self.ranged, self.missing = body, missing
        self.media_type = media_type
        self.background = None
        length = len(self.prefix) + self.body_span[1] - self.body_span[0]
        self.init_headers({**headers, "content-length": str(length)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = scope.get("method") == "HEAD"
        pieces: AsyncIterator[Piece] | None = None
        first: Piece | None = None
        if not head:
            try:
                first, pieces = await _first_and_rest(self.ranged.pieces(*self.body_span))
            except FileNotFoundError:
                if self.missing is None:
                    raise
                raise self.missing from None
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if not head:
            if self.prefix:
                await send({"type": "http.response.body", "body": self.prefix, "more_body": True})
            if first is not None and pieces is not None:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                async for piece in pieces:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
