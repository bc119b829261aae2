"""What operators see: a request id, Prometheus metrics and one JSON log line per request.

``ObservabilityMiddleware`` wraps every HTTP request once:

- the request id is the client's ``X-Request-ID`` when it is a sane token (up to
  128 visible ASCII characters), or a new random one; the answer carries it back;
- metrics (``Metrics``) count requests by route template, method and status,
  time them, and add up the bytes received and sent; uploads are counted as
  accepted or refused by reason (the error code answered);
- the ``app.access`` logger gets one line per request: method, path, route,
  status, bytes, duration, request id and client, and the error code if any.

Log records are formatted as JSON (``JSONFormatter``) and written by a thread
of their own (``configure_logging``), so a slow log reader never stalls the
event loop. The series stored on disk (stores, keys, bytes) and the open-store
cache's hits and misses are read from the storage when ``/metrics`` is asked.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match, Route

from .storage import Storage

__all__ = [
    "METRICS_MEDIA_TYPE",
    "JSONFormatter",
    "Metrics",
    "ObservabilityMiddleware",
    "configure_logging",
]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]

METRICS_MEDIA_TYPE = "text/plain; version=0.0.4; charset=utf-8"

access_log = logging.getLogger("app.access")

#: The operations that take an upload, as (method, route template).
UPLOADS = frozenset({("POST", "/stores"), ("PUT", "/stores/{name}")})

#: Latency buckets, in seconds: from a cached key listing to a large upload.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_UNMATCHED = "unmatched"


class _StorageCollector(Collector):
    """Series read from the storage when scraped: what is stored, and the cache's use."""

    def __init__(self, storage: Callable[[], Storage | None]) -> None:
        self._storage = storage

    def collect(self) -> Iterator[Metric]:
        storage = self._storage()
        if storage is None:  # not started yet, or stopped
            return
        stores, keys, size = storage.totals()
        yield GaugeMetricFamily("kastore_stores", "Stores (names) there are.", value=stores)
        yield GaugeMetricFamily(
            "kastore_stored_keys", "Keys (arrays) in all stores together.", value=keys
        )
        yield GaugeMetricFamily(
            "kastore_stored_bytes", "Bytes of all stores' files together.", value=size
        )
        yield CounterMetricFamily(
            "kastore_open_store_cache_hits",
            "Lookups of a parsed file answered from the open-store cache.",
            value=storage.cache_hits,
        )
        yield CounterMetricFamily(
            "kastore_open_store_cache_misses",
            "Lookups of a parsed file that had to parse it.",
            value=storage.cache_misses,
        )


