"""What outlives a request: restarts, leftovers of a crash, downloads under way."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import create_app

from ._support import (
    TestClient,
    arrays_of,
    assert_serves,
    error_of,
    service_settings,
    sha256,
    stored_names,
    test_client,
    upload,
)
from .conftest import ClientFactory


def _restart(data_dir: Path) -> TestClient:
    return test_client(create_app(service_settings(data_dir)))


def test_restart_keeps_stores(
    data_dir: Path, tskit_file: Path, unicode_file: Path, testdata: Path
) -> None:
    island = testdata / "tskit" / "island_model_with_metadata.trees"
    with _restart(data_dir) as client:
        kept = upload(client, tskit_file, name="kept")
        upload(client, unicode_file, name="replaced")
        replaced = client.put("/stores/replaced", content=island.read_bytes()).json()
        upload(client, unicode_file, name="deleted")
        assert client.delete("/stores/deleted").status_code == 204

    with _restart(data_dir) as client:
        assert client.get("/stores").json()["stores"] == [kept, replaced]
        assert_serves(client, "kept", tskit_file.read_bytes())
        assert_serves(client, "replaced", island.read_bytes())
        assert error_of(client.get("/stores/deleted"), 404)["error"] == "store_not_found"
        # And the service takes new uploads.
        upload(client, unicode_file, name="after")
        assert stored_names(client) == ["after", "kept", "replaced"]


def _age(*paths: Path, seconds: float = 7200) -> None:
    """Make files look written ``seconds`` ago."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_start_removes_old_uploads_left_in_tmp(data_dir: Path, tskit_file: Path) -> None:
    """What a crash left goes once older than the grace period; newer uploads may be
    another process's, under way, and stay."""
    with _restart(data_dir) as client:
        upload(client, tskit_file, name="sim")
    tmp = data_dir / "tmp"
    (tmp / "tmpab12cd.upload").write_bytes(tskit_file.read_bytes()[:1000])
    (tmp / "tmpef34gh.upload").write_bytes(b"")
    (tmp / "stray" / "deeper").mkdir(parents=True)
    (tmp / "stray" / "deeper" / "x").write_bytes(b"x")
    _age(tmp / "tmpab12cd.upload", tmp / "tmpef34gh.upload", tmp / "stray")
    (tmp / "tmpnew000.upload").write_bytes(b"under way")
    with _restart(data_dir) as client:
        assert _wait_until(lambda: sorted(tmp.iterdir()) == [tmp / "tmpnew000.upload"])
        assert stored_names(client) == ["sim"]
        assert_serves(client, "sim", tskit_file.read_bytes())


def test_start_removes_old_blobs_no_store_points_at(
    data_dir: Path, tskit_file: Path, unicode_file: Path
) -> None:
    with _restart(data_dir) as client:
        upload(client, tskit_file, name="sim")
    orphan_sha = sha256(unicode_file.read_bytes())
    orphan = data_dir / "blobs" / orphan_sha[:2] / f"{orphan_sha}.kas"
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(unicode_file.read_bytes())
    _age(orphan)
    kept = data_dir / "blobs" / sha256(tskit_file.read_bytes())[:2]
    assert kept.is_dir()

    with _restart(data_dir) as client:
        assert _wait_until(lambda: not orphan.exists())
        assert [path.name for path in kept.iterdir()] == [f"{sha256(tskit_file.read_bytes())}.kas"]
        assert stored_names(client) == ["sim"]
        assert_serves(client, "sim", tskit_file.read_bytes())


def test_start_creates_a_missing_data_dir(tmp_path: Path, tskit_file: Path) -> None:
    data_dir = tmp_path / "not" / "yet" / "there"
    with _restart(data_dir) as client:
        assert client.get("/healthz").status_code == 200
        upload(client, tskit_file, name="sim")
    assert data_dir.is_dir()


# --- changing a store while it is downloaded -------------------------------------

Change = Callable[[TestClient, Path], httpx.Response]

