"""The HTTP client underneath ``HTTPFile`` and ``kastore.remote``: the standard library's.

``Transport`` sends requests over keep-alive connections (a pool per origin),
follows redirects (credentials stay with their origin), applies a timeout to
connecting and to every read, and tries again with backoff after a connection
error or a timeout: any request that cannot have reached the server, and a
request of an idempotent method (not POST) in any case.

Its errors are ``OSError``s, as a local file's are::

    OSError
    ├── HTTPStatusError              the server answered 4xx or 5xx (.status, .url)
    │   ├── HTTPNotFoundError        404 and 410; also a FileNotFoundError
    │   └── HTTPPermissionError      401 and 403; also a PermissionError
    ├── HTTPFileChangedError         a file changed between two requests
    ├── HTTPProtocolError            an answer that breaks the protocol
    ├── ConnectionError
    │   └── HTTPConnectionError      no answer after every retry
    │       └── HTTPBrokenAnswerError  an answer cut off before its end
    └── TimeoutError
        └── HTTPTimeoutError         no answer within the timeout, after every retry
"""

from __future__ import annotations

import http.client
import json
import logging
import select
import ssl
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

from ._version import __version__

__all__ = [
    "HTTPBrokenAnswerError",
    "HTTPConnectionError",
    "HTTPFileChangedError",
    "HTTPNotFoundError",
    "HTTPPermissionError",
    "HTTPProtocolError",
    "HTTPStatusError",
    "HTTPTimeoutError",
    "Response",
    "Transport",
    "drop_credentials",
    "origin_of",
    "status_error",
]

logger = logging.getLogger("kastore")

DEFAULT_TIMEOUT = 30.0
"""Seconds to wait for a connection, and for each read from it."""
DEFAULT_RETRIES = 3
"""Further attempts after a connection error, with backoff between them."""
DEFAULT_BACKOFF = 0.25
"""Seconds before the first retry; each later one waits twice as long."""
MAX_REDIRECTS = 10
USER_AGENT = f"kastore/{__version__}"

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_CREDENTIALS = frozenset({"authorization", "x-api-key", "cookie"})
#: Error bodies are read up to this size for their message.
_MAX_ERROR_BODY = 64 * 1024

T = TypeVar("T")

Body = Callable[[], Iterable[bytes]]
"""Makes the request body afresh for each attempt, so a retry can send it again."""


# --- errors -----------------------------------------------------------------------


class HTTPStatusError(OSError):
    """The server answered with an error status."""

    def __init__(self, status: int, url: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"HTTP {status}: {message} ({url})")
        self.status = status
        self.url = url
        self.detail = message
        """The server's message: the ``detail`` of a JSON error body, or its text."""
        self.code = code
        """The ``error`` of a JSON error body (kastore-service's error code), if any."""


class HTTPNotFoundError(HTTPStatusError, FileNotFoundError):
    """404 Not Found or 410 Gone."""


class HTTPPermissionError(HTTPStatusError, PermissionError):
    """401 Unauthorized or 403 Forbidden."""


class HTTPFileChangedError(OSError):
    """The file on the server is not the one that was opened any more."""


class HTTPProtocolError(OSError):
    """The server's answer breaks the rules of HTTP or of the request it answers."""


class HTTPConnectionError(ConnectionError):
    """The server could not be reached, or dropped the connection, every time."""


class HTTPBrokenAnswerError(HTTPConnectionError):
    """The connection broke before the end of an answer (``Transport.retrying`` tries again)."""


class HTTPTimeoutError(TimeoutError):
    """The server did not answer within the timeout, every time."""


def _error_message(response: Response) -> tuple[str | None, str]:
    """What an error answer says: a JSON ``error`` and ``detail``, a short text, or the reason."""
    body = response.read_limited(_MAX_ERROR_BODY)
    text = body.decode("utf-8", "replace").strip()
    try:
        document = json.loads(text)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("detail"), str):
        code = document.get("error")
        return (code if isinstance(code, str) else None), document["detail"]
    if text and "html" not in response.headers.get("content-type", ""):
        return None, text[:300]
    return None, response.reason or "error"


def status_error(response: Response) -> HTTPStatusError:
    """The exception for an error answer (its body is read, up to a limit)."""
    code, message = _error_message(response)
    status = response.status
    cls = HTTPStatusError
    if status in (404, 410):
        cls = HTTPNotFoundError
    elif status in (401, 403):
        cls = HTTPPermissionError
    return cls(status, response.url, message, code=code)


