"""Conditional and partial requests, once, for every raw route (RFC 9110 §13 and §14).

Every raw answer (an array, a slice of one, a whole file) has a strong ETag:
stored content never changes, so the ETag names the content and the
representation. Here, and nowhere else:

- ``If-None-Match`` naming that ETag (or ``*``) gives 304 Not Modified, with
  the headers of the 200 and no body; it is checked before ``Range``.
- ``Range: bytes=FIRST-LAST``, ``bytes=FIRST-`` or ``bytes=-SUFFIX`` gives 206
  with those bytes and ``Content-Range``. A first byte at or past the end gives
  416 with ``Content-Range: bytes */SIZE``. A header that does not parse, or
  asks for several ranges, is ignored (the whole answer, 200), as RFC 9110
  allows. Numbers too long to be a position in any file (more than 18
  significant digits) read as "past the end": a first byte that far gives 416,
  a last byte that far is clipped to the end, a suffix that long is the whole.
- ``If-Range`` with another validator than the ETag (an older ETag, a weak
  one, or a date) makes the ``Range`` ignored: the client gets the whole of
  the current version instead of a piece of it spliced onto an older one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from starlette.responses import Response, StreamingResponse

from .compression import (
    CODINGS,
    CompressedResponse,
    Encoding,
    Piece,
    RangedCompressedResponse,
    choose_encoding,
    encoded_etag,
)
from .encoders import RAW_PIECE_BYTES, BufferResponse, RangedBody, RangedResponse
from .errors import RangeNotSatisfiableError

__all__ = ["byte_span", "etag_matches", "not_modified", "raw_answer", "streamed_answer"]

_BYTE_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)
#: Positions with more significant digits than this are past the end of any file.
_MAX_DIGITS = 18
_PAST_ANY_END = 10**_MAX_DIGITS


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison of an ``If-None-Match`` list with ``etag``."""
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def not_modified(request_headers: Mapping[str, str], headers: Mapping[str, str]) -> Response | None:
    """304 with ``headers`` when ``If-None-Match`` names ``headers["etag"]``; else None."""
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None and etag_matches(if_none_match, headers["etag"]):
        return Response(status_code=304, headers=dict(headers))
    return None


def _number(digits: str) -> int:
    significant = digits.lstrip("0")
    return int(significant or "0") if len(significant) <= _MAX_DIGITS else _PAST_ANY_END


