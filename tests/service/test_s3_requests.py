"""What the service asks of S3, seen on the wire: a recording proxy between it and the server.

The service (``python -m app`` on S3 and PostgreSQL) is given the proxy as its
S3 endpoint. The proxy forwards every request to the real S3 server (moto),
streaming bodies both ways, and records each request's method, path, ``Range``
header, and the bytes sent and returned. The tests then check what a user of
a large store relies on: an array costs one ranged GET of exactly its bytes
(never the whole object), streamed to the client as it arrives; a store's
header is read once, in a few small ranged GETs; an upload is streamed into
a multipart upload of bounded parts, and invisible until the index commits.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest

import kastore
from kastore._format import HEADER, HEADER_SIZE, ITEM_DESCRIPTOR, ITEM_SIZES
from tests._s3 import bucket_contents

from ._server import Server

pytestmark = pytest.mark.e2e

MiB = 1 << 20
#: Bytes copied at a time by the proxy, each way.
PROXY_PIECE = 64 << 10
#: The largest multipart upload part an upload may send (S3's least part is 5 MiB).
MAX_PART = 8 * MiB
#: How long a test waits for something that must happen, before calling it a hang.
HANG = 60.0
#: Bytes of the big array the proxy lets through before holding the rest back.
HELD_AFTER = 4 * MiB


# The recording proxy


@dataclass
class Seen:
    """One request as the proxy saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    range: str | None
    sent: int = 0
    returned: int = 0
    status: int = 0


@dataclass
class Hold:
    """Hold back a GET's answer after ``after`` bytes until ``release`` is set."""

    path: str
    after: int
    release: threading.Event = field(default_factory=threading.Event)
    #: Set when the proxy waited for ``release`` and was released (not timed out).
    released: bool = False


