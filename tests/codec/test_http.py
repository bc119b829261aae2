"""``load(url)``: stores read over HTTP by Range requests, lazily, from any server that has them."""

from __future__ import annotations

import gc
import logging
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trustme

import kastore
from kastore import cli
from kastore._http import READ_AHEAD, HTTPFile
from kastore._transport import (
    HTTPConnectionError,
    HTTPFileChangedError,
    HTTPNotFoundError,
    HTTPPermissionError,
    HTTPTimeoutError,
)

from .._httpd import DroppingProxy, RangeServer
from ._support import assert_store_equals

#: HTTP is read by the Python engine; the C engine's URL test says so itself.
pytestmark = pytest.mark.python_only

#: 100 MB in 10 arrays, and a few small ones: what a remote simulation file holds.
BIG = {f"x{i}": np.arange(1_250_000, dtype=np.float64) + i for i in range(10)} | {
    f"small/{i}": np.arange(i, dtype=np.int32) for i in range(20)
}


@pytest.fixture(scope="module")
def big() -> bytes:
    return kastore.dumps(BIG)


@pytest.fixture
def server() -> Iterator[RangeServer]:
    with RangeServer() as server:
        yield server


def test_loading_100_mb_then_one_array_reads_under_1_percent_more_than_the_array(
    server: RangeServer, big: bytes
) -> None:
    url = server.serve("/sim.kas", big)
    assert len(big) > 100_000_000
    store = kastore.load(url)
    assert list(store) == sorted(BIG)
    assert [store.info(key).size for key in store] == [BIG[key].nbytes for key in sorted(BIG)]
    assert len(server.state.requests) == 1, "header, descriptors and keys in one request"
    assert 0 < server.state.bytes_sent < len(big) / 100

    x3 = store["x3"]
    assert np.array_equal(x3, BIG["x3"]) and not x3.flags.writeable
    assert len(server.state.requests) == 2, "one array, one request"
    assert server.state.bytes_sent < len(big) / 100 + BIG["x3"].nbytes
    assert store["x3"] is x3 and len(server.state.requests) == 2
    assert server.state.connections == 1, "the connection is kept alive"


def test_ranges_are_single_ranges_from_where_the_data_is(server: RangeServer, big: bytes) -> None:
    store = kastore.load(server.serve("/sim.kas", big))
    store["x9"]
    ranges = [request.headers["Range"] for request in server.state.requests]
    start = len(big) - BIG["x9"].nbytes
    assert ranges == [f"bytes=0-{READ_AHEAD - 1}", f"bytes={start}-{len(big) - 1}"]


def test_small_arrays_come_from_the_first_request(server: RangeServer, big: bytes) -> None:
    store = kastore.load(server.serve("/sim.kas", big))
    for i in range(20):
        assert np.array_equal(store[f"small/{i}"], BIG[f"small/{i}"])
    assert len(server.state.requests) == 1


def test_many_keys_take_at_most_three_requests(server: RangeServer) -> None:
    data = {f"key/{i:05d}": np.full(3, i, dtype=np.int64) for i in range(5000)}
    store = kastore.load(server.serve("/many.kas", kastore.dumps(data)))
    assert len(store) == 5000
    assert len(server.state.requests) <= 3
    assert_store_equals(store, data)


def test_everything_reads_back(server: RangeServer, big: bytes) -> None:
    with kastore.load(server.serve("/sim.kas", big)) as store:
        assert_store_equals(store, BIG)


def test_read_all_reads_the_whole_store(server: RangeServer, big: bytes) -> None:
    store = kastore.load(server.serve("/sim.kas", big), read_all=True)
    assert server.state.bytes_sent >= len(big)
    assert np.array_equal(store["x9"], BIG["x9"])


def test_the_c_engine_reads_a_url_whole(server: RangeServer, big: bytes) -> None:
    from kastore import _cengine

    if not _cengine.available():
        pytest.skip("built without the C engine")
    store = kastore.load(server.serve("/sim.kas", big), engine="c")
    assert len(big) <= server.state.bytes_sent <= len(big) + READ_AHEAD
    assert_store_equals(store, BIG)


def test_a_server_that_ignores_range_is_read_whole(
    server: RangeServer, caplog: pytest.LogCaptureFixture
) -> None:
    data = {"a": np.arange(10), "b": np.linspace(0, 1, 7)}
    server.state.ranges = False
    with caplog.at_level(logging.WARNING, logger="kastore"):
        store = kastore.load(server.serve("/plain.kas", kastore.dumps(data)))
    assert_store_equals(store, data)
    assert len(server.state.requests) == 1
    assert "does not answer Range requests" in caplog.text


def test_an_empty_file_is_the_end_of_the_data(server: RangeServer) -> None:
    with pytest.raises(EOFError):
        kastore.load(server.serve("/empty.kas", b""))


