"""Clients that send too much, too slowly, or nothing, against the real server.

Each is cut off by a limit or a timeout (short ones here, so the tests are
quick), with the JSON error body where there is a request to answer, and
without stalling anyone else or leaving anything behind.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ._raw import (
    connect,
    open_descriptors,
    read_answer,
    rss_anon,
    send_until_answered,
    wait_closed,
)
from ._server import Server

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
KEEP_ALIVE_TIMEOUT = 1.0
MAX_HEADER_BYTES = 16 * 1024
#: What a timeout may overrun by on a busy machine.
SLACK = 2.0
MiB = 1 << 20

ENV = {
    "KASTORE_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
    "KASTORE_BODY_TIMEOUT": str(BODY_TIMEOUT),
    "KASTORE_KEEP_ALIVE_TIMEOUT": str(KEEP_ALIVE_TIMEOUT),
    "KASTORE_MAX_HEADER_BYTES": str(MAX_HEADER_BYTES),
    "KASTORE_FSYNC": "false",
}


def _start(folder: Path, **env: str) -> Server:
    server = Server(folder / "data", folder / "server.log", env={**ENV, **env})
    server.start()
    return server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = _start(tmp_path_factory.mktemp("slow"))
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        yield started
    finally:
        for running in started:
            running.close()


def _port(server: Server) -> int:
    port = server.client.base_url.port
    assert port is not None
    return port


def _pid(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def _tmp_files(server: Server) -> list[Path]:
    return list((server.data_dir / "tmp").iterdir())


def _wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        time.sleep(0.02)
    return callable(condition) and bool(condition())


class _HealthProbe(threading.Thread):
    """Times ``GET /healthz`` over and over until stopped."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.base_url = server.client.base_url
        self.times: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10.0) as client:
            while not self._stop_event.is_set():
                start = time.monotonic()
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError as err:
                    self.failures.append(repr(err))
                    continue
                self.times.append(time.monotonic() - start)
                if status != 200:
                    self.failures.append(f"status {status}")
                time.sleep(0.01)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=15)


def test_headers_just_over_the_limit_get_431(server: Server) -> None:
    with connect(_port(server)) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\n"
        )
        answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 431
        assert answer.json()["error"] == "headers_too_large"
        assert "KASTORE_MAX_HEADER_BYTES" in answer.json()["detail"]
        assert wait_closed(sock, timeout=SLACK) < SLACK