class Proxy(http.server.ThreadingHTTPServer):
    """An HTTP/1.1 proxy to ``upstream`` recording every request in ``seen``."""

    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "", parts.port or 80)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        #: Called with each request before it is forwarded (in the proxy's thread).
        self.on_request: Callable[[Seen], None] | None = None
        self.hold: Hold | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)

    def take(self) -> list[Seen]:
        """The requests seen since the last ``take``."""
        with self.lock:
            seen, self.seen = self.seen, []
            return seen


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        parts = urlsplit(self.path)
        seen = Seen(self.command, parts.path, parse_qs(parts.query), self.headers.get("range"))
        self.server.record(seen)
        if self.server.on_request is not None:
            self.server.on_request(seen)
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=HANG)
        try:
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                upstream.putheader(name, value)
            upstream.endheaders()
            seen.sent = self._send_body(upstream)
            answer = upstream.getresponse()
            seen.status = answer.status
            self._answer(answer, seen)
        finally:
            upstream.close()

    def _send_body(self, upstream: http.client.HTTPConnection) -> int:
        """Copy the request body upstream as it arrives (plain or chunked); its size."""
        sent = 0
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)  # with its CRLF
                upstream.send(f"{size:x}\r\n".encode() + chunk)
                sent += size
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    upstream.send(b"\r\n")
                    return sent
        left = int(self.headers.get("content-length", 0))
        while left:
            piece = self.rfile.read(min(left, PROXY_PIECE))
            if not piece:
                raise ConnectionError("the request body ended early")
            upstream.send(piece)
            left -= len(piece)
            sent += len(piece)
        return sent

    def _answer(self, answer: http.client.HTTPResponse, seen: Seen) -> None:
        """Copy the answer back as it arrives; re-chunk it if it came chunked."""
        self.send_response_only(answer.status, answer.reason)
        chunked = answer.getheader("content-length") is None and self.command != "HEAD"
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection"):
                self.send_header(name, value)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        hold = self.server.hold
        held = hold is not None and hold.path == seen.path and self.command == "GET"
        while piece := answer.read1(PROXY_PIECE):
            if held and hold is not None and seen.returned >= hold.after:
                hold.released = hold.release.wait(HANG)
                held = False
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
            self.wfile.flush()
            seen.returned += len(piece)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[Proxy]:
    server = Proxy(s3_endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(HANG)


@dataclass(frozen=True)
class Storage:
    """Where the service under test keeps its stores."""

    endpoint: str
    bucket: str
    prefix: str
    env: dict[str, str]

    def path(self, key: str) -> str:
        """The path of a request for ``key`` (path-style: /bucket/prefix/key)."""
        return f"/{self.bucket}/{self.prefix}/{key}"

    def blob_path(self, content: bytes) -> str:
        digest = hashlib.sha256(content).hexdigest()
        return self.path(f"blobs/{digest[:2]}/{digest}.kas")

    def objects(self, under: str) -> list[str]:
        """Keys under ``prefix/under``, straight from the S3 server (not through the proxy)."""
        contents = bucket_contents(self.endpoint, self.bucket, f"{self.prefix}/{under}")
        return contents.objects + contents.uploads


@pytest.fixture
def storage(proxy: Proxy, s3_endpoint: str, s3_blob_url: str, postgres_db_url: str) -> Storage:
    bucket, _, prefix = s3_blob_url.removeprefix("s3://").partition("/")
    env = {
        "KASTORE_BLOB_URL": s3_blob_url,
        "KASTORE_S3_ENDPOINT_URL": proxy.url,
        "KASTORE_INDEX_URL": postgres_db_url,
    }
    return Storage(s3_endpoint, bucket, prefix, env)


@contextlib.contextmanager
def serving(tmp_path: Path, storage: Storage, label: str) -> Iterator[Server]:
    """``python -m app`` on ``storage``, its S3 requests going through the proxy."""
    server = Server(tmp_path / f"{label}-data", tmp_path / f"{label}.log", env=storage.env)
    server.client.headers["accept-encoding"] = "identity"
    server.client.timeout = httpx.Timeout(HANG)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server(tmp_path: Path, storage: Storage) -> Iterator[Server]:
    with serving(tmp_path, storage, "server") as started:
        yield started


# Files and their layout


def big_store(path: Path) -> bytes:
    """A file with a 20 MiB array (``big``) among small ones; its bytes."""
    rng = np.random.default_rng(11)
    kastore.dump(
        {
            "big": rng.integers(0, 1 << 32, 5 * MiB, dtype=np.uint32),
            "small": np.arange(1000, dtype=np.int32),
            "z/last": rng.random(300),
        },
        path,
    )
    return path.read_bytes()


def spans(content: bytes) -> dict[str, tuple[int, int]]:
    """Where each array of a kastore file lies: ``[start, end)`` by key, from its descriptors."""
    n = HEADER.unpack_from(content)[3]
    table = np.frombuffer(content, ITEM_DESCRIPTOR, n, offset=HEADER_SIZE)
    found = {}
    for item in table:
        key_start, key_len = int(item["key_start"]), int(item["key_len"])
        start = int(item["array_start"])
        end = start + int(item["array_len"]) * int(ITEM_SIZES[int(item["type"])])
        found[content[key_start : key_start + key_len].decode()] = (start, end)
    assert found, "no arrays in the file"
    return found


def head_end(content: bytes) -> tuple[int, int]:
    """Where the descriptors end and where the keys end."""
    n = HEADER.unpack_from(content)[3]
    table = np.frombuffer(content, ITEM_DESCRIPTOR, n, offset=HEADER_SIZE)
    end = HEADER_SIZE + n * ITEM_DESCRIPTOR.itemsize
    return end, int((table["key_start"] + table["key_len"]).max())


def byte_range(start: int, end: int) -> str:
    """The ``Range`` header of bytes ``[start, end)``."""
    return f"bytes={start}-{end - 1}"


def store(server: Server, proxy: Proxy, name: str, content: bytes) -> None:
    """PUT ``content`` as ``name``, then forget the requests it made."""
    answer = server.client.put(f"/stores/{name}", content=content)
    assert answer.status_code == 201, answer.text
    proxy.take()


def of_blob(seen: list[Seen], storage: Storage, content: bytes) -> list[Seen]:
    """The requests for the blob of ``content``."""
    return [request for request in seen if request.path == storage.blob_path(content)]


# The tests


def test_an_array_is_one_ranged_get_of_its_bytes_streamed(
    server: Server, proxy: Proxy, storage: Storage, tmp_path: Path
) -> None:
    content = big_store(tmp_path / "big.kas")
    store(server, proxy, "big", content)
    assert server.client.get("/stores/big/keys").status_code == 200  # the header, cached
    proxy.take()
    start, end = spans(content)["big"]
    # The proxy holds the array back after its first bytes: they reach the client
    # only if the service sends them on as they arrive.
    hold = proxy.hold = Hold(storage.blob_path(content), after=HELD_AFTER)
    received = bytearray()
    with server.client.stream("GET", "/stores/big/arrays/big") as answer:
        assert answer.status_code == 200
        assert int(answer.headers["content-length"]) == end - start
        for piece in answer.iter_bytes():
            received += piece
            if len(received) >= MiB:
                hold.release.set()
    assert hold.released, "the first bytes did not reach the client before the rest"
    assert received == content[start:end]
    gets = proxy.take()
    assert [(r.method, r.path, r.range) for r in gets] == [
        ("GET", storage.blob_path(content), byte_range(start, end))
    ]
    assert gets[0].returned == end - start


@pytest.mark.parametrize(
    ("query", "headers", "elements"),
    [
        ({"start": 100_000, "stop": 300_000}, {}, (100_000, 300_000)),
        ({"start": 5 * MiB - 7}, {}, (5 * MiB - 7, 5 * MiB)),
        ({}, {"range": "bytes=400000-1199999"}, (100_000, 300_000)),
        ({}, {"range": "bytes=-10"}, None),
    ],
    ids=["slice", "slice-to-end", "range", "suffix-range"],
)
def test_a_slice_or_a_range_is_one_smaller_ranged_get(
    server: Server,
    proxy: Proxy,
    storage: Storage,
    tmp_path: Path,
    query: dict[str, int],
    headers: dict[str, str],
    elements: tuple[int, int] | None,
) -> None:
    content = big_store(tmp_path / "big.kas")
    store(server, proxy, "big", content)
    start, end = spans(content)["big"]
    assert server.client.get("/stores/big/keys").status_code == 200
    proxy.take()
    if elements is not None:
        first, last = (start + 4 * i for i in elements)
    else:  # the last ten bytes
        first, last = end - 10, end
    answer = server.client.get("/stores/big/arrays/big", params=query, headers=headers)
    assert answer.status_code == (206 if headers else 200), answer.text
    assert answer.content == content[first:last]
    seen = proxy.take()
    assert [(r.method, r.path, r.range) for r in seen] == [
        ("GET", storage.blob_path(content), byte_range(first, last))
    ]
    assert seen[0].returned == last - first


def test_a_store_is_opened_by_a_few_ranged_gets_once(
    server: Server, proxy: Proxy, storage: Storage, tmp_path: Path
) -> None:
    content = big_store(tmp_path / "big.kas")
    store(server, proxy, "big", content)
    descriptors_end, keys_end = head_end(content)
    first = server.client.get("/stores/big/keys")
    assert first.status_code == 200
    assert [entry["key"] for entry in first.json()["keys"]] == ["big", "small", "z/last"]
    opening = of_blob(proxy.take(), storage, content)
    assert [(r.method, r.range) for r in opening] == [
        ("GET", byte_range(0, HEADER_SIZE)),
        ("GET", byte_range(HEADER_SIZE, descriptors_end)),
        ("GET", byte_range(descriptors_end, keys_end)),
    ]
    assert sum(r.returned for r in opening) == keys_end
    again = server.client.get("/stores/big/keys")
    assert again.content == first.content
    small = server.client.get("/stores/big/arrays/small")
    assert small.content == np.arange(1000, dtype=np.int32).tobytes()
    start, end = spans(content)["small"]
    # The header is not read again: the array alone is.
    assert [(r.method, r.range) for r in of_blob(proxy.take(), storage, content)] == [
        ("GET", byte_range(start, end))
    ]


def test_another_process_opens_a_store_by_its_size_and_a_few_ranged_gets(
    server: Server, proxy: Proxy, storage: Storage, tmp_path: Path
) -> None:
    content = big_store(tmp_path / "big.kas")
    store(server, proxy, "big", content)
    descriptors_end, keys_end = head_end(content)
    with serving(tmp_path, storage, "other") as other:
        proxy.take()  # its start
        for _ in range(2):
            assert other.client.get("/stores/big/keys").status_code == 200
        assert [(r.method, r.range) for r in of_blob(proxy.take(), storage, content)] == [
            ("HEAD", None),
            ("GET", byte_range(0, HEADER_SIZE)),
            ("GET", byte_range(HEADER_SIZE, descriptors_end)),
            ("GET", byte_range(descriptors_end, keys_end)),
        ]


@pytest.mark.parametrize(
    ("headers", "status", "wanted"),
    [
        ({"range": "bytes=1000-2000999"}, 206, (1000, 2001000)),
        ({"range": "bytes=-100"}, 206, (-100, None)),
        ({}, 200, (0, None)),
    ],
    ids=["range", "suffix-range", "whole"],
)
def test_the_file_is_one_get_passing_the_range_through(
    server: Server,
    proxy: Proxy,
    storage: Storage,
    tmp_path: Path,
    headers: dict[str, str],
    status: int,
    wanted: tuple[int, int | None],
) -> None:
    content = big_store(tmp_path / "big.kas")
    store(server, proxy, "big", content)
    start, stop, _ = slice(*wanted).indices(len(content))
    answer = server.client.get("/stores/big/file", headers=headers)
    assert answer.status_code == status, answer.text
    assert answer.content == content[start:stop]
    seen = proxy.take()
    # One GET, ranged even for the whole file: the service asks for what it knows it needs.
    assert [(r.method, r.path, r.range) for r in seen] == [
        ("GET", storage.blob_path(content), byte_range(start, stop))
    ]
    assert seen[0].returned == stop - start


def test_an_upload_streams_in_parts_and_shows_when_the_index_commits(
    server: Server, proxy: Proxy, storage: Storage, tmp_path: Path
) -> None:
    path = tmp_path / "large.kas"
    rng = np.random.default_rng(5)
    kastore.dump({"data": rng.integers(0, 256, 40 * MiB, dtype=np.uint8), "n": np.arange(9)}, path)
    content = path.read_bytes()
    assert len(content) > 40 * MiB
    first_part = threading.Event()
    # What another client sees at each step the service takes on S3, in the proxy's thread.
    looks: list[tuple[str, int, list[str]]] = []

    lock = threading.Lock()  # parts go up two at a time

    def look(seen: Seen) -> None:
        with lock:
            step = None
            if "partNumber" in seen.query and not first_part.is_set():
                step = "first part"
            elif seen.method == "PUT" and "/blobs/" in seen.path:
                step = "copy to blobs/"
            if step is not None:
                url = f"{server.client.base_url}/stores/large"
                looks.append(
                    (step, httpx.get(url, timeout=HANG).status_code, storage.objects("blobs/"))
                )
                first_part.set()

    proxy.on_request = look
    sent_before_first_part = None

    def body() -> Iterator[bytes]:
        nonlocal sent_before_first_part
        for at in range(0, len(content), MiB):
            if sent_before_first_part is None and at >= len(content) // 2:
                # Half the file is sent: the service must have sent a part on by now.
                assert first_part.wait(HANG), "no part reached S3 with half the file sent"
                sent_before_first_part = at
            yield content[at : at + MiB]

    answer = server.client.put("/stores/large", content=body())
    assert answer.status_code == 201, answer.text
    assert sent_before_first_part is not None
    assert looks == [("first part", 404, []), ("copy to blobs/", 404, [])]

    seen = proxy.take()
    parts = [r for r in seen if r.method == "PUT" and "partNumber" in r.query]
    assert len(parts) >= len(content) // MAX_PART
    assert all(0 < r.sent <= MAX_PART for r in parts), [r.sent for r in parts]
    assert sum(r.sent for r in parts) == len(content)
    # If the staged object is read back (to validate it), it is for its header alone, by
    # ranges; the blob is not read at all.
    reads = [r for r in seen if r.method == "GET" and r.path.startswith(storage.path(""))]
    assert all(r.range is not None and "/tmp/" in r.path for r in reads), reads
    assert sum(r.returned for r in reads) <= head_end(content)[1]
    assert server.client.get("/stores/large").json()["size"] == len(content)
    digest = hashlib.sha256(content).hexdigest()
    assert storage.objects("blobs/") == [f"{storage.prefix}/blobs/{digest[:2]}/{digest}.kas"]
    assert storage.objects("tmp/") == []
