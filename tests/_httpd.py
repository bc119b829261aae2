"""Small real servers for the HTTP tests: a static file server that answers Range, and a proxy.

``RangeServer(tls=context)`` speaks HTTPS.

``RangeServer`` serves bytes from memory over HTTP/1.1 with keep-alive, as nginx
or S3 would: ``Range`` (one range), ``ETag``, redirects and error statuses, and
it counts what it is asked and what it sends. It can also ignore ``Range``
(as some servers do), hang up on the first requests it gets, or cut the first
answers off halfway.

``DroppingProxy`` forwards TCP connections to another server, closing the first
few it accepts at once (a server restarting, a flaky network), or holding them
without an answer (a server that hangs).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["DroppingProxy", "RangeServer", "Request"]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class _State:
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    ranges: bool = True
    etags: bool = True
    hang_ups: int = 0
    cut_offs: int = 0
    requests: list[Request] = field(default_factory=list)
    bytes_sent: int = 0
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.state.lock:
            self.server.state.connections += 1

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, *, body: bool) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(Request(self.command, self.path, dict(self.headers.items())))
            hang_up = state.hang_ups > 0
            state.hang_ups -= hang_up
        if hang_up:
            self.close_connection = True
            return
        if self.path in state.redirects:
            status, location = state.redirects[self.path]
            self._send(status, b"", {"Location": location}, body=body)
            return
        if self.path in state.statuses:
            status = state.statuses[self.path]
            message = f'{{"error": "e{status}", "detail": "status {status} for {self.path}"}}'
            self._send(status, message.encode(), {"Content-Type": "application/json"}, body=body)
            return
        data = state.files.get(self.path)
        if data is None:
            self._send(404, b"not found\n", {"Content-Type": "text/plain"}, body=body)
            return
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if state.etags:
            headers["ETag"] = f'"{hash(data) & 0xFFFFFFFF:08x}-{len(data)}"'
        match = _RANGE.fullmatch(self.headers.get("Range", "")) if state.ranges else None
        if match is None or match.groups() == ("", ""):
            self._send(200, data, headers, body=body)
            return
        first_text, last_text = match.groups()
        size = len(data)
        if first_text == "":
            first, last = max(size - int(last_text), 0), size - 1
        else:
            first = int(first_text)
            last = min(int(last_text), size - 1) if last_text else size - 1
        if first >= size:
            self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"}, body=body)
            return
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        self._send(206, data[first : last + 1], headers, body=body)

    def _send(self, status: int, data: bytes, headers: dict[str, str], *, body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with self.server.state.lock:
            cut = body and bool(data) and self.server.state.cut_offs > 0
            self.server.state.cut_offs -= cut
        if cut:
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        if body and data:
            # Counted before they are sent: the client may have them before this thread
            # runs again.
            with self.server.state.lock:
                self.server.state.bytes_sent += len(data)
            view = memoryview(data)
            for start in range(0, len(view), 1 << 20):
                self.wfile.write(view[start : start + (1 << 20)])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-answer (as the tests make clients do) is no error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class RangeServer:
    """A static file server on 127.0.0.1 that answers Range requests; use it in ``with``."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State()
        self._scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def state(self) -> _State:
        return self._server.state

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def serve(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; return its URL."""
        self.state.files[path] = data
        return self.url(path)

    def reset_counts(self) -> None:
        with self.state.lock:
            self.state.requests.clear()
            self.state.bytes_sent = 0
            self.state.connections = 0

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class DroppingProxy:
    """Forwards connections to ``target`` (host, port); the first ``drop`` are closed at once.

    With ``hold=True`` the first ``drop`` connections are kept open without a
    byte of answer instead, until the proxy stops; with ``cut_after=N`` they are
    forwarded, but closed after N bytes of answer (an answer cut off midway).
    """

    def __init__(
        self,
        target: tuple[str, int],
        *,
        drop: int = 0,
        hold: bool = False,
        cut_after: int | None = None,
    ) -> None:
        self.target = target
        self.drop = drop
        self.hold = hold
        self.cut_after = cut_after
        self.accepted = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue  # to see whether it is time to stop
            except OSError:
                return
            client.settimeout(None)
            self.accepted += 1
            limit = None
            if self.accepted <= self.drop:
                if self.hold:
                    self._held.append(client)
                    continue
                if self.cut_after is None:
                    client.close()
                    continue
                limit = self.cut_after
            upstream = socket.create_connection(self.target)
            for source, sink, most in ((client, upstream, None), (upstream, client, limit)):
                threading.Thread(target=_pipe, args=(source, sink, most), daemon=True).start()

    def __enter__(self) -> DroppingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._listener.close()
        for held in self._held:
            held.close()


def _pipe(source: socket.socket, sink: socket.socket, limit: int | None) -> None:
    try:
        for chunk in _chunks(source):
            if limit is not None:
                chunk = chunk[:limit]
                limit -= len(chunk)
            sink.sendall(chunk)
            if limit == 0:
                break
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _chunks(sock: socket.socket) -> Iterator[bytes]:
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return
        yield chunk
