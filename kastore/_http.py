"""Files over HTTP: a read-only, seekable file object that reads by Range requests.

``HTTPFile(url)`` lets ``load`` read a store served by any server that answers
``Range`` requests (nginx, S3 presigned URLs, kastore-service) the way it reads
a local file it cannot map: the header, descriptors and keys when the store is
loaded, and each array when it is first used.

- The first request asks for the first ``read_ahead`` bytes (64 KiB): for
  stores of up to about a thousand keys that is the header, the descriptors
  and the keys in one request; larger ones take one or two more.
- Every later read that misses asks for the bytes wanted plus ``read_ahead``
  more, kept for the next read: small arrays read in file order come many to
  a request, and a large one costs at most ``read_ahead`` bytes beyond itself.
- A server that ignores ``Range`` (200 instead of 206) gets read whole, once,
  into memory, and is served from there.
- Every answer must name the same file: the same size in ``Content-Range``
  and, where the server sends one, the same ``ETag``. A file replaced while it
  is open raises ``HTTPFileChangedError`` rather than mixing two versions.

The HTTP client underneath is ``_transport.Transport`` (the standard library's
``http.client``): keep-alive, redirects, timeouts and retries. Errors are
``OSError``s: ``FileNotFoundError`` for a 404, ``PermissionError`` for a 401 or
403, as for a local file.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping

from ._files import is_url
from ._transport import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    HTTPBrokenAnswerError,
    HTTPConnectionError,
    HTTPFileChangedError,
    HTTPProtocolError,
    Response,
    Transport,
    drop_credentials,
    origin_of,
    status_error,
)

__all__ = ["READ_AHEAD", "HTTPFile"]

logger = logging.getLogger("kastore")

READ_AHEAD = 64 * 1024
"""Bytes asked for beyond each read that misses (and in the first request)."""
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
#: A read that starts in the kept bytes fetches only the rest if the rest is this small.
_JOIN_LIMIT = 4 * READ_AHEAD
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)


class HTTPFile(io.RawIOBase):
    """A read-only, seekable file at an ``http(s)://`` URL, read by Range requests.

    Opening it makes the first request (and raises if the file is not there).

    Parameters:
        url: the file's URL. Redirects are followed; later requests go to
            where the first one ended.
        headers: sent with every request (credentials, say).
        timeout, retries: as for ``Transport``.
        read_ahead: bytes asked for beyond each read that misses.
        transport: a ``Transport`` to share (it is not closed with the file).

    Raises:
        HTTPNotFoundError, HTTPPermissionError, HTTPStatusError: an error answer.
        HTTPConnectionError, HTTPTimeoutError: no answer.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        read_ahead: int = READ_AHEAD,
        transport: Transport | None = None,
    ) -> None:
        super().__init__()
        if not is_url(url):
            raise ValueError(f"not an http(s) URL: {url!r}")
        origin_of(url)
        if read_ahead < 0:
            raise ValueError(f"read_ahead must be 0 or more, got {read_ahead!r}")
        self.url = url
        self._location = url
        self._headers = {"Accept-Encoding": "identity", **(headers or {})}
        self._owns_transport = transport is None
        self._transport = transport or Transport(timeout=timeout, retries=retries)
        self._read_ahead = read_ahead
        self._position = 0
        self._head = b""
        """The first bytes of the file (header, keys, often small arrays), kept."""
        self._block = b""
        """The bytes after the last read that missed, and where they start."""
        self._block_start = 0
        self._etag: str | None = None
        self.requests = 0
        """How many requests this file has made."""
        self.bytes_received = 0
        """How many bytes of file data it has received."""
        self.ranges = True
        """Whether the server answers Range requests (if not, the file was read whole)."""
        try:
            self._size = self._open()
        except BaseException:
            self.close()
            raise

    @property
    def size(self) -> int:
        """The file's size in bytes."""
        return self._size

    def _get(self, first: int, last: int) -> Response:
        """GET bytes ``first`` to ``last`` (inclusive) of the file."""
        headers = {**self._headers, "Range": f"bytes={first}-{last}"}
        if origin_of(self._location) != origin_of(self.url):
            headers = drop_credentials(headers)  # a redirect led elsewhere
        self.requests += 1
        response = self._transport.request("GET", self._location, headers=headers)
        if response.status >= 400 and response.status != 416 and self._location != self.url:
            # Where a redirect led (a presigned URL, say) may have expired: ask again.
            response.close()
            self._location = self.url
            self.requests += 1
            headers = {**self._headers, "Range": f"bytes={first}-{last}"}
            response = self._transport.request("GET", self.url, headers=headers)
        self._location = response.url
        return response

    def _open(self) -> int:
        response = self._get(0, max(self._read_ahead, 1) - 1)
        with response:
            if response.status == 416:
                empty = _UNSATISFIED_RANGE.fullmatch(response.headers.get("content-range", ""))
                if empty is not None and int(empty.group(1)) == 0:
                    return 0  # an empty file
                raise HTTPProtocolError(f"{self.url}: 416 for a range starting at byte 0")
            if response.status >= 400:
                raise status_error(response)
            self._etag = response.headers.get("etag")
            if response.status == 200:
                return self._read_whole(response)
            if response.status != 206:
                raise HTTPProtocolError(
                    f"{self.url}: expected 206 Partial Content or 200, got {response.status}"
                )
            first, _last, total = self._content_range(response)
            if first != 0 or total is None:
                raise HTTPProtocolError(
                    f"{self.url}: Content-Range {response.headers.get('content-range')!r} "
                    "does not give the file's size from byte 0"
                )
            self._head = response.read()
            self.bytes_received += len(self._head)
            return total

    def _read_whole(self, response: Response) -> int:
        """Keep the whole file, from a server that answered the Range with all of it."""
        logger.warning(
            "%s: the server does not answer Range requests; reading the whole file", self.url
        )
        self.ranges = False
        self._head = response.read()
        self.bytes_received += len(self._head)
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) != len(self._head):
            raise HTTPConnectionError(
                f"{self.url}: the answer ended after {len(self._head)} of {declared} bytes"
            )
        return len(self._head)

    def _content_range(self, response: Response) -> tuple[int, int, int | None]:
        text = response.headers.get("content-range", "")
        match = _CONTENT_RANGE.fullmatch(text.strip())
        if match is None:
            raise HTTPProtocolError(f"{self.url}: 206 with a bad Content-Range {text!r}")
        first, last, total = match.groups()
        return int(first), int(last), None if total == "*" else int(total)

    def _cached(self, start: int, stop: int) -> bytes:
        """The bytes from ``start`` on (up to ``stop``) that are kept, if any."""
        if start < len(self._head):
            return self._head[start:stop]
        offset = start - self._block_start
        if 0 <= offset < len(self._block):
            return self._block[offset : offset + stop - start]
        return b""

    def _fetch(self, start: int, stop: int) -> bytes:
        """Bytes ``[start, stop)``; the ``read_ahead`` bytes after them are kept."""
        return self._transport.retrying(self.url, lambda: self._fetch_once(start, stop))

    def _fetch_once(self, start: int, stop: int) -> bytes:
        end = min(stop + self._read_ahead, self._size)
        response = self._get(start, end - 1)
        with response:
            if response.status >= 400 and response.status != 416:
                raise status_error(response)
            etag = response.headers.get("etag")
            if response.status in (200, 416) or (etag != self._etag and etag is not None):
                raise HTTPFileChangedError(
                    f"{self.url} has changed since it was opened (a range of it was answered "
                    f"with {response.status}{f' and ETag {etag}' if etag else ''}); load it again"
                )
            if response.status != 206:
                raise HTTPProtocolError(
                    f"{self.url}: expected 206 Partial Content, got {response.status}"
                )
            first, last, total = self._content_range(response)
            if total != self._size:
                raise HTTPFileChangedError(
                    f"{self.url} has changed since it was opened: it had {self._size} bytes, "
                    f"it has {total}; load it again"
                )
            if first != start or last != end - 1:
                raise HTTPProtocolError(
                    f"{self.url}: asked for bytes {start}-{end - 1}, got {first}-{last}"
                )
            data = response.read(stop - start)
            tail = response.read()
        received = len(data) + len(tail)
        self.bytes_received += received
        if received != end - start:
            raise HTTPBrokenAnswerError(
                f"{self.url}: the answer ended after {received} of {end - start} bytes"
            )
        self._block, self._block_start = tail, stop
        return data

    # --- io.RawIOBase ---

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        self._checkClosed()
        start = self._position
        stop = self._size if size is None or size < 0 else min(start + size, self._size)
        if start >= stop:
            return b""
        cached = self._cached(start, stop)
        if len(cached) == stop - start:
            data = cached
        elif cached and stop - start - len(cached) <= _JOIN_LIMIT:
            # The start is here, the rest is small: fetch the rest and join them.
            data = cached + self._fetch(start + len(cached), stop)
        else:
            # Fetch it all rather than copy a large array to join it to a few bytes.
            data = self._fetch(start, stop)
        self._position = stop
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._head = self._block = b""
            transport = getattr(self, "_transport", None)
            if getattr(self, "_owns_transport", False) and transport is not None:
                transport.close()
        super().close()

    def __repr__(self) -> str:
        return f"<kastore HTTPFile {self.url!r}>"
