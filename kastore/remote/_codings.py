"""Compressed answers: the codings the client asks for, and reading them back.

Arrays are asked for with ``Accept-Encoding: zstd, gzip`` when the
``zstandard`` package is installed, and ``gzip`` alone otherwise (the
standard library decodes it): kastore needs neither. The service answers as
it is with arrays too small to pay, or that do not shrink.

An answer is decoded as it is read: a piece of the compressed body at a
time, decompressed straight into the caller's buffer, never more than it
asked for, so a compressed answer costs no more memory than a raw one.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Any

from .._transport import Response
from ._errors import ProtocolError

try:
    import zstandard
except ImportError:  # optional: gzip alone then
    zstandard = None  # type: ignore[assignment]

__all__ = ["ACCEPT_ENCODING", "DecodedBody"]

#: What the client accepts, best first.
ACCEPT_ENCODING = "zstd, gzip" if zstandard is not None else "gzip"
#: Compressed bytes read from the connection at a time.
_READ_BYTES = 256 * 1024
_DECODE_ERRORS: tuple[type[Exception], ...] = (zlib.error, gzip.BadGzipFile, EOFError) + (
    (zstandard.ZstdError,) if zstandard is not None else ()
)


class DecodedBody:
    """The body of ``response``, decoded as its ``Content-Encoding`` says.

    Raises:
        ProtocolError: a coding that was not asked for, or a body that does
            not decode (``HTTPBrokenAnswerError`` when the connection breaks).
    """

    def __init__(self, response: Response) -> None:
        self.url = response.url
        self.coding = response.headers.get("content-encoding", "identity").strip().lower()
        source: Any = response  # read(size) is all the decoders ask of it
        self._stream: Any
        if self.coding == "identity":
            self._stream = response
        elif self.coding == "gzip":
            self._stream = gzip.GzipFile(fileobj=source, mode="rb")
        elif self.coding == "zstd" and zstandard is not None:
            self._stream = zstandard.ZstdDecompressor().stream_reader(
                source, read_size=_READ_BYTES, read_across_frames=True, closefd=False
            )
        else:
            raise ProtocolError(
                f"{self.url}: the answer came in Content-Encoding {self.coding!r}, "
                f"which was not asked for ({ACCEPT_ENCODING})"
            )

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer``; fewer bytes only where the body ends."""
        filled = 0
        try:
            while filled < len(buffer):
                count = self._stream.readinto(buffer[filled:])
                if not count:
                    break
                filled += count
        except _DECODE_ERRORS as err:
            raise ProtocolError(
                f"{self.url}: the {self.coding} answer does not decode: {err}"
            ) from err
        return filled

    def at_end(self) -> bool:
        """Whether the body holds nothing more (it is read a byte further to know)."""
        return self.readinto(memoryview(bytearray(1))) == 0
