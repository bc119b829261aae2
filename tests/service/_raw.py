"""Raw HTTP/1.1 over sockets, for clients no HTTP library would be: slow, huge, stalled.

Also what the server process holds, read from ``/proc``: anonymous memory and
open descriptors.
"""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Answer",
    "connect",
    "open_descriptors",
    "read_answer",
    "rss_anon",
    "send_until_answered",
    "wait_closed",
]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def connect(port: int, *, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def read_answer(sock: socket.socket, *, timeout: float = 10.0) -> Answer | None:
    """Read one answer (``Content-Length`` bodies only); None if the connection just closed."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        piece = _recv(sock, deadline)
        if not piece:
            return None
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines)
    }
    size = int(headers.get("content-length", "0"))
    while len(body) < size:
        piece = _recv(sock, deadline)
        if not piece:
            break
        body += piece
    return Answer(int(status_line.split()[1]), headers, body)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("no answer in time")
    sock.settimeout(left)
    try:
        return sock.recv(1 << 16)
    except ConnectionResetError:
        return b""


def wait_closed(sock: socket.socket, *, timeout: float) -> float:
    """Read until the server closes the connection; return how long that took."""
    start = time.monotonic()
    deadline = start + timeout
    while _recv(sock, deadline):
        pass
    return time.monotonic() - start


def send_until_answered(sock: socket.socket, pieces: Iterable[bytes]) -> int:
    """Send ``pieces`` until the server answers or hangs up; return the bytes sent."""
    sent = 0
    for piece in pieces:
        readable, _, _ = select.select([sock], [], [], 0)
        if readable:
            break
        try:
            sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            break
        sent += len(piece)
    return sent


def rss_anon(pid: int) -> int:
    """The process's anonymous resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
