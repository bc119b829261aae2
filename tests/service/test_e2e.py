"""The real server: ``python -m app`` in a subprocess, used over HTTP with httpx.

Every server started here is killed when its fixture ends, whatever happened;
every wait has a timeout, so a server that hangs fails the test instead.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from ._server import Server
from ._support import read_json, shared_files

pytestmark = pytest.mark.e2e

MAX_UPLOAD_BYTES = 5_000_000
SERVER_ENV = {"KASTORE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES)}
MALFORMED = shared_files("reference/malformed", ".kas")
TSKIT = shared_files("tskit", ".trees")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server shared by this module's tests; killed at the end whatever happens."""
    folder = tmp_path_factory.mktemp("e2e")
    running = Server(folder / "data", folder / "server.log", env=SERVER_ENV)
    try:
        running.start()
        yield running
    finally:
        running.close()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    """A client of its own per test, so a connection one test broke cannot fail the next."""
    with httpx.Client(base_url=server.client.base_url, timeout=10.0) as client:
        yield client


def _upload(http: httpx.Client, path: Path, name: str | None = None) -> dict[str, Any]:
    data = {} if name is None else {"name": name}
    with path.open("rb") as file:
        answer = http.post("/stores", files={"file": (path.name, file)}, data=data)
    assert answer.status_code == 201, answer.text
    info: dict[str, Any] = answer.json()
    return info


def _names(http: httpx.Client) -> list[str]:
    return [store["name"] for store in http.get("/stores").json()["stores"]]


def _check_tskit_store(http: httpx.Client, name: str, manifest: dict[str, Any]) -> None:
    """Every array of the store downloads raw with the manifest's dtype, length and sha256."""
    listing = http.get(f"/stores/{name}/keys").json()["keys"]
    assert {entry["key"] for entry in listing} == set(manifest)
    for entry in listing:
        expected = manifest[entry["key"]]
        answer = http.get(entry["url"])
        assert answer.status_code == 200, answer.text
        assert hashlib.sha256(answer.content).hexdigest() == expected["sha256"], entry["key"]
        assert answer.headers["x-kastore-dtype"] == expected["dtype"]
        assert answer.headers["x-kastore-length"] == str(expected["length"])
        assert (entry["dtype"], entry["length"]) == (expected["dtype"], expected["length"])


@pytest.mark.parametrize("filename", TSKIT)
def test_tskit_arrays_download_as_in_the_manifest(
    http: httpx.Client, testdata: Path, filename: str
) -> None:
    path = testdata / "tskit" / filename
    manifest = read_json(testdata / "tskit" / "manifest.json")[filename]["keys"]
    info = _upload(http, path)
    assert info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["num_keys"] == len(manifest)
    _check_tskit_store(http, info["name"], manifest)
    whole = http.get(info["file_url"])
    assert whole.status_code == 200
    assert whole.content == path.read_bytes()


def test_connection_stays_usable_after_a_file_download(http: httpx.Client, testdata: Path) -> None:
    """Clients reuse connections: the answer after a download must arrive as well."""
    path = testdata / "tskit" / "single_population.trees"
    _upload(http, path, name="kept-alive")
    for _ in range(2):
        assert http.get("/stores/kept-alive/file").content == path.read_bytes()
        assert http.get("/stores/kept-alive").status_code == 200


def test_unicode_keys_through_every_kind_of_url(http: httpx.Client, testdata: Path) -> None:
    path = testdata / "written-by-reference" / "unicode_keys.kas"
    manifest = read_json(testdata / "written-by-reference" / "manifest.json")["unicode_keys"]
    _upload(http, path, name="unicode")
    listing = http.get("/stores/unicode/keys").json()["keys"]
    assert {entry["key"] for entry in listing} == set(manifest["keys"])
    for entry in listing:
        key = entry["key"]
        for url in [
            entry["url"],
            "/stores/unicode/arrays/" + quote(key, safe=""),
            "/stores/unicode/arrays/" + quote(key, safe="/"),
        ]:
            answer = http.get(url)
            assert answer.status_code == 200, (key, url, answer.text)
            digest = hashlib.sha256(answer.content).hexdigest()
            assert digest == manifest["keys"][key]["sha256"], (key, url)


