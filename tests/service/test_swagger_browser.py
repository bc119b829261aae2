"""Uploads through Swagger UI (/docs) in headless Chromium, as a person would click them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from app.security import hash_key

from ._browser import authorize
from ._server import Server, running

pytestmark = pytest.mark.e2e

KEY = "swagger-writer-key"
UPLOAD_OPERATION = "#operations-stores-upload_store_stores_post"
PUT_OPERATION = "#operations-stores-put_store_stores__name__put"


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[Server]:
    with running(tmp_path) as started:
        yield started


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[Server]:
    with running(tmp_path, {"KASTORE_API_KEYS": f"{hash_key(KEY)} write"}) as started:
        yield started


def _docs(browser: Browser, server: Server) -> Page:
    page = browser.new_page()
    page.goto(f"{server.client.base_url}/docs")
    return page


def _try_it_out(page: Page, operation: str) -> Locator:
    block = page.locator(operation)
    block.wait_for()
    block.locator(".opblock-summary-control").click()
    block.locator("button.try-out__btn").click()
    return block


def _execute(block: Locator) -> str:
    """Click Execute; the status Swagger UI shows for the answer, once it shows this one's."""
    with block.page.expect_response(lambda answer: "/stores" in answer.url) as sent:
        block.locator("button.execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    # An earlier answer stays on show until this one replaces it.
    expect(status).to_have_text(str(sent.value.status), timeout=15_000)
    return status.inner_text().strip()


def _stored(server: Server, name: str) -> str:
    answer = server.client.get(f"/stores/{name}")
    assert answer.status_code == 200, answer.text
    sha256: str = answer.json()["sha256"]
    return sha256


def test_a_file_uploads_through_the_docs_file_picker(
    browser: Browser, open_server: Server, tskit_file: Path
) -> None:
    page = _docs(browser, open_server)
    block = _try_it_out(page, UPLOAD_OPERATION)
    block.locator("input[type=file]").set_input_files(str(tskit_file))
    name = block.locator("input[placeholder=name]")
    name.fill("from-the-docs")
    assert _execute(block) == "201"
    assert "from-the-docs" in block.locator(".live-responses-table .microlight").first.inner_text()
    assert (
        _stored(open_server, "from-the-docs") == hashlib.sha256(tskit_file.read_bytes()).hexdigest()
    )


def test_a_binary_body_uploads_through_put(
    browser: Browser, open_server: Server, tskit_file: Path
) -> None:
    page = _docs(browser, open_server)
    block = _try_it_out(page, PUT_OPERATION)
    block.locator("tr[data-param-name=name] input").fill("put-from-docs")
    block.locator("input[type=file]").set_input_files(str(tskit_file))
    assert _execute(block) == "201"
    assert (
        _stored(open_server, "put-from-docs") == hashlib.sha256(tskit_file.read_bytes()).hexdigest()
    )


def test_authorize_sends_the_key_with_the_upload(
    browser: Browser, keyed_server: Server, tskit_file: Path
) -> None:
    page = _docs(browser, keyed_server)
    block = _try_it_out(page, UPLOAD_OPERATION)
    block.locator("input[type=file]").set_input_files(str(tskit_file))
    block.locator("input[placeholder=name]").fill("refused")
    assert _execute(block) == "401"  # no key yet
    authorize(page, KEY)
    block.locator("input[placeholder=name]").fill("authorized")
    assert _execute(block) == "201"
    assert keyed_server.client.get("/stores/refused").status_code == 404
    assert (
        _stored(keyed_server, "authorized") == hashlib.sha256(tskit_file.read_bytes()).hexdigest()
    )