# --- transport --------------------------------------------------------------------

_Origin = tuple[str, str, int]


def origin_of(url: str) -> _Origin:
    """``(scheme, host, port)`` of an http(s) URL; ``ValueError`` for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError(f"bad port in URL {url!r}: {err}") from None
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def _target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class Response:
    """An answer whose body has not been read yet.

    Read the body with ``read``, ``readinto`` or ``read_limited``, or drop it
    with ``close``; a connection whose answer was read to the end goes back to
    the pool for the next request.
    """

    def __init__(
        self,
        raw: http.client.HTTPResponse,
        url: str,
        release: Callable[[bool], None],
    ) -> None:
        self._raw = raw
        self.url = url
        self.status: int = raw.status
        self.reason: str = raw.reason
        self.headers = raw.headers
        self._release: Callable[[bool], None] | None = release
        if raw.isclosed():  # no body (HEAD, 204, 304): the connection is free at once
            self._finish()

    def _finish(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(self._raw.isclosed() and not self._raw.will_close)

    def read(self, size: int | None = None) -> bytes:
        """Read ``size`` bytes of the body, or all of it."""
        try:
            data = self._raw.read(size) if size is not None else self._raw.read()
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise _transport_error(err, self.url, broken=True) from err
        if self._raw.isclosed() or (size is not None and len(data) < size):
            self._finish()
        return data

    def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer`` from the body; fewer bytes only where the body ends."""
        filled = 0
        try:
            while filled < len(buffer):
                count = self._raw.readinto(buffer[filled:])
                if not count:
                    break
                filled += count
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise _transport_error(err, self.url, broken=True) from err
        if self._raw.isclosed():
            self._finish()
        return filled

    def read_limited(self, limit: int) -> bytes:
        """Read the body if it is at most ``limit`` bytes, else its start; then close."""
        try:
            data = self._raw.read(limit)
        except (OSError, http.client.HTTPException):
            data = b""
        self.close()
        return data

    def close(self) -> None:
        """Drop what is left of the body (and the connection, if any is left)."""
        if self._release is None:
            return
        if not self._raw.isclosed():
            self._raw.close()
            release, self._release = self._release, None
            release(False)
        else:
            self._finish()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _transport_error(err: BaseException, url: str, *, broken: bool = False) -> OSError:
    where = urlsplit(url).netloc
    if isinstance(err, TimeoutError):
        return HTTPTimeoutError(f"no answer from {where} within the timeout")
    if isinstance(err, http.client.IncompleteRead):
        return HTTPBrokenAnswerError(
            f"{where} closed the connection with {err.expected} bytes of the answer unsent"
        )
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return (HTTPBrokenAnswerError if broken else HTTPConnectionError)(f"{where}: {reason}")