CHANGES: dict[str, Change] = {
    "delete": lambda client, _: client.delete("/stores/big"),
    "replace": lambda client, other: client.put("/stores/big", content=other.read_bytes()),
}


@pytest.mark.parametrize("change", list(CHANGES))
@pytest.mark.parametrize("what", ["raw array", "json array", "file"], ids=["raw", "json", "file"])
def test_changing_a_store_does_not_break_a_download_under_way(
    client: TestClient, big_file: Path, unicode_file: Path, change: str, what: str
) -> None:
    upload(client, big_file, name="big")
    if what == "raw array":
        url, expected = "/stores/big/arrays/bytes", arrays_of(big_file)["bytes"].tobytes()
    elif what == "json array":
        url, expected = "/stores/big/arrays/ints?format=json", b""
    else:
        url, expected = "/stores/big/file", big_file.read_bytes()
    with client.stream("GET", url) as answer:
        assert answer.status_code == 200
        pieces = answer.iter_raw()
        received = [next(pieces)]
        assert CHANGES[change](client, unicode_file).status_code in (200, 204)
        after = client.get("/stores/big/arrays/bytes")
        assert after.status_code == 404, "the change is visible at once"
        received += list(pieces)
    body = b"".join(received)
    if what == "json array":
        values: Any = httpx.Response(200, content=body).json()["data"]
        assert values == arrays_of(big_file)["ints"].tolist()
    else:
        assert len(body) == len(expected)
        assert body == expected


# --- health -----------------------------------------------------------------------


def test_healthz_is_ok(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


@pytest.mark.local_storage  # looks at the data directory's files
def test_healthz_is_503_when_the_data_dir_is_unusable(
    client: TestClient, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer says what to check; only the log says where: clients need not know."""
    shutil.rmtree(data_dir / "tmp")
    with caplog.at_level("ERROR"):
        answer = client.get("/healthz")
    body = error_of(answer, 503)
    assert body["error"] == "unhealthy"
    assert "writable" in body["detail"]
    assert str(data_dir.parent) not in answer.text
    assert str(data_dir.resolve()) in caplog.text


def test_healthz_answers_head(client: TestClient) -> None:
    answer = client.head("/healthz")
    assert answer.status_code == 200
    assert answer.content == b""


def test_two_servers_share_one_data_dir(make_client: ClientFactory, tskit_file: Path) -> None:
    """No process owns the data directory: what one writes, the other reads at once."""
    first, second = make_client(), make_client()
    upload(first, tskit_file, name="shared")
    assert second.get("/stores/shared/file").content == tskit_file.read_bytes()
    assert second.put("/stores/shared", content=tskit_file.read_bytes()).status_code == 200
    assert first.delete("/stores/shared").status_code == 204
    assert second.get("/stores/shared/keys").status_code == 404
    assert second.get("/stores").json()["total"] == 0


def test_the_store_count_follows_every_change(
    data_dir: Path, tskit_file: Path, unicode_file: Path
) -> None:
    """``total`` in ``GET /stores``: new names count, replacements and refusals do not."""

    def total(client: TestClient) -> int:
        listing = client.get("/stores", params={"offset": 0, "limit": 1}).json()
        assert listing["total"] == len(stored_names(client))
        count: int = listing["total"]
        return count

    with _restart(data_dir) as client:
        upload(client, tskit_file, name="a")
        upload(client, unicode_file, name="b")
        assert total(client) == 2
        assert client.put("/stores/a", content=unicode_file.read_bytes()).status_code == 200
        assert client.put("/stores/c", content=tskit_file.read_bytes()).status_code == 201
        assert total(client) == 3
        assert client.put("/stores/d", content=b"not kastore").status_code == 422
        with tskit_file.open("rb") as file:
            taken = client.post("/stores", files={"file": file}, data={"name": "b"})
        assert taken.status_code == 409
        assert client.delete("/stores/b").status_code == 204
        assert client.delete("/stores/b").status_code == 404
        assert total(client) == 2
        assert client.get("/stores", params={"offset": 2}).json()["stores"] == []
    with _restart(data_dir) as client:
        assert total(client) == 2