def _one_huge_header(size: int) -> Iterator[bytes]:
    yield b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Huge: "
    for _ in range(size // MiB):
        yield b"a" * MiB


def _many_small_headers(size: int) -> Iterator[bytes]:
    yield b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
    line = b"X-Small: abcdefghijklmnopqrstuvwxyz\r\n"
    block = line * (MiB // len(line))
    for _ in range(size // len(block)):
        yield block


@pytest.mark.parametrize(
    ("attack", "size"),
    [(_one_huge_header, 128 * MiB), (_many_small_headers, 50 * MiB)],
    ids=["one 128 MiB header", "50 MB of small headers"],
)
def test_huge_headers_are_cut_off_fast_without_stalling_others(
    server: Server, attack: object, size: int
) -> None:
    assert callable(attack)
    memory_before = rss_anon(_pid(server))
    probe = _HealthProbe(server)
    probe.start()
    try:
        time.sleep(0.2)
        start = time.monotonic()
        with connect(_port(server)) as sock:
            sent = send_until_answered(sock, attack(size))
            answer = read_answer(sock, timeout=SLACK)
        elapsed = time.monotonic() - start
        time.sleep(0.2)
    finally:
        probe.stop()
    assert sent < 8 * MiB, "the server kept reading"
    assert answer is None or answer.status == 431
    assert elapsed < SLACK
    assert probe.times and not probe.failures, probe.failures
    assert max(probe.times) < 1.0, max(probe.times)
    assert rss_anon(_pid(server)) - memory_before < 20 * MiB


def test_slowloris_is_closed_after_the_header_timeout(server: Server) -> None:
    with connect(_port(server)) as sock:
        start = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answer = None
        while time.monotonic() - start < HEADER_TIMEOUT + SLACK:
            try:
                sock.sendall(b"X-Drip: 1\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            sock.settimeout(0.01)
            try:
                if sock.recv(1, 2):  # MSG_PEEK: the answer is there
                    answer = read_answer(sock)
                    break
            except TimeoutError:
                pass
        elapsed = time.monotonic() - start
    assert answer is not None, "the connection was never answered"
    assert answer.status == 408
    assert answer.json()["error"] == "request_timeout"
    assert HEADER_TIMEOUT * 0.9 < elapsed < HEADER_TIMEOUT + SLACK


def test_a_connection_that_sends_nothing_is_closed(server: Server) -> None:
    with connect(_port(server)) as sock:
        elapsed = wait_closed(sock, timeout=HEADER_TIMEOUT + SLACK)
    assert HEADER_TIMEOUT * 0.9 < elapsed < HEADER_TIMEOUT + SLACK


def test_an_idle_kept_alive_connection_is_closed(server: Server) -> None:
    with connect(_port(server)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_answer(sock)
        assert answer is not None and answer.status == 200
        elapsed = wait_closed(sock, timeout=KEEP_ALIVE_TIMEOUT + SLACK)
    assert KEEP_ALIVE_TIMEOUT * 0.9 < elapsed < KEEP_ALIVE_TIMEOUT + SLACK


@pytest.mark.parametrize("form", ["raw", "multipart"])
def test_a_stalled_upload_is_dropped_with_its_file_and_descriptors(
    server: Server, form: str
) -> None:
    pid = _pid(server)
    assert _tmp_files(server) == []
    descriptors = open_descriptors(pid)
    with connect(_port(server)) as sock:
        if form == "raw":
            head = b"PUT /stores/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            start = b"\x89KAS"
        else:
            head = (
                b"POST /stores HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n"
                b"Content-Type: multipart/form-data; boundary=xyz\r\n\r\n"
            )
            start = (
                b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="s.kas"\r\n\r\n'
            )
        sock.sendall(head + start + bytes(200_000))
        assert _wait_for(lambda: _tmp_files(server), 5), "the upload never began"
        answer = read_answer(sock, timeout=BODY_TIMEOUT + SLACK)
        assert answer is not None
        assert answer.status == 408
        assert answer.json()["error"] == "request_timeout"
        assert "KASTORE_BODY_TIMEOUT" in answer.json()["detail"]
        assert answer.headers.get("connection") == "close"
    assert _wait_for(lambda: _tmp_files(server) == [], SLACK)
    assert _wait_for(lambda: open_descriptors(pid) <= descriptors, SLACK), (
        open_descriptors(pid),
        descriptors,
    )
    assert server.client.get("/stores/stalled").status_code == 404


def test_sigterm_exits_while_uploads_are_stalled(servers: list[Server], tmp_path: Path) -> None:
    running = _start(tmp_path, KASTORE_BODY_TIMEOUT="300", KASTORE_SHUTDOWN_TIMEOUT="1")
    servers.append(running)
    sockets = [connect(_port(running)) for _ in range(3)]
    try:
        for i, sock in enumerate(sockets):
            sock.sendall(
                f"PUT /stores/s{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n".encode()
                + b"\x89KAS"
                + bytes(100_000)
            )
        assert _wait_for(lambda: len(_tmp_files(running)) == 3, 5), "the uploads never began"
        start = time.monotonic()
        status = running.stop(signal.SIGTERM)
        elapsed = time.monotonic() - start
    finally:
        for sock in sockets:
            sock.close()
    assert status == 0, running.output()
    assert elapsed < 1.0 + 3 * SLACK, elapsed
    assert _tmp_files(running) == [], running.output()
    assert "Application shutdown complete" in running.output()


def test_connections_beyond_the_limit_get_503(servers: list[Server], tmp_path: Path) -> None:
    running = _start(tmp_path, KASTORE_MAX_CONNECTIONS="3", KASTORE_HEADER_TIMEOUT="30")
    servers.append(running)
    held = [connect(_port(running)) for _ in range(3)]
    try:
        time.sleep(0.2)
        with connect(_port(running)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 503
        assert answer.json()["error"] == "busy"
        assert "KASTORE_MAX_CONNECTIONS" in answer.json()["detail"]
    finally:
        for sock in held:
            sock.close()
    assert _wait_for(lambda: running.client.get("/healthz").status_code == 200, SLACK)


def test_connections_are_bounded_by_the_open_files_limit(
    servers: list[Server], tmp_path: Path
) -> None:
    """With few descriptors, the server serves fewer connections, rather than fail at random."""
    running = Server(
        tmp_path / "data",
        tmp_path / "server.log",
        env={**ENV, "KASTORE_OPEN_STORES": "8", "KASTORE_HEADER_TIMEOUT": "30"},
        open_files=100,
    )
    servers.append(running)
    running.start()
    expected = (100 - 64 - 8) // 3
    warning = f"serving at most {expected} connections"
    assert _wait_for(lambda: warning in running.output(), SLACK), running.output()
    held = [connect(_port(running)) for _ in range(expected)]
    try:
        time.sleep(0.2)
        with connect(_port(running)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = read_answer(sock)
        assert answer is not None
        assert answer.status == 503
        assert answer.json()["error"] == "busy"
        assert f"limit of {expected} connections" in answer.json()["detail"]
    finally:
        for sock in held:
            sock.close()
    assert _wait_for(lambda: running.client.get("/healthz").status_code == 200, SLACK)