def byte_span(request_headers: Mapping[str, str], etag: str, size: int) -> tuple[int, int] | None:
    """The inclusive byte span the request's ``Range`` asks for, or None for the whole.

    Raises:
        RangeNotSatisfiableError: the range starts at or past the end.
    """
    requested = request_headers.get("range")
    if requested is None:
        return None
    if_range = request_headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        return None
    match = _BYTE_RANGE.fullmatch(requested.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":  # the last N bytes
        suffix = _number(last_text)
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiableError(requested, size)
        return max(size - suffix, 0), size - 1
    first = _number(first_text)
    last = size - 1 if last_text == "" else _number(last_text)
    if last_text and last < first:  # not a valid range: ignored
        return None
    if first >= size:
        raise RangeNotSatisfiableError(requested, size)
    return first, min(last, size - 1)


def _negotiate(
    request_headers: Mapping[str, str],
    headers: dict[str, str],
    *,
    compress_min_bytes: int | None,
    size: int | None,
    ranged: bool,
) -> tuple[dict[str, str], Encoding, bool, Response | None]:
    """The identity headers, the coding, whether it is a must, and a 304 if it is one.

    ``size`` is the body's, when known before it is made: a small body gets
    identity, and so does a request with a ``Range`` (``ranged``). Answers
    vary with ``Accept-Encoding``. ``If-None-Match`` naming the ETag of any
    coding gives 304: the content is the same.
    """
    headers = {**headers, "vary": _vary(headers.get("vary"), "Accept-Encoding")}
    encoding, required = choose_encoding(
        None if compress_min_bytes is None else request_headers.get("accept-encoding")
    )
    small = size is not None and size < (compress_min_bytes or 0)
    if ranged or (small and not required):
        encoding = "identity"  # a Range counts stored bytes; small bodies do not pay
    # Every coding holds the same content: any of their ETags is a match.
    for coding in dict.fromkeys((encoding, "identity", *CODINGS)):
        tagged = {**headers, "etag": encoded_etag(headers["etag"], coding)}
        unchanged = not_modified(request_headers, tagged)
        if unchanged is not None:
            return headers, encoding, required, unchanged
    return headers, encoding, required, None


def _slices(buffer: memoryview) -> list[Piece]:
    return [buffer[i : i + RAW_PIECE_BYTES] for i in range(0, buffer.nbytes, RAW_PIECE_BYTES)]


def raw_answer(
    request_headers: Mapping[str, str],
    buffer: memoryview | RangedBody,
    *,
    headers: dict[str, str],
    prefix: bytes = b"",
    media_type: str = "application/octet-stream",
    compress_min_bytes: int | None = None,
    missing: Exception | None = None,
) -> Response:
    """``prefix`` then ``buffer`` as the answer to a GET or HEAD: 304, 206 or 200.

    ``buffer`` is a mapped file's bytes, or a ``RangedBody`` of an object
    read by ranges as it is sent (``missing`` is raised if it is gone).
    ``headers`` must hold the representation's strong ``etag``. Answers
    vary with ``Accept-Encoding``: a 200 of ``compress_min_bytes`` or more
    goes zstd or gzip when the client accepts it (see ``compression``), with
    the coding's ETag; a request with a ``Range`` always gets stored bytes.
    ``If-None-Match`` naming the ETag of any coding gives 304.
    """
    size = len(prefix) + buffer.nbytes
    headers, encoding, required, unchanged = _negotiate(
        request_headers,
        headers,
        compress_min_bytes=compress_min_bytes,
        size=size,
        ranged="range" in request_headers,
    )
    if unchanged is not None:
        return unchanged
    if isinstance(buffer, RangedBody):
        identity = RangedResponse(
            buffer, headers=headers, prefix=prefix, media_type=media_type, missing=missing
        )
        if encoding != "identity":
            return RangedCompressedResponse(
                buffer,
                encoding=encoding,
                headers=headers,
                media_type=media_type,
                identity=identity,
                prefix=prefix,
                required=required,
                missing=missing,
            )
        span = byte_span(request_headers, headers["etag"], size)
        if span is None:
            return identity
        return RangedResponse(
            buffer,
            headers=headers,
            span=span,
            prefix=prefix,
            media_type=media_type,
            missing=missing,
        )
    if encoding != "identity":
        return CompressedResponse(
            [prefix, *_slices(buffer)] if prefix else _slices(buffer),
            encoding=encoding,
            headers={**headers, "accept-ranges": "bytes"},
            media_type=media_type,
            required=required,
            identity=BufferResponse(buffer, headers=headers, prefix=prefix, media_type=media_type),
            size=size,
        )
    span = byte_span(request_headers, headers["etag"], size)
    return BufferResponse(buffer, headers=headers, span=span, prefix=prefix, media_type=media_type)


def streamed_answer(
    request_headers: Mapping[str, str],
    body: bytes | memoryview | Iterable[Piece],
    *,
    headers: dict[str, str],
    media_type: str,
    compress_min_bytes: int,
) -> Response:
    """JSON, CSV or text as the answer to a GET or HEAD: 304, or 200 sent as it is made.

    ``body`` is the whole (bytes or a buffer), or pieces made as they are
    read, each in a worker thread. ``headers`` must hold the
    representation's strong ``etag``. Compressed as for ``raw_answer``, from
    ``compress_min_bytes``; a ``Range`` is ignored (the whole, 200), as RFC
    9110 allows.
    """
    whole: memoryview | None = None
    pieces: Iterable[Piece]
    if isinstance(body, bytes | memoryview):
        whole = memoryview(body).cast("B")
        pieces = _slices(whole)
    else:
        pieces = body
    headers, encoding, required, unchanged = _negotiate(
        request_headers,
        headers,
        compress_min_bytes=compress_min_bytes,
        size=None if whole is None else whole.nbytes,
        ranged=False,
    )
    if unchanged is not None:
        return unchanged
    if encoding != "identity":
        return CompressedResponse(
            pieces,
            encoding=encoding,
            headers=headers,
            media_type=media_type,
            required=required,
            min_bytes=compress_min_bytes,
            size=-1 if whole is None else whole.nbytes,
        )
    if whole is not None:
        return Response(bytes(whole), headers=headers, media_type=media_type)
    return StreamingResponse(iter(pieces), headers=headers, media_type=media_type)


def _vary(vary: str | None, field: str) -> str:
    if not vary:
        return field
    named = {name.strip().lower() for name in vary.split(",")}
    return vary if field.lower() in named else f"{vary}, {field}"
