"""The web UI's pages and assets as served: offline, open, escaped, the vendored library intact."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from app.main import create_app
from app.security import hash_key

from ._support import TestClient, service_settings
from .conftest import ClientFactory

STATIC = Path(__file__).resolve().parents[2] / "app" / "static"
PAGES = ["/", "/ui/stores/sim", "/ui/stores/sim/arrays/edges/left"]
#: Strings in the vendored library that name a host but load nothing: an XML namespace
#: and its header comment's project page.
NOT_REQUESTS = {"http://www.w3.org/2000/svg", "https://github.com/leeoniya/uPlot"}


def _assets(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#]+)"', html)


@pytest.mark.parametrize("path", PAGES)
def test_pages_load_only_from_this_server(reader: TestClient, path: str) -> None:
    answer = reader.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy and "script-src 'self'" in policy
    assets = [asset for asset in _assets(answer.text) if asset.startswith("/ui/static/")]
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in _assets(answer.text):
        assert asset.startswith("/") or asset == "data:,", asset
    for asset in assets:
        served = reader.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 500, asset


def test_no_script_or_style_names_another_host() -> None:
    files = sorted(STATIC.glob("*.js")) + sorted(STATIC.glob("*.css"))
    assert len(files) >= 6, files
    for path in files:
        urls = set(re.findall(r"https?://[^\s\"'`)]+", path.read_text(encoding="utf-8")))
        assert urls <= NOT_REQUESTS, (path.name, urls)


def test_every_module_a_page_imports_is_served(reader: TestClient) -> None:
    for script in STATIC.glob("*.js"):
        for imported in re.findall(r'from "\./([^"]+)"', script.read_text(encoding="utf-8")):
            assert reader.get(f"/ui/static/{imported}").status_code == 200, (script, imported)


def test_the_vendored_library_is_the_one_checked_in_with_its_licence() -> None:
    lines = (STATIC / "vendor.sha256").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        digest, name = line.split()
        assert hashlib.sha256((STATIC / name).read_bytes()).hexdigest() == digest, name
    licence = (STATIC / "uPlot.LICENSE").read_text()
    assert "MIT License" in licence and "Leon Sorokin" in licence


def test_the_makefile_fetches_the_vendored_version() -> None:
    makefile = (STATIC.parents[1] / "Makefile").read_text()
    version = re.search(r"^UPLOT_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert version is not None
    header = (STATIC / "uPlot.iife.min.js").read_text(encoding="utf-8")[:300]
    assert f"v{version.group(1)}" in header


def test_pages_are_open_when_reads_need_a_key(make_client: ClientFactory) -> None:
    client = make_client(api_keys=f"{hash_key('k')} read", public_read=False)
    assert client.get("/stores").status_code == 401
    for path in [*PAGES, "/ui/static/ui.js", "/ui/static/uPlot.iife.min.js"]:
        assert client.get(path).status_code == 200, path
    # Nothing stored shows in a page: the scripts read it through the API, with a key.
    assert client.post("/", content=b"x").status_code == 405


def test_the_store_and_key_are_escaped(reader: TestClient) -> None:
    key = '"><script>alert(1)</script>'
    answer = reader.get("/ui/stores/sim/arrays/" + key.replace("<", "%3C").replace(">", "%3E"))
    assert answer.status_code == 200
    assert "<script>alert" not in answer.text
    assert 'data-key="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in answer.text


def test_pages_follow_the_root_path(data_dir: Path) -> None:
    """Behind a proxy that strips ``/kastore``, every link and asset keeps the prefix."""
    app = create_app(service_settings(data_dir))
    with TestClient(app, root_path="/kastore") as client:
        answer = client.get("/ui/stores/sim")
        assert answer.status_code == 200
        assert 'data-root="/kastore"' in answer.text
        assets = [asset for asset in _assets(answer.text) if asset != "data:,"]
        assert assets and all(asset.startswith("/kastore/") for asset in assets), assets
        # As the server sees them once the proxy has stripped the prefix.
        for asset in assets:
            if "/ui/static/" in asset:
                assert client.get(asset).status_code == 200, asset


def test_unknown_assets_get_the_json_error(reader: TestClient) -> None:
    answer = reader.get("/ui/static/nothing.js")
    assert answer.status_code == 404
    assert answer.json()["error"] == "not_found"
