"""Request bodies as streams of pieces: raw, or the file part of a multipart form.

Neither form is ever held whole in memory: pieces go to storage as they
arrive. Every limit is applied here, as the bytes come:

- a body that stalls (no byte for ``timeout`` seconds) is refused with 408;
- every byte of a multipart body counts, boundaries, part headers and the
  text after the last part included: at most the file's limit plus
  ``FORM_OVERHEAD`` (413 beyond);
- the headers of each part hold at most ``MAX_PART_HEADER_BYTES``, and a
  field other than the file at most ``MAX_FIELD_BYTES``; a form holds the file
  and each documented field at most once, so it has a bounded number of parts.

A body sent with ``Content-Encoding: zstd`` or ``gzip`` is decompressed as it
comes (see ``decoding``), and the limits count the decompressed bytes; any
other coding gets 415 before a byte is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import PurePosixPath

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from .decoding import body_coding, decoded
from .errors import (
    MalformedUploadError,
    RequestTimeoutError,
    UnsupportedUploadError,
    UploadTooLargeError,
)

__all__ = [
    "FILE_FIELD",
    "FORM_OVERHEAD",
    "MAX_FIELD_BYTES",
    "MAX_PART_HEADER_BYTES",
    "MultipartUpload",
    "check_declared_size",
    "is_multipart",
    "raw_body",
]

#: The form field carrying the file: ``curl -F file=@data.kas``.
FILE_FIELD = "file"
#: Other form fields (``name``) are short; anything longer is refused.
MAX_FIELD_BYTES = 1024
#: The headers of one part (``Content-Disposition``, ``Content-Type``).
MAX_PART_HEADER_BYTES = 8 * 1024
#: What a multipart form may add around its file: boundaries, part headers, a name.
FORM_OVERHEAD = 64 * 1024


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse at once a body whose ``Content-Length`` cannot fit under ``limit``.

    The exact limit on the file's bytes is enforced while they arrive.
    """
    declared = request.headers.get("content-length")
    allowed = limit + FORM_OVERHEAD if is_multipart(request) else limit
    if declared is not None and declared.isdigit() and int(declared) > allowed:
        raise UploadTooLargeError(limit)


def is_multipart(request: Request) -> bool:
    content_type, _ = parse_options_header(request.headers.get("content-type"))
    return content_type == b"multipart/form-data"


async def _received(request: Request, timeout: float) -> AsyncIterator[bytes]:
    """The body's pieces as they arrive; 408 once none has come for ``timeout`` seconds."""
    stream = request.stream()
    while True:
        try:
            async with asyncio.timeout(timeout):
                piece = await anext(stream)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await stream.aclose()
            raise RequestTimeoutError.for_body(timeout) from None
        if piece:
            yield piece


def _body(request: Request, timeout: float) -> AsyncIterator[bytes]:
    """The body's pieces as they arrive, decompressed as its ``Content-Encoding`` says.

    Raises:
        UnsupportedEncodingError: at once, for a coding other than zstd or gzip.
    """
    coding = body_coding(request.headers)
    received = _received(request, timeout)
    return received if coding is None else decoded(received, coding)


def raw_body(request: Request, *, timeout: float) -> AsyncIterator[bytes]:
    """The body as it arrives, decompressed (its size is limited where it is stored)."""
    return _body(request, timeout)


class MultipartUpload:
    """Streams the ``file`` part of a ``multipart/form-data`` body.

    Iterate over ``pieces()`` to receive the file's bytes; once it is
    exhausted, ``filename`` and ``fields`` hold what the form also said.
    Besides the file, the form may hold each of ``fields`` once, and nothing
    else: an unknown or repeated field is refused (415) as soon as it starts.
    """

    def __init__(
        self,
        request: Request,
        *,
        max_bytes: int,
        timeout: float,
        fields: tuple[str, ...] = (),
    ) -> None:
        _, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if not boundary:
            raise UnsupportedUploadError(
                "multipart body without a boundary; send the file with curl -F file=@PATH"
            )
        self._body = _body(request, timeout)
        self._max_bytes = max_bytes
        self._allowed = fields
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self._seen_file = False
        self._out: list[bytes] = []
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._header_bytes = 0
        self._headers: dict[bytes, bytes] = {}
        self._part: str | None = None
        self._part_is_file = False
        self._value = bytearray()
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._on_part_begin,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
            },
        )

    async def pieces(self) -> AsyncIterator[bytes]:
        received = 0
        async for chunk in self._body:
            received += len(chunk)
            if received > self._max_bytes + FORM_OVERHEAD:
                raise UploadTooLargeError(self._max_bytes)
            try:
                self._parser.write(chunk)
            except MultipartParseError as err:
                raise MalformedUploadError(f"malformed multipart body: {err}") from None
            if self._out:
                out, self._out = self._out, []
                for piece in out:
                    yield piece
        try:
            self._parser.finalize()
        except MultipartParseError as err:
            raise MalformedUploadError(f"malformed multipart body: {err}") from None
        if not self._seen_file:
            raise UnsupportedUploadError(
                f"the form has no {FILE_FIELD!r} field; send the file with "
                f"curl -F {FILE_FIELD}=@PATH"
            )

    @property
    def stem(self) -> str | None:
        """The uploaded file's name without folders or extension."""
        if not self.filename:
            return None
        return PurePosixPath(self.filename.replace("\\", "/")).stem

    # Parser callbacks

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_bytes = 0
        self._part = None
        self._part_is_file = False
        self._value = bytearray()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._header_value += data[start:end]

    def _count_header(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_PART_HEADER_BYTES:
            raise MalformedUploadError(
                f"a part of the form has more than {MAX_PART_HEADER_BYTES} bytes of headers; "
                f"send the file with curl -F {FILE_FIELD}=@PATH"
            )

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        self._part = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if self._part != FILE_FIELD and filename is not None:
            raise UnsupportedUploadError(
                f"the file came in form field {self._part!r}, but the form has no "
                f"{FILE_FIELD!r} field; send it with curl -F {FILE_FIELD}=@PATH"
            )
        if self._part != FILE_FIELD:
            if self._part not in self._allowed:
                expected = ", ".join(repr(field) for field in (FILE_FIELD, *self._allowed))
                raise UnsupportedUploadError(
                    f"the form has a field {self._part!r}; it takes only {expected}"
                )
            if self._part in self.fields:
                raise UnsupportedUploadError(f"send one {self._part!r} field, not several")
        if self._part == FILE_FIELD:
            if self._seen_file:
                raise UnsupportedUploadError(f"send one {FILE_FIELD!r} field, not several")
            self._seen_file = self._part_is_file = True
            self.filename = None if filename is None else filename.decode("utf-8", "replace")

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part_is_file:
            self._out.append(data[start:end])
        else:
            self._value += data[start:end]
            if len(self._value) > MAX_FIELD_BYTES:
                raise UnsupportedUploadError(
                    f"form field {self._part!r} is longer than {MAX_FIELD_BYTES} bytes"
                )

    def _on_part_end(self) -> None:
        if self._part is not None and not self._part_is_file:
            self.fields[self._part] = self._value.decode("utf-8", "replace")
