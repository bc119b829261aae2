"""How ``python -m app`` serves: uvicorn's options, and the limits uvicorn lacks.

uvicorn's httptools parser accepts headers of any size and waits forever for
them, so the connections it serves get a guard (``guarded_protocol``):

- the request line and headers together may hold at most ``max_header_bytes``
  (431 and the connection closed beyond); counted as the bytes arrive, before
  the parser has gathered any header whole;
- they must arrive within ``header_timeout`` of the request's first byte, or of
  connecting for a connection that sends nothing (408 and closed);
- at most ``max_connections`` connections and requests are served at once;
  requests beyond get 503, with the JSON error body every error has.

Idle kept-alive connections close after ``keep_alive_timeout``; a stalled
upload body is the upload's business (``uploads``, ``body_timeout``); and
shutdown cuts requests still running after ``shutdown_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
from typing import Any

import httptools
import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from .config import Settings
from .errors import BusyError, HeadersTooLargeError, RequestTimeoutError, ServiceError, error_body

__all__ = [
    "ENVIRONMENT_PROTOCOL",
    "connection_limit",
    "guarded_protocol",
    "raise_open_files_limit",
    "uvicorn_options",
]


#: Descriptors kept for the process itself: the index, logs, the listening socket...
_OWN_DESCRIPTORS = 64
#: What one connection may hold at once: its socket, an upload's file, a mapped file.
_DESCRIPTORS_PER_CONNECTION = 3

logger = logging.getLogger(__name__)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for these settings."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "http": guarded_protocol(settings, max_connections=connection_limit(settings)),
        "root_path": settings.root_path,
        "proxy_headers": True,
        "forwarded_allow_ips": settings.forwarded_allow_ips,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
    }


def raise_open_files_limit() -> None:
    """Allow as many open files as the system lets this process have.

    Each connection, upload and open store holds a descriptor; the usual soft
    limit of 1,024 is lower than what the default limits can reach.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 16 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):  # keep the soft limit we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))


def connection_limit(settings: Settings) -> int:
    """``KASTORE_MAX_CONNECTIONS``, lowered if the open-files limit could not serve that many.

    Beyond the limit a request gets a 503 (``busy``); without it, the process
    would run out of descriptors and fail requests at random.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    spare = soft - _OWN_DESCRIPTORS - settings.open_stores
    fitting = max(1, spare // _DESCRIPTORS_PER_CONNECTION)
    if fitting < settings.max_connections:
        logger.warning(
            "serving at most %d connections, not KASTORE_MAX_CONNECTIONS=%d: this process may "
            "open %d files (ulimit -n), and each connection can hold %d; raise the limit, or "
            "lower KASTORE_OPEN_STORES",
            fitting,
            settings.max_connections,
            soft,
            _DESCRIPTORS_PER_CONNECTION,
        )
        return fitting
    return settings.max_connections


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a refused request."""


def _raw_answer(error: ServiceError) -> bytes:
    """A whole HTTP/1.1 answer with the JSON error body, closing the connection."""
    body = orjson.dumps(error_body(error.code, error.detail))
    head = [
        STATUS_LINE[error.status_code],
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n",
    ]
    return b"".join([*head, body])


def guarded_protocol(
    settings: Settings, *, max_connections: int | None = None
) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the limits of ``settings`` (see the module).

    ``max_connections`` replaces ``settings.max_connections`` (see ``connection_limit``).
    """
    max_header_bytes = settings.max_header_bytes
    header_timeout = settings.header_timeout
    connections_limit = max_connections or settings.max_connections
    too_large = _raw_answer(HeadersTooLargeError(max_header_bytes))
    too_slow = _raw_answer(RequestTimeoutError.for_headers(header_timeout))
    busy_body = orjson.dumps(error_body(BusyError.code, BusyError(connections_limit).detail))

    async def busy(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(busy_body)),
            (b"connection", b"close"),
            (b"retry-after", b"1"),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": busy_body})

    class GuardedProtocol(HttpToolsProtocol):
        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self.limit_concurrency = None  # checked here, to answer in JSON
            self._app = self.app
            self._in_head = True
            self._head_bytes = 0
            self._head_exact = 0
            self._refused = False
            self._head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._start_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                self._head_bytes += len(data)
                self._start_head_timer()
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._unsupported_upgrade_warning()
            except httptools.HttpParserError:
                if not self._refused:  # refused already, with its own answer
                    self.logger.warning("Invalid HTTP request received.")
                    self.send_400_response("Invalid HTTP request received.")
                return
            # Headers not yet whole: httptools gathers them out of sight, so the
            # bytes that came are what counts.
            if self._in_head and self._head_bytes > max_header_bytes:
                self._refuse(too_large)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._head_exact = 0

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)
            super().on_header(name, value)

        def _count_head(self, size: int) -> None:
            self._head_exact += size
            if self._head_exact > max_header_bytes:
                self._refuse(too_large)
                raise _Refused  # stops the parser

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._stop_head_timer()
            over = len(self.connections) > connections_limit or len(self.tasks) >= connections_limit
            self.app = busy if over else self._app
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True
            self._head_bytes = 0

        def _start_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(header_timeout, self._head_timed_out)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                # A connection that never sent a byte has no request to answer.
                self._refuse(too_slow if self._head_bytes else b"")

        def _refuse(self, answer: bytes) -> None:
            self._stop_head_timer()
            self._in_head = False
            self._refused = True  # nothing more is read from this connection
            if answer:
                self.transport.write(answer)
            self.transport.close()

    return GuardedProtocol


#: The guarded protocol for the environment's settings, as an import string for
#: uvicorn's worker processes (a class made by ``guarded_protocol`` cannot be
#: sent to them; each makes its own from this name).
ENVIRONMENT_PROTOCOL = "app.server:EnvironmentProtocol"


def __getattr__(name: str) -> Any:
    if name == "EnvironmentProtocol":
        from .config import get_settings

        settings = get_settings()
        made = guarded_protocol(settings, max_connections=connection_limit(settings))
        globals()[name] = made
        return made
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
