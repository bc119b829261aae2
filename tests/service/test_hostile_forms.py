"""Multipart bodies built to exhaust the server, sent chunked to the real server.

Every byte of the body counts against the upload limit, whatever part it is
in; fields other than the file are bounded in number and size. Each attack
is answered with a 4xx JSON error long before its end, and leaves the
server's memory as it was.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

import kastore

from ._raw import connect, read_answer, rss_anon, send_until_answered
from ._server import Server

pytestmark = pytest.mark.e2e

MAX_UPLOAD_BYTES = 1_000_000
MiB = 1 << 20
BOUNDARY = b"hostile"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("hostile")
    running = Server(
        folder / "data",
        folder / "server.log",
        env={"KASTORE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES), "KASTORE_FSYNC": "false"},
    )
    try:
        running.start()
        yield running
    finally:
        running.close()


def _small_store() -> bytes:
    out = io.BytesIO()
    kastore.dump({"a": np.arange(10)}, out)
    return out.getvalue()


def _part(name: str, value: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"'
    if filename is not None:
        disposition += f'; filename="{filename}"'
    return b"--%s\r\nContent-Disposition: %s\r\n\r\n%s\r\n" % (
        BOUNDARY,
        disposition.encode(),
        value,
    )


def _file_part() -> bytes:
    return _part("file", _small_store(), "small.kas")


def _end() -> bytes:
    return b"--%s--\r\n" % BOUNDARY


def many_small_fields() -> Iterator[bytes]:
    """The file, then 200,000 small fields (about 20 MB)."""
    yield _file_part()
    for i in range(200_000):
        yield _part(f"f{i}", b"x" * 16)
    yield _end()


def many_name_fields() -> Iterator[bytes]:
    """The documented ``name`` field, 200,000 times."""
    yield _file_part()
    for _ in range(200_000):
        yield _part("name", b"sim")
    yield _end()


def huge_field() -> Iterator[bytes]:
    """A ``name`` field of 400 MB."""
    yield b'--%s\r\nContent-Disposition: form-data; name="name"\r\n\r\n' % BOUNDARY
    for _ in range(400):
        yield b"n" * MiB
    yield b"\r\n" + _file_part() + _end()


def huge_part_headers() -> Iterator[bytes]:
    """One part whose headers go on for 400 MB."""
    yield b'--%s\r\nContent-Disposition: form-data; name="file"\r\n' % BOUNDARY
    for _ in range(400):
        yield b"X-Padding: " + b"p" * (MiB - 13) + b"\r\n"
    yield b"\r\n" + _small_store() + b"\r\n" + _end()


def huge_preamble() -> Iterator[bytes]:
    """400 MB before the first boundary (RFC 2046 allows a preamble; this one is refused)."""
    for _ in range(400):
        yield b"preamble " * (MiB // 9)
    yield b"\r\n" + _file_part() + _end()


def huge_epilogue() -> Iterator[bytes]:
    """A whole, valid form, then 400 MB after its last boundary."""
    yield _file_part() + _end()
    for _ in range(400):
        yield b"epilogue " * (MiB // 9)


def _chunked(pieces: Iterator[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """``pieces`` as HTTP/1.1 chunks of about ``size`` bytes."""
    pending = bytearray()
    for piece in pieces:
        pending += piece
        while len(pending) >= size:
            yield b"%x\r\n%s\r\n" % (size, bytes(pending[:size]))
            del pending[:size]
    if pending:
        yield b"%x\r\n%s\r\n" % (len(pending), bytes(pending))
    yield b"0\r\n\r\n"


@pytest.mark.parametrize(
    ("attack", "status", "code"),
    [
        (many_small_fields, 415, "unsupported_upload"),
        (many_name_fields, 415, "unsupported_upload"),
        (huge_field, 415, "unsupported_upload"),
        (huge_part_headers, 400, "malformed_upload"),
        (huge_preamble, 400, "malformed_upload"),
        (huge_epilogue, 413, "upload_too_large"),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_a_hostile_form_is_refused_early_and_leaves_memory_as_it_was(
    server: Server, attack: Callable[[], Iterator[bytes]], status: int, code: str
) -> None:
    assert server.process is not None
    pid = server.process.pid
    port = server.client.base_url.port
    assert port is not None
    memory_before = rss_anon(pid)
    with connect(port) as sock:
        sock.sendall(
            b"POST /stores HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: multipart/form-data; boundary=%s\r\n\r\n" % BOUNDARY
        )
        sent = send_until_answered(sock, _chunked(attack()))
        answer = read_answer(sock)
    assert answer is not None, "the connection closed without an answer"
    assert answer.status == status, answer.body
    assert answer.json()["error"] == code
    # Answered once the limit was passed, not after the 20 to 400 MB.
    assert sent < MAX_UPLOAD_BYTES + 16 * MiB, sent
    assert rss_anon(pid) - memory_before < 20 * MiB
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert server.client.get("/stores").json()["total"] == 0


def test_the_form_overhead_is_bounded_for_a_file_within_the_limit(
    server: Server, tmp_path: Path
) -> None:
    """A file just under the limit, with ordinary form overhead, is still taken."""
    values = np.zeros(MAX_UPLOAD_BYTES - 200, dtype=np.uint8)
    path = tmp_path / "edge.kas"
    kastore.dump({"v": values}, path)
    assert path.stat().st_size <= MAX_UPLOAD_BYTES
    with path.open("rb") as file:
        answer = server.client.post(
            "/stores", files={"file": ("edge.kas", file)}, data={"name": "edge"}
        )
    assert answer.status_code == 201, answer.text
    assert server.client.delete("/stores/edge").status_code == 204
