"""How arrays leave the service: raw bytes or JSON, streamed in large pieces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = [
    "JSON_PIECE_ELEMENTS",
    "RAW_PIECE_BYTES",
    "BufferResponse",
    "attachment",
    "json_response",
]

#: Raw downloads are sent in pieces of this size, straight from the mapped file.
RAW_PIECE_BYTES = 1 << 20
#: JSON is encoded this many elements at a time.
JSON_PIECE_ELEMENTS = 1 << 16


class BufferResponse(Response):
    """Send a read-only buffer (a mapped array or file), or a span of it, without copying it.

    ``span`` is the inclusive byte span of a 206 answer (see ``conditional``),
    or None for the whole buffer (200). The buffer is never released by hand:
    the server may still hold pieces of it in its write buffers after the last
    ``send``; it goes when the last of them does.
    """

    def __init__(
        self,
        buffer: memoryview,
        *,
        headers: dict[str, str],
        span: tuple[int, int] | None = None,
        media_type: str = "application/octet-stream",
    ) -> None:
        size = buffer.nbytes
        headers = {**headers, "accept-ranges": "bytes"}
        if span is None:
            self.status_code = 200
            self.buffer = buffer
        else:
            first, last = span
            self.status_code = 206
            self.buffer = buffer[first : last + 1]
            headers["content-range"] = f"bytes {first}-{last}/{size}"
        self.media_type = media_type
        self.background = None
        self.init_headers({**headers, "content-length": str(self.buffer.nbytes)})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        view = self.buffer
        if scope.get("method") != "HEAD":
            for start in range(0, view.nbytes, RAW_PIECE_BYTES):
                piece = view[start : start + RAW_PIECE_BYTES]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


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


def json_response(key: str, array: np.ndarray, *, headers: dict[str, Any]) -> Response:
    """``{"key", "dtype", "length", "data"}``; large arrays are streamed as they are encoded."""
    if len(array) <= JSON_PIECE_ELEMENTS:
        body = b"".join((_json_head(key, array), _json_values(array), b"]}"))
        return Response(body, media_type="application/json", headers=headers)
    return StreamingResponse(
        _json_pieces(key, array), media_type="application/json", headers=headers
    )