class Metrics:
    """The service's Prometheus series, in a registry of their own (one per app)."""

    def __init__(self, storage: Callable[[], Storage | None]) -> None:
        # The *_created series: noise for counters that start with the process.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("route", "method")
        self._requests = Counter(
            "kastore_http_requests",
            "Requests answered, by route template, method and status.",
            [*labels, "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "kastore_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route and method.",
            labels,
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._received = Counter(
            "kastore_http_received_bytes",
            "Request body bytes received, by route and method.",
            labels,
            registry=self.registry,
        )
        self._sent = Counter(
            "kastore_http_sent_bytes",
            "Answer body bytes sent, by route and method.",
            labels,
            registry=self.registry,
        )
        self._accepted = Counter(
            "kastore_uploads_accepted", "Uploads stored.", registry=self.registry
        )
        self._refused = Counter(
            "kastore_uploads_refused",
            "Uploads refused, by reason (the error code answered).",
            ["reason"],
            registry=self.registry,
        )
        self.registry.register(_StorageCollector(storage))
        # The labelled children of each (route, method, status), made once.
        self._children: dict[tuple[str, str, int], tuple[Any, Any, Any, Any]] = {}

    def observe(
        self,
        route: str,
        method: str,
        status: int,
        *,
        seconds: float,
        received: int,
        sent: int,
        error: str | None,
    ) -> None:
        """Count one answered request."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self._requests.labels(route, method, str(status)),
                self._duration.labels(route, method),
                self._received.labels(route, method),
                self._sent.labels(route, method),
            )
        requests, duration, received_bytes, sent_bytes = children
        requests.inc()
        duration.observe(seconds)
        if received:
            received_bytes.inc(received)
        if sent:
            sent_bytes.inc(sent)
        if (method, route) in UPLOADS:
            if status < 300:
                self._accepted.inc()
            else:
                self._refused.labels(error or str(status)).inc()

    def exposition(self) -> bytes:
        """Every series in the Prometheus text format."""
        return generate_latest(self.registry)


def _request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"x-request-id":
            if 0 < len(value) <= 128 and all(33 <= byte <= 126 for byte in value):
                return value
            break
    return os.urandom(16).hex().encode()


class ObservabilityMiddleware:
    """Request id, metrics and the access log line, for every HTTP request (see the module)."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics | None, routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = [route for route in routes if isinstance(route, Route)]

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = _request_id(scope["headers"])
        status = 0
        received = 0
        sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return message

        async def marking_send(message: Message) -> None:
            nonlocal status, sent
            kind = message["type"]
            if kind == "http.response.body":
                sent += len(message.get("body", b""))
            elif kind == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        try:
            await self.app(scope, counting_receive, marking_send)
        except BaseException:
            status = status or 500
            raise
        finally:
            self._record(scope, status, start, received, sent, request_id)

    def _record(
        self, scope: Message, status: int, start: float, received: int, sent: int, rid: bytes
    ) -> None:
        seconds = time.perf_counter() - start
        metrics = self.metrics
        logging_on = access_log.isEnabledFor(logging.INFO)
        if metrics is None and not logging_on:
            return
        route = self._route_of(scope)
        state = scope.get("state")
        error = state.get("error_code") if state else None
        method: str = scope["method"]
        if metrics is not None:
            metrics.observe(
                route, method, status, seconds=seconds, received=received, sent=sent, error=error
            )
        if logging_on:
            client = scope.get("client")
            fields: dict[str, Any] = {
                "method": method,
                "path": scope["path"],
                "route": route,
                "status": status,
                "bytes_sent": sent,
                "bytes_received": received,
                "duration_ms": round(seconds * 1000, 3),
                "request_id": rid.decode("ascii"),
                "client": client[0] if client else None,
            }
            if error is not None:
                fields["error"] = error
            access_log.info("%s %s %d", method, fields["path"], status, extra={"fields": fields})

    def _route_of(self, scope: Message) -> str:
        """The route template that answered, or the one that would have (for refusals)."""
        route = scope.get("route")
        if route is None:
            # Refused before routing (no key, say): find the route it was meant for.
            for candidate in self.routes:
                if candidate.matches(scope)[0] is Match.FULL:
                    route = candidate
                    break
        path = getattr(route, "path_format", None) or getattr(route, "path", None)
        return path if isinstance(path, str) and path else _UNMATCHED


# --- logs -----------------------------------------------------------------------------


class JSONFormatter(logging.Formatter):
    """A log record as one JSON object: time, level, logger, message, and its fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _DeferredQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread as they are: formatting happens there too."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


def configure_logging(level: str) -> Callable[[], None]:
    """JSON logs written by a thread: requests (``app.access``) to stdout, the rest to stderr.

    ``level`` is a uvicorn level name (``trace`` included). Returns a function
    that writes what is left and stops the thread.
    """
    import uvicorn.config  # registers the TRACE level name

    number = uvicorn.config.LOG_LEVELS[level]
    formatter = JSONFormatter()
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.name == "app.access")
    err = logging.StreamHandler(sys.stderr)
    err.addFilter(lambda record: record.name != "app.access")
    for stream in (out, err):
        stream.setFormatter(formatter)
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, out, err, respect_handler_level=False)
    queued = _DeferredQueueHandler(records)
    for name in ("app", "uvicorn"):
        log = logging.getLogger(name)
        log.handlers = [queued]
        log.setLevel(number)
        log.propagate = False
    listener.start()
    return listener.stop
