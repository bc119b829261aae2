"""CORS: off by default; KASTORE_CORS_ORIGINS lets pages of those origins read and send keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser

import kastore
from app.main import CORS_EXPOSE_HEADERS
from app.security import hash_key

from ._browser import PageServer
from ._server import Server
from ._support import TestClient, error_of, upload
from .conftest import ClientFactory

PAGE = "https://page.example"
ARRAY = "/stores/sim/arrays/edges/left"


@pytest.fixture
def cors(make_client: ClientFactory, tskit_file: Path) -> TestClient:
    client = make_client(cors_origins=[PAGE])
    upload(client, tskit_file, name="sim")
    return client


def test_cors_is_off_by_default(client: TestClient, tskit_file: Path) -> None:
    upload(client, tskit_file, name="sim")
    answer = client.get(ARRAY, headers={"origin": PAGE})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    preflight = client.options(
        ARRAY, headers={"origin": PAGE, "access-control-request-method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_a_preflight_allows_the_listed_headers(cors: TestClient) -> None:
    requested = "range, if-none-match, if-range, authorization, x-api-key"
    answer = cors.options(
        ARRAY,
        headers={
            "origin": PAGE,
            "access-control-request-method": "GET",
            "access-control-request-headers": requested,
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["access-control-allow-origin"] == PAGE
    allowed = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"range", "if-none-match", "if-range", "authorization", "x-api-key"} <= allowed
    assert "PUT" in answer.headers["access-control-allow-methods"]


def test_a_preflight_from_another_origin_is_refused(cors: TestClient) -> None:
    answer = cors.options(
        ARRAY, headers={"origin": "https://other.example", "access-control-request-method": "GET"}
    )
    body = error_of(answer, 400)
    assert body["error"] == "cors_refused"
    assert "'https://other.example'" in body["detail"] and "origin" in body["detail"]
    assert "KASTORE_CORS_ORIGINS" in body["detail"]
    assert "access-control-allow-origin" not in answer.headers


def test_a_preflight_asking_for_another_header_is_refused(cors: TestClient) -> None:
    answer = cors.options(
        ARRAY,
        headers={
            "origin": PAGE,
            "access-control-request-method": "GET",
            "access-control-request-headers": "x-secret",
        },
    )
    assert error_of(answer, 400)["error"] == "cors_refused"
    assert "headers" in answer.json()["detail"]


def test_answers_expose_the_headers_a_page_needs(cors: TestClient) -> None:
    answer = cors.get(ARRAY, headers={"origin": PAGE, "range": "bytes=0-7"})
    assert answer.status_code == 206
    assert answer.headers["access-control-allow-origin"] == PAGE
    exposed = {
        h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")
    }
    assert {"etag", "content-range", "content-disposition", "x-request-id"} <= exposed
    # Every X-Kastore-* header the array route sends is exposed.
    sent = {name for name in answer.headers if name.startswith("x-kastore-")}
    assert sent and sent <= exposed, (sent, exposed)


def test_exposed_headers_are_the_ones_listed(cors: TestClient) -> None:
    answer = cors.get(ARRAY, headers={"origin": PAGE})
    assert answer.headers["access-control-expose-headers"].split(", ") == CORS_EXPOSE_HEADERS


def test_refusals_are_readable_by_the_page(make_client: ClientFactory) -> None:
    client = make_client(cors_origins=[PAGE], api_keys=f"{hash_key('k')} write")
    answer = client.put("/stores/x", content=b"x", headers={"origin": PAGE})
    assert answer.status_code == 401
    assert answer.headers["access-control-allow-origin"] == PAGE


# --- in a browser ------------------------------------------------------------------------

FETCH = """
async ([url, headers]) => {
    try {
        const answer = await fetch(url, {headers});
        const bytes = new Uint8Array(await answer.arrayBuffer());
        return {
            status: answer.status,
            etag: answer.headers.get("etag"),
            dtype: answer.headers.get("x-kastore-dtype"),
            requestId: answer.headers.get("x-request-id"),
            bytes: Array.from(bytes),
        };
    } catch (error) {
        return {error: String(error)};
    }
}
"""


@pytest.fixture(scope="module")
def page_server() -> Iterator[PageServer]:
    with PageServer("<!doctype html><title>another origin</title><p>page</p>") as server:
        yield server


def _serving(tmp_path: Path, tskit_file: Path, env: dict[str, str]) -> Iterator[Server]:
    server = Server(tmp_path / "data", tmp_path / "server.log", env=env)
    server.start()
    try:
        answer = server.client.put(
            "/stores/sim",
            content=tskit_file.read_bytes(),
            headers={"authorization": "Bearer writer"},
        )
        assert answer.status_code == 201, answer.text
        yield server
    finally:
        server.close()


def _fetch(browser: Browser, page_url: str, url: str, headers: dict[str, str]) -> Any:
    page = browser.new_page()
    try:
        page.goto(page_url)
        return page.evaluate(FETCH, [url, headers])
    finally:
        page.close()


@pytest.mark.e2e
def test_a_page_of_an_allowed_origin_fetches_an_array(
    browser: Browser, page_server: PageServer, tmp_path: Path, tskit_file: Path
) -> None:
    keys = f"{hash_key('writer')} write\n{hash_key('reader')} read"
    env = {
        "KASTORE_CORS_ORIGINS": page_server.origin,
        "KASTORE_API_KEYS": keys,
        "KASTORE_PUBLIC_READ": "false",
    }
    for server in _serving(tmp_path, tskit_file, env):
        url = f"{server.client.base_url}{ARRAY}"
        with kastore.load(tskit_file) as store:
            expected = np.array(store["edges/left"]).tobytes()
        # Authorization makes it a preflighted request.
        got = _fetch(browser, page_server.origin, url, {"authorization": "Bearer reader"})
        assert "error" not in got, got
        assert got["status"] == 200
        assert bytes(got["bytes"]) == expected
        assert got["dtype"] == "float64"
        assert got["etag"] and got["requestId"]
        # Without the key, the page can read the refusal.
        refused = _fetch(browser, page_server.origin, url, {})
        assert refused["status"] == 401
        assert json.loads(bytes(refused["bytes"]))["error"] == "missing_api_key"


@pytest.mark.e2e
def test_a_page_of_another_origin_cannot_read(
    browser: Browser, page_server: PageServer, tmp_path: Path, tskit_file: Path
) -> None:
    env = {"KASTORE_API_KEYS": f"{hash_key('writer')} write"}
    for server in _serving(tmp_path, tskit_file, env):
        got = _fetch(browser, page_server.origin, f"{server.client.base_url}{ARRAY}", {})
        assert "Failed to fetch" in got.get("error", ""), got