def test_a_file_that_is_not_a_store_is_refused(server: RangeServer, big: bytes) -> None:
    with pytest.raises(kastore.FileFormatError, match="magic"):
        kastore.load(server.serve("/text.kas", b"hello " * 100))
    with pytest.raises(kastore.FileFormatError, match="truncated"):
        kastore.load(server.serve("/cut.kas", big[: len(big) // 2]))


def test_missing_and_forbidden_files_are_os_errors(server: RangeServer) -> None:
    with pytest.raises(FileNotFoundError) as missing:
        kastore.load(server.url("/absent.kas"))
    assert isinstance(missing.value, HTTPNotFoundError) and missing.value.status == 404
    assert "/absent.kas" in str(missing.value)
    server.state.statuses["/secret.kas"] = 403
    with pytest.raises(PermissionError) as forbidden:
        kastore.load(server.url("/secret.kas"))
    assert isinstance(forbidden.value, HTTPPermissionError)
    assert "status 403 for /secret.kas" in str(forbidden.value), "the server's detail"


def test_redirects_are_followed_once(server: RangeServer, big: bytes) -> None:
    server.serve("/sim.kas", big)
    server.state.redirects["/latest.kas"] = (302, "/sim.kas")
    store = kastore.load(server.url("/latest.kas"))
    store["x1"]
    store["x2"]
    paths = [request.path for request in server.state.requests]
    assert paths == ["/latest.kas", "/sim.kas", "/sim.kas", "/sim.kas"]


def test_credentials_stay_with_their_origin(server: RangeServer, big: bytes) -> None:
    with RangeServer() as other:
        url = other.serve("/sim.kas", big)
        server.state.redirects["/moved.kas"] = (307, url)
        file = HTTPFile(server.url("/moved.kas"), headers={"Authorization": "Bearer k"})
        kastore.load(file)["x0"]
        file.close()
    assert server.state.requests[0].headers["Authorization"] == "Bearer k"
    assert other.state.requests and all(
        "Authorization" not in request.headers for request in other.state.requests
    )


def test_a_dropped_connection_is_tried_again(server: RangeServer, big: bytes) -> None:
    server.state.hang_ups = 2
    store = kastore.load(server.serve("/sim.kas", big))
    assert np.array_equal(store["x5"], BIG["x5"])
    assert len(server.state.requests) == 4


def test_a_server_that_keeps_dropping_gives_a_connection_error(server: RangeServer) -> None:
    server.state.hang_ups = 10
    with pytest.raises(ConnectionError) as err:
        HTTPFile(server.serve("/sim.kas", b"x" * 100), retries=2)
    assert isinstance(err.value, HTTPConnectionError)
    assert len(server.state.requests) == 3


def test_a_server_that_does_not_answer_times_out(server: RangeServer) -> None:
    host, port = server.base_url.removeprefix("http://").split(":")
    with DroppingProxy((host, int(port)), drop=5, hold=True) as proxy:
        with pytest.raises(TimeoutError) as err:
            HTTPFile(f"{proxy.base_url}/sim.kas", timeout=0.2, retries=1)
        assert isinstance(err.value, HTTPTimeoutError)
        assert proxy.accepted == 2


def test_a_file_replaced_while_open_is_noticed(server: RangeServer, big: bytes) -> None:
    store = kastore.load(server.serve("/sim.kas", big))
    server.serve("/sim.kas", kastore.dumps({**BIG, "x0": BIG["x0"] * 2}))
    with pytest.raises(HTTPFileChangedError, match="load it again"):
        store["x4"]


def test_the_file_object_seeks_and_reads_like_a_file(server: RangeServer) -> None:
    data = bytes(range(256)) * 1000
    with HTTPFile(server.serve("/bytes", data), read_ahead=100) as file:
        assert file.seekable() and file.readable() and file.size == len(data)
        assert file.read(10) == data[:10]
        assert file.seek(-5, 2) == len(data) - 5 and file.read() == data[-5:]
        assert file.read(1) == b""
        file.seek(1000)
        buffer = bytearray(300)
        assert file.readinto(buffer) == 300 and buffer == data[1000:1300]
        assert file.tell() == 1300
        with pytest.raises(ValueError):
            file.seek(-1)
    assert file.closed


@pytest.mark.parametrize("flags", [["ls"], ["ls", "-l"], ["ls", "-lH"]])
def test_the_command_line_lists_a_url_like_a_file(
    server: RangeServer,
    big: bytes,
    tmp_path: Path,
    flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "sim.kas"
    path.write_bytes(big)
    assert cli.main([*flags, str(path)]) == 0
    expected = capsys.readouterr().out
    assert cli.main([*flags, server.serve("/sim.kas", big)]) == 0
    assert capsys.readouterr().out == expected and "x9" in expected
    assert server.state.bytes_sent < len(big) / 100


def test_the_command_line_reports_a_missing_url(
    server: RangeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.url("/absent.kas")
    assert cli.main(["ls", url]) == 1
    assert capsys.readouterr().err.startswith(f"kastore: {url}: HTTP 404")


def test_an_answer_cut_off_midway_is_asked_for_again(server: RangeServer, big: bytes) -> None:
    store = kastore.load(server.serve("/sim.kas", big))
    server.state.cut_offs = 1
    assert np.array_equal(store["x5"], BIG["x5"])
    assert len(server.state.requests) == 3


@pytest.fixture(scope="module")
def authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_server(authority: trustme.CA) -> Iterator[RangeServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    with RangeServer(tls=context) as server:
        yield server


def test_https_with_a_trusted_certificate(
    tls_server: RangeServer,
    big: bytes,
    authority: trustme.CA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    url = tls_server.serve("/sim.kas", big)
    assert url.startswith("https://127.0.0.1:")
    store = kastore.load(url)
    assert np.array_equal(store["x2"], BIG["x2"])
    assert len(tls_server.state.requests) == 2 and tls_server.state.connections == 1


def test_https_with_an_untrusted_certificate_is_refused_at_once(
    tls_server: RangeServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "none.pem"
    trustme.CA().cert_pem.write_to_path(str(empty))  # trusts another authority only
    monkeypatch.setenv("SSL_CERT_FILE", str(empty))
    with pytest.raises(HTTPConnectionError, match="certificate is not trusted"):
        kastore.load(tls_server.serve("/sim.kas", b"x" * 100))
    assert tls_server.state.requests == []


def test_a_store_dropped_without_close_leaves_no_connection_open(
    server: RangeServer, big: bytes
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = kastore.load(server.serve("/sim.kas", big))
        store["x1"]
        del store
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