def drop_credentials(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without the ones that prove who is asking (for another origin)."""
    return {name: value for name, value in headers.items() if name.lower() not in _CREDENTIALS}


class Transport:
    """Requests over keep-alive connections, with redirects, timeouts and retries.

    Safe to share between threads: each request takes a connection of its own
    from the pool, and gives it back when its answer has been read.

    Parameters:
        timeout: seconds to wait to connect, and for each read.
        retries: further attempts after a connection error or a timeout. A
            request that may have reached the server is sent again only if
            its method is idempotent (not POST).
        backoff: seconds before the first retry; doubled for each later one.
        headers: sent with every request (an ``Authorization`` header, say);
            credentials are not sent on to another origin by a redirect.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries!r}")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.headers = dict(headers or {})
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        # Idle connections are closed when the transport goes, even if nobody closes it.
        weakref.finalize(self, _close_idle, self._idle)
        self._lock = threading.Lock()
        self._closed = False
        self.connections_opened = 0
        """How many connections were made (fewer than requests, thanks to keep-alive)."""

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body | None = None,
        follow_redirects: bool = True,
    ) -> Response:
        """Send a request and return the answer, its body unread.

        ``body`` makes the body, afresh for each attempt; give a
        ``Content-Length`` header with it, or it is sent chunked.

        Raises:
            HTTPConnectionError, HTTPTimeoutError: no answer, after every retry.
            HTTPProtocolError: too many redirects.
        """
        sent = {"User-Agent": USER_AGENT, **self.headers, **(headers or {})}
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, sent, body)
            location = response.headers.get("location")
            if not follow_redirects or response.status not in _REDIRECTS or not location:
                return response
            response.read_limited(_MAX_ERROR_BODY)
            target = urljoin(url, location)
            if origin_of(target) != origin_of(url):
                sent = drop_credentials(sent)
            if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                method, body = ("HEAD" if method == "HEAD" else "GET"), None
                sent = {k: v for k, v in sent.items() if k.lower() != "content-length"}
            url = target
        raise HTTPProtocolError(f"more than {MAX_REDIRECTS} redirects from {url}")

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body | None) -> Response:
        origin = origin_of(url)
        target = _target(url)
        attempt = 0
        while True:
            conn = self._connection(origin)
            try:
                if conn.sock is None:
                    conn.connect()
                    self.connections_opened += 1
            except OSError as err:
                conn.close()
                if isinstance(err, ssl.SSLCertVerificationError):
                    raise HTTPConnectionError(
                        f"{origin[1]}:{origin[2]}: {err.verify_message}: the server's TLS "
                        "certificate is not trusted (a private CA can be named with "
                        "SSL_CERT_FILE)"
                    ) from err
                if attempt >= self.retries:
                    raise _transport_error(err, url) from err
                attempt = self._wait(attempt, url, err)
                continue
            try:
                conn.request(method, target, body=body() if body else None, headers=headers)
            except (OSError, http.client.HTTPException) as err:
                # The server may have answered early (a 413 before the body) and
                # closed: that answer is worth more than the broken pipe.
                early = self._early_answer(conn, url)
                if early is not None:
                    return early
                conn.close()
                if method not in _IDEMPOTENT or attempt >= self.retries:
                    raise _transport_error(err, url) from err
                attempt = self._wait(attempt, url, err)
                continue
            except BaseException:  # the body could not be made (a file that went away)
                conn.close()
                raise
            try:
                raw = conn.getresponse()
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                if method not in _IDEMPOTENT or attempt >= self.retries:
                    raise _transport_error(err, url) from err
                attempt = self._wait(attempt, url, err)
                continue
            return Response(raw, url, self._releaser(origin, conn))

    def retrying(self, url: str, attempt: Callable[[], T]) -> T:
        """``attempt()``, made again (with backoff) while an answer breaks off midway.

        ``request`` retries what fails before an answer begins; a GET whose
        body is cut short must be sent again whole, which only its caller can do.
        """
        tries = 0
        while True:
            try:
                return attempt()
            except HTTPBrokenAnswerError as err:
                if tries >= self.retries:
                    raise
                tries = self._wait(tries, url, err)

    def _early_answer(self, conn: http.client.HTTPConnection, url: str) -> Response | None:
        try:
            raw = conn.getresponse()
        except (OSError, http.client.HTTPException):
            return None
        return Response(raw, url, lambda _reusable: conn.close())

    def _wait(self, attempt: int, url: str, err: BaseException) -> int:
        delay = self.backoff * 2**attempt
        logger.info("%s: %s; trying again in %.2f s", url, err, delay)
        time.sleep(delay)
        return attempt + 1

    def _connection(self, origin: _Origin) -> http.client.HTTPConnection:
        with self._lock:
            if self._closed:
                raise ValueError("the transport is closed")
            idle = self._idle.get(origin, [])
            while idle:
                conn = idle.pop()
                if _still_open(conn):
                    return conn
                conn.close()
        scheme, host, port = origin
        if scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=ssl.create_default_context()
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)

    def _releaser(
        self, origin: _Origin, conn: http.client.HTTPConnection
    ) -> Callable[[bool], None]:
        def release(reusable: bool) -> None:
            with self._lock:
                if reusable and not self._closed and conn.sock is not None:
                    self._idle.setdefault(origin, []).append(conn)
                    return
            conn.close()

        return release

    def close(self) -> None:
        """Close every idle connection; requests made afterwards raise ``ValueError``."""
        with self._lock:
            self._closed = True
            _close_idle(self._idle)

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close_idle(idle: dict[_Origin, list[http.client.HTTPConnection]]) -> None:
    for connections in idle.values():
        for conn in connections:
            conn.close()
    idle.clear()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can take a request: the server has not closed it.

    An idle connection has nothing to read; if it has, it is the end of the
    stream (the server closed it) or stray bytes, and either way unusable.
    """
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
