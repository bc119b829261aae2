"""The service behind a reverse proxy that mounts it under a prefix, as the README sets it up.

The proxy here does what nginx's ``location /kastore/ { proxy_pass
http://127.0.0.1:PORT/; }`` with ``X-Forwarded-For`` and ``X-Forwarded-Proto``
does: strips the prefix, keeps ``Host``, and says who the client was and
that it spoke HTTPS.
"""

from __future__ import annotations

import http.client
import http.server
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from app.security import hash_key

from ._browser import ThreadedServer, authorize, chromium
from ._server import Server

pytestmark = pytest.mark.e2e

PREFIX = "/kastore"
KEY = "proxy-writer"
CLIENT_ADDRESS = "203.0.113.7"  # what the proxy says the client's address was


class PrefixProxy(ThreadedServer):
    """Forwards ``PREFIX/...`` to a backend's ``/...``; 404 for anything else.

    ``scheme`` is what it tells the backend the client spoke (``https`` where
    it would terminate TLS).
    """

    def __init__(self, backend_port: int, *, scheme: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                if not self.path.startswith(f"{PREFIX}/"):
                    self.send_error(404)
                    return
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                headers["X-Forwarded-For"] = CLIENT_ADDRESS
                headers["X-Forwarded-Proto"] = scheme
                backend = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=30)
                try:
                    backend.request(
                        self.command, self.path.removeprefix(PREFIX), body=body, headers=headers
                    )
                    answer = backend.getresponse()
                    data = answer.read()
                finally:
                    backend.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        super().__init__(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PREFIX}"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Server]:
    env = {
        "KASTORE_ROOT_PATH": PREFIX,
        "KASTORE_API_KEYS": f"{hash_key(KEY)} write",
        "KASTORE_FORWARDED_ALLOW_IPS": "127.0.0.1",
    }
    server = Server(tmp_path / "data", tmp_path / "server.log", env=env)
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(params=["https"])
def proxy(backend: Server, request: pytest.FixtureRequest) -> Iterator[PrefixProxy]:
    port = backend.client.base_url.port
    assert port is not None
    with PrefixProxy(port, scheme=request.param) as running:
        yield running


def test_urls_in_answers_carry_the_prefix(proxy: PrefixProxy, tskit_file: Path) -> None:
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        created = client.post(
            f"{proxy.url}/stores",
            files={"file": ("sim.trees", tskit_file.read_bytes())},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert created.status_code == 201, created.text
        assert created.headers["location"] == f"{PREFIX}/stores/sim"
        info = created.json()
        assert info["keys_url"] == f"{PREFIX}/stores/sim/keys"
        keys = client.get(f"{proxy.url}/stores/sim/keys").json()
        url = keys["keys"][0]["url"]
        assert url.startswith(f"{PREFIX}/stores/sim/arrays/")
        array = client.get(f"{proxy.url}{url.removeprefix(PREFIX)}")
        assert array.status_code == 200
        missing = client.get(f"{proxy.url}/nowhere").json()
        assert f"{PREFIX}/docs" in missing["detail"]


def test_the_clients_address_and_scheme_come_from_the_proxy(
    proxy: PrefixProxy, backend: Server, tskit_file: Path
) -> None:
    with httpx.Client(timeout=30) as client:
        # A page of the proxy's https origin is this server's own: its write passes.
        refused = client.put(
            f"{proxy.url}/stores/sim",
            content=tskit_file.read_bytes(),
            headers={"authorization": f"Bearer {KEY}", "origin": proxy.url.split(PREFIX)[0]},
        )
        assert refused.json()["error"] == "cross_origin_write"  # http is another origin
        host = proxy.url.split("//")[1].split("/")[0]
        answer = client.put(
            f"{proxy.url}/stores/sim",
            content=tskit_file.read_bytes(),
            headers={"authorization": f"Bearer {KEY}", "origin": f"https://{host}"},
        )
        assert answer.status_code == 201, answer.text
        client.get(f"{proxy.url}/healthz", headers={"x-request-id": "via-proxy"})
    backend.stop(signal.SIGTERM)  # lets the last lines be written
    lines = [json.loads(line) for line in backend.output().splitlines() if line.strip()]
    health = [line for line in lines if line.get("request_id") == "via-proxy"]
    assert len(health) == 1, lines
    assert health[0]["client"] == CLIENT_ADDRESS
    assert health[0]["path"] == f"{PREFIX}/healthz"


@pytest.mark.parametrize("proxy", ["http"], indirect=True)  # the browser speaks http to it
def test_the_docs_work_behind_the_prefix(proxy: PrefixProxy, tskit_file: Path) -> None:
    with chromium() as browser:
        upload_through_docs(browser, proxy.url, tskit_file)
    with httpx.Client(timeout=30) as client:
        assert client.get(f"{proxy.url}/stores/docs-upload").status_code == 200


def upload_through_docs(browser: Browser, base: str, tskit_file: Path) -> None:
    page = browser.new_page()
    page.goto(f"{base}/docs")
    authorize(page, KEY)
    block = page.locator("#operations-stores-upload_store_stores_post")
    block.locator(".opblock-summary-control").click()
    block.locator("button.try-out__btn").click()
    block.locator("input[type=file]").set_input_files(str(tskit_file))
    block.locator("input[placeholder=name]").fill("docs-upload")
    with page.expect_response(lambda answer: "/stores" in answer.url) as sent:
        block.locator("button.execute").click()
    assert sent.value.status == 201
    status = block.locator(".live-responses-table tbody .response-col_status").first
    expect(status).to_have_text("201", timeout=15_000)
    assert f"{PREFIX}/stores" in block.locator(".request-url").inner_text()