@pytest.mark.parametrize("filename", MALFORMED)
def test_malformed_file_is_refused(http: httpx.Client, testdata: Path, filename: str) -> None:
    path = testdata / "reference" / "malformed" / filename
    with path.open("rb") as file:
        answer = http.post("/stores", files={"file": (filename, file)}, data={"name": "broken"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_kastore_file"
    assert "broken" not in _names(http)
    assert http.get("/stores/broken").status_code == 404


def _chunks(size: int, piece: int = 256 * 1024) -> Iterator[bytes]:
    for start in range(0, size, piece):
        yield b"\0" * min(piece, size - start)


@pytest.mark.parametrize(
    "how", ["put with length", "put chunked", "post with length", "post chunked"]
)
def test_oversized_upload_is_413(http: httpx.Client, server: Server, how: str) -> None:
    size = MAX_UPLOAD_BYTES + 1_000_000
    if how == "put with length":
        answer = http.put("/stores/huge", content=b"\0" * size)
    elif how == "put chunked":
        answer = http.put("/stores/huge", content=_chunks(size))
    else:
        boundary = "e2eboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="huge.kas"\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body: Any = (
            head + b"\0" * size + tail
            if how == "post with length"
            else iter([head, *_chunks(size), tail])
        )
        answer = http.post(
            "/stores",
            content=body,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    assert answer.status_code == 413, answer.text
    assert str(MAX_UPLOAD_BYTES) in answer.json()["detail"]
    assert "huge" not in _names(http)
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert http.get("/healthz").status_code == 200


def test_a_client_that_hangs_up_mid_upload_leaves_nothing(
    http: httpx.Client, server: Server
) -> None:
    """A dropped connection is a crash from the upload's point of view: no trace may stay."""
    before = http.get("/stores").json()["total"]
    with socket.create_connection((http.base_url.host, http.base_url.port)) as sock:
        sock.sendall(
            b"PUT /stores/half HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            + b"\x89KAS"
            + bytes(100_000)
        )
        deadline = time.monotonic() + 5
        while not list((server.data_dir / "tmp").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.02)  # the upload has begun once its temporary file exists
        assert list((server.data_dir / "tmp").iterdir()), "the upload never began"
    deadline = time.monotonic() + 10
    while list((server.data_dir / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list((server.data_dir / "tmp").iterdir()) == []
    assert http.get("/stores/half").status_code == 404
    assert http.get("/stores").json()["total"] == before


def test_delete_makes_everything_404(http: httpx.Client, testdata: Path) -> None:
    info = _upload(http, testdata / "tskit" / "single_population.trees", name="doomed")
    assert http.delete("/stores/doomed").status_code == 204
    array_url = f"{info['url']}/arrays/edges/left"
    for url in [info["url"], info["keys_url"], info["file_url"], array_url]:
        answer = http.get(url)
        assert answer.status_code == 404, url
        assert "'doomed'" in answer.json()["detail"]
    assert "doomed" not in _names(http)


def test_docs_are_served(http: httpx.Client) -> None:
    for page in ["/docs", "/redoc", "/openapi.json"]:
        assert http.get(page).status_code == 200, page


def test_server_logged_no_errors(server: Server) -> None:
    """Runs last in this module: nothing above made the server log an error."""
    log = server.output()
    assert "Traceback" not in log, log
    assert "ERROR" not in log, log


# --- restarts ---------------------------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers a test starts, all on ``tmp_path/data``; every one is killed at the end."""
    started: list[Server] = []
    try:
        yield started
    finally:
        for running in started:
            running.close()


def _start(servers: list[Server], tmp_path: Path) -> Server:
    running = Server(tmp_path / "data", tmp_path / f"server-{len(servers)}.log", env=SERVER_ENV)
    servers.append(running)
    running.start()
    return running


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda sig: sig.name)
def test_restart_keeps_the_stores(
    servers: list[Server], tmp_path: Path, testdata: Path, sig: signal.Signals
) -> None:
    manifest = read_json(testdata / "tskit" / "manifest.json")
    first = _start(servers, tmp_path)
    paths = sorted((testdata / "tskit").glob("*.trees"))
    assert paths, f"no .trees file in {testdata / 'tskit'}"
    infos = [_upload(first.client, path) for path in paths]
    _upload(first.client, testdata / "written-by-reference" / "unicode_keys.kas", name="gone")
    assert first.client.delete("/stores/gone").status_code == 204

    status = first.stop(sig)
    assert status in (0, -sig), first.output()
    assert "Application shutdown complete" in first.output()

    second = _start(servers, tmp_path)
    assert second.client.get("/stores").json()["stores"] == infos
    for info in infos:
        _check_tskit_store(second.client, info["name"], manifest[f"{info['name']}.trees"]["keys"])
    assert second.client.get("/stores/gone").status_code == 404
    assert list((tmp_path / "data" / "tmp").iterdir()) == []


def test_root_path_and_forwarded_headers_behind_a_proxy(
    servers: list[Server], tmp_path: Path, testdata: Path
) -> None:
    """``KASTORE_ROOT_PATH``: the proxy strips the prefix, the URLs answered carry it."""
    running = Server(
        tmp_path / "data",
        tmp_path / "server.log",
        env={"KASTORE_ROOT_PATH": "/kastore", "KASTORE_FORWARDED_ALLOW_IPS": "127.0.0.1"},
    )
    servers.append(running)
    running.start()
    info = _upload(running.client, testdata / "tskit" / "single_population.trees", name="sim")
    assert info["url"] == "/kastore/stores/sim"
    assert info["keys_url"] == "/kastore/stores/sim/keys"
    keys = running.client.get("/stores/sim/keys").json()["keys"]
    assert keys and all(entry["url"].startswith("/kastore/stores/sim/arrays/") for entry in keys)
    # The proxy is trusted: the client it names is the one the request log names.
    assert running.client.get("/healthz", headers={"x-forwarded-for": "203.0.113.7"}).is_success
    assert "/kastore/openapi.json" in running.client.get("/docs").text
    deadline = time.monotonic() + 5
    while "203.0.113.7" not in running.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "203.0.113.7" in running.output()
