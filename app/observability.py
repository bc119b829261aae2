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
import os
import sys
import threading
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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

#: The buckets' ``le`` labels, as Prometheus writes them.
_BOUNDS = [*(repr(float(bound)) for bound in _BUCKETS), "+Inf"]

_UNMATCHED = "unmatched"


@dataclass(frozen=True, slots=True)
class _Stored:
    """The storage's figures at a scrape."""

    stores: int
    keys: int
    size: int
    cache_hits: int
    cache_misses: int


class _StorageCollector(Collector):
    """Series of the storage, from the figures taken at the scrape under way."""

    def __init__(self) -> None:
        self.stored: _Stored | None = None

    def collect(self) -> Iterator[Metric]:
        stored = self.stored
        if stored is None:  # not started yet, or stopped
            return
        yield GaugeMetricFamily("kastore_stores", "Stores (names) there are.", value=stored.stores)
        yield GaugeMetricFamily(
            "kastore_stored_keys", "Keys (arrays) in all stores together.", value=stored.keys
        )
        yield GaugeMetricFamily(
            "kastore_stored_bytes", "Bytes of all stores' files together.", value=stored.size
        )
        yield CounterMetricFamily(
            "kastore_open_store_cache_hits",
            "Lookups of a parsed file answered from the open-store cache.",
            value=stored.cache_hits,
        )
        yield CounterMetricFamily(
            "kastore_open_store_cache_misses",
            "Lookups of a parsed file that had to parse it.",
            value=stored.cache_misses,
        )


class _Series:
    """What one (route, method, status) has added up so far."""

    __slots__ = ("buckets", "count", "received", "seconds", "sent")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(_BUCKETS) + 1)  # the last one: beyond every bound
        self.received = 0
        self.sent = 0


class Metrics(Collector):
    """The service's Prometheus series, in a registry of their own (one per app).

    Requests are added up in plain numbers, on the event loop's thread (the
    only one that answers requests), and turned into series when scraped: a
    request costs a dictionary lookup and a few additions, not a lock per
    series.
    """

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, int], _Series] = {}
        self._accepted = 0
        self._refused: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)
        self._storage = _StorageCollector()
        self.registry.register(self._storage)

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
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        series.count += 1
        series.seconds += seconds
        series.buckets[bisect_left(_BUCKETS, seconds)] += 1
        series.received += received
        series.sent += sent
        if (method, route) in UPLOADS:
            if status < 300:
                self._accepted += 1
            else:
                reason = error or str(status)
                self._refused[reason] = self._refused.get(reason, 0) + 1

    def collect(self) -> Iterator[Metric]:
        """The request series as they stand (``Collector``)."""
        requests = CounterMetricFamily(
            "kastore_http_requests",
            "Requests answered, by route template, method and status.",
            labels=["route", "method", "status"],
        )
        by_route: dict[tuple[str, str], _Series] = {}
        for (route, method, status), series in sorted(self._series.items()):
            requests.add_metric([route, method, str(status)], series.count)
            total = by_route.setdefault((route, method), _Series())
            total.count += series.count
            total.seconds += series.seconds
            total.buckets = [a + b for a, b in zip(total.buckets, series.buckets, strict=True)]
            total.received += series.received
            total.sent += series.sent
        yield requests
        duration = HistogramMetricFamily(
            "kastore_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by route and method.",
            labels=["route", "method"],
        )
        received = CounterMetricFamily(
            "kastore_http_received_bytes",
            "Request body bytes received, by route and method.",
            labels=["route", "method"],
        )
        sent = CounterMetricFamily(
            "kastore_http_sent_bytes",
            "Answer body bytes sent, by route and method.",
            labels=["route", "method"],
        )
        for labels, total in by_route.items():
            cumulative = list(accumulate(total.buckets))
            duration.add_metric(
                list(labels), list(zip(_BOUNDS, cumulative, strict=True)), total.seconds
            )
            received.add_metric(list(labels), total.received)
            sent.add_metric(list(labels), total.sent)
        yield from (duration, received, sent)
        yield CounterMetricFamily("kastore_uploads_accepted", "Uploads stored.", self._accepted)
        refused = CounterMetricFamily(
            "kastore_uploads_refused",
            "Uploads refused, by reason (the error code answered).",
            labels=["reason"],
        )
        for reason, count in sorted(self._refused.items()):
            refused.add_metric([reason], count)
        yield refused

    async def exposition(self, storage: Storage | None) -> bytes:
        """Every series in the Prometheus text format.

        The storage's totals are summed by the index in a worker thread (a
        table of many stores takes a while); the rest is read here, on the
        event loop's thread, where requests are counted.
        """
        if storage is None:
            self._storage.stored = None
        else:
            totals = await storage.totals()
            stores, keys, size = totals.stores, totals.keys, totals.bytes
            self._storage.stored = _Stored(
                stores, keys, size, storage.cache_hits, storage.cache_misses
            )
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
            # makeRecord and handle, as Logger.info does, less its stack walk for the caller.
            record = access_log.makeRecord(
                access_log.name,
                logging.INFO,
                "",
                0,
                f"{method} {fields['path']} {status}",
                (),
                None,
                extra={"fields": fields},
            )
            access_log.handle(record)

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

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one conversion a second, not one a line
            stamp = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
            self._second, self._second_text = second, stamp
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
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


class _BatchWriter(logging.Handler):
    """Formats a record where it is logged, and writes lines in batches from a thread.

    The event loop never waits on the stream, and the writer wakes ten times a
    second rather than once a line (a thread woken per request would contend
    for the interpreter with the loop).
    """

    def __init__(self, stream: Any, *, interval: float = 0.1) -> None:
        super().__init__()
        self._stream = stream
        self._interval = interval
        self._lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)  # under the handler's lock (Handler.handle)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines = self._lines, []
        if lines:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.flush()
        super().close()


def configure_logging(level: str) -> Callable[[], None]:
    """JSON logs, written in batches: requests (``app.access``) to stdout, the rest to stderr.

    ``level`` is a uvicorn level name (``trace`` included). Returns a function
    that writes what is left and stops the writers.
    """
    import uvicorn.config  # registers the TRACE level name

    number = uvicorn.config.LOG_LEVELS[level]
    # Facts a record would gather and these lines never show (logging's own advice).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    formatter = JSONFormatter()
    writers = {"out": _BatchWriter(sys.stdout), "err": _BatchWriter(sys.stderr)}
    for writer in writers.values():
        writer.setFormatter(formatter)
    targets = {"app": writers["err"], "app.access": writers["out"], "uvicorn": writers["err"]}
    for name, writer in targets.items():
        log = logging.getLogger(name)
        log.handlers = [writer]
        log.setLevel(number)
        log.propagate = False

    def stop() -> None:
        for writer in writers.values():
            writer.close()

    return stop
