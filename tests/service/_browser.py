"""Headless Chromium for tests, and a second web server to serve pages from another origin.

Chromium is Debian's (``apt-get install chromium``; ``make test`` installs it),
driven by playwright; no browser is ever downloaded.
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

__all__ = ["CHROMIUM", "PageServer", "ThreadedServer", "authorize", "chromium"]

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, closed at the end."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (make test does it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def authorize(page: Page, key: str) -> None:
    """Enter ``key`` as the Bearer token with Swagger UI's Authorize, as a person would."""
    page.locator(".auth-wrapper button.authorize").click()
    dialog = page.locator(".modal-ux")
    bearer = dialog.locator(".auth-container").first
    bearer.locator("input").fill(key)
    bearer.locator("button.modal-btn.authorize").click()
    # Authorized: the scheme offers Logout instead of its input.
    expect(bearer.locator("button", has_text="Logout")).to_be_visible()
    dialog.locator("button.btn-done").first.click()
    expect(dialog).to_be_hidden()


class ThreadedServer:
    """An HTTP server on 127.0.0.1, on a port of its own, run by a thread while in ``with``."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


class PageServer(ThreadedServer):
    """Serves one HTML page at ``/``: another origin."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"
