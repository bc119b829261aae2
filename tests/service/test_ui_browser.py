"""The web UI in headless Chromium, against the real server, with every other host blocked.

Each page's requests go through a route that lets requests to the server
through and aborts and records every other one: a page that reached for a
CDN would be caught, and would not get it. The pages' Content-Security-Policy
stops such a request even earlier, in the page; the console's report of that
fails the test too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, Route, expect

import kastore
from app.security import hash_key

from ._server import Server, running

pytestmark = pytest.mark.e2e

KEY = "ui-reader-writer-key"
SLOW = 30_000  # ms, for pages of ten thousand rows on a busy machine
WALK_LENGTH = 1_500_000  # past the page's threshold (1,000,000): plotted from the summary

# What counts as the plot's ink: the series' blue (rgb 31, 119, 180) and its fill,
# never the axes' and grid's greys nor the white background.
BLUE_PIXELS = """(selector) => {
  const canvas = document.querySelector(selector + " canvas");
  const { width, height } = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let blue = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
    if (a > 40 && b > r + 50 && b > g + 20) blue += 1;
  }
  return blue;
}"""


@dataclass
class Traffic:
    """The requests a page made: to the server (method, path, headers), and elsewhere."""

    base: str
    local: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)

    def handle(self, route: Route) -> None:
        request = route.request
        url = request.url
        if url.startswith(f"{self.base}/") or url.startswith("data:"):
            path = url[len(self.base) :]
            self.local.append((request.method, path, request.headers))
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def paths(self, method: str = "GET") -> list[str]:
        return [path for m, path, _ in self.local if m == method]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with running(tmp_path) as started:
        yield started


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[Server]:
    env = {"KASTORE_API_KEYS": f"{hash_key(KEY)} write", "KASTORE_PUBLIC_READ": "false"}
    with running(tmp_path, env) as started:
        yield started


@pytest.fixture
def traffic(server: Server) -> Traffic:
    return Traffic(str(server.client.base_url))


def _page(browser: Browser, traffic: Traffic) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.route("**/*", traffic.handle)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The pages' Content-Security-Policy stops a request to another host before the
    # route sees it; the console says so.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    try:
        yield page
    finally:
        context.close()
    assert errors == [], errors
    assert traffic.outside == [], f"requests left the server: {traffic.outside}"
    assert traffic.local, "the route saw no request: it checked nothing"


@pytest.fixture
def page(browser: Browser, traffic: Traffic) -> Iterator[Page]:
    yield from _page(browser, traffic)


def _post(server: Server, path: Path, name: str | None = None) -> dict[str, Any]:
    data = {} if name is None else {"name": name}
    answer = server.client.post(
        "/stores", files={"file": (path.name, path.read_bytes())}, data=data
    )
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def _statistics(page: Page) -> dict[str, float]:
    return {
        name: float(page.locator(f"#stat-{name}").get_attribute("data-value") or "nan")
        for name in ("min", "max", "mean")
    }


def test_upload_then_browse_to_an_array_and_see_its_plot(
    page: Page, server: Server, traffic: Traffic, tskit_file: Path
) -> None:
    page.goto(f"{traffic.base}/")
    expect(page.locator("#empty")).to_be_visible()
    page.set_input_files("#file-input", tskit_file)
    result = page.locator("#upload-result")
    expect(result).to_contain_text(f"Stored {tskit_file.stem}")
    assert server.client.get(f"/stores/{tskit_file.stem}").status_code == 200

    page.locator("#stores tbody a", has_text=tskit_file.stem).click()
    expect(page.locator("details.group summary", has_text="nodes/")).to_be_visible()
    times = kastore.load(tskit_file)["nodes/time"]
    row = page.locator("tr[data-key='nodes/time']")
    expect(row.locator("td").nth(1)).to_have_text("float64")
    expect(row.locator("td").nth(2)).to_have_text(f"{len(times):,}")

    array_url = f"{traffic.base}/stores/single_population/arrays/nodes%2Ftime"
    with page.expect_response(
        lambda answer: answer.url == array_url and answer.request.method == "GET"
    ) as fetched:
        row.locator("a", has_text="nodes/time").click()
    page.wait_for_selector("body[data-plotted][data-histogram]", state="attached")
    # The browser asks for compressed answers (Accept-Encoding), and gets one.
    assert fetched.value.headers.get("content-encoding") in ("zstd", "gzip")
    statistics = _statistics(page)
    assert statistics["min"] == times.min()
    assert statistics["max"] == times.max()
    assert statistics["mean"] == pytest.approx(times.mean(), rel=1e-12)
    expect(page.locator("#stat-nan")).to_have_text("0")
    assert page.evaluate(BLUE_PIXELS, "#plot") > 500
    assert page.evaluate(BLUE_PIXELS, "#histogram") > 500
    # Small arrays are downloaded whole and drawn point by point.
    assert "/stores/single_population/arrays/nodes%2Ftime" in traffic.paths()


def test_a_large_array_is_plotted_from_the_summary_without_downloading_it(
    page: Page, server: Server, traffic: Traffic, tmp_path: Path
) -> None:
    walk = np.cumsum(np.random.default_rng(5).normal(size=WALK_LENGTH))
    walk[[10, 700_000]] = np.nan
    kastore.dump({"walk": walk}, tmp_path / "big.kas")
    _post(server, tmp_path / "big.kas")
    page.goto(f"{traffic.base}/ui/stores/big/arrays/walk")
    page.wait_for_selector("body[data-plotted][data-histogram]", state="attached")
    statistics = _statistics(page)
    assert statistics["min"] == np.nanmin(walk)
    assert statistics["max"] == np.nanmax(walk)
    assert statistics["mean"] == pytest.approx(np.nanmean(walk), rel=1e-9)
    expect(page.locator("#stat-nan")).to_have_text("2")
    expect(page.locator("#plot-note")).to_contain_text("1,000 runs")
    assert page.evaluate(BLUE_PIXELS, "#plot") > 2000
    downloads = [path for path in traffic.paths() if path.startswith("/stores/big/arrays/walk")]
    assert downloads == [], "the array itself was downloaded"
    assert any(path.startswith("/stores/big/summary/walk") for path in traffic.paths())


def test_a_ragged_text_column_is_shown_row_by_row(
    page: Page, server: Server, traffic: Traffic, testdata: Path
) -> None:
    path = testdata / "tskit" / "island_model_with_metadata.trees"
    name = _post(server, path)["name"]
    store = kastore.load(path)
    records, offsets = store["provenances/record"], store["provenances/record_offset"]
    assert len(offsets) > 2
    page.goto(f"{traffic.base}/ui/stores/{name}/arrays/provenances/record")
    rows = page.locator("#text table.rows tbody tr")
    expect(rows).to_have_count(len(offsets) - 1)
    for i in range(len(offsets) - 1):
        expected = json.loads(bytes(records[offsets[i] : offsets[i + 1]]).decode())
        shown = rows.nth(i).locator("pre").text_content() or ""
        assert json.loads(shown) == expected
    expect(page.locator("#text-title")).to_contain_text("Rows: 2")


def test_bytes_holding_text_are_shown_as_text(
    page: Page, server: Server, traffic: Traffic, testdata: Path
) -> None:
    path = testdata / "tskit" / "island_model_with_metadata.trees"
    name = _post(server, path)["name"]
    schema = bytes(kastore.load(path)["metadata_schema"]).decode()
    page.goto(f"{traffic.base}/ui/stores/{name}/arrays/metadata_schema")
    text = page.locator("#text pre.text")
    expect(text).to_be_visible()
    assert json.loads(text.text_content() or "") == json.loads(schema)
    # Numbers are not text: no text section for a float column.
    page.goto(f"{traffic.base}/ui/stores/{name}/arrays/nodes/time")
    page.wait_for_selector("body[data-plotted]", state="attached")
    expect(page.locator("#text-section")).to_be_hidden()


def test_an_upload_the_api_refuses_shows_its_message(
    page: Page, server: Server, traffic: Traffic, tmp_path: Path
) -> None:
    bad = tmp_path / "notes.kas"
    bad.write_bytes(b"not a kastore file at all")
    api = server.client.post("/stores", files={"file": (bad.name, bad.read_bytes())})
    assert api.status_code == 422
    page.goto(f"{traffic.base}/")
    page.set_input_files("#file-input", bad)
    result = page.locator("#upload-result")
    expect(result).to_contain_text(api.json()["detail"])
    expect(result).to_contain_text("invalid_kastore_file")
    assert server.client.get("/stores").json()["total"] == 0


def test_a_store_dropped_on_the_page_is_uploaded(
    page: Page, server: Server, traffic: Traffic
) -> None:
    content = kastore.dumps({"x": np.arange(10, dtype=np.int32)})
    page.goto(f"{traffic.base}/")
    transfer = page.evaluate_handle(
        """(bytes) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], "dropped.kas"));
            return transfer;
        }""",
        list(content),
    )
    page.dispatch_event("#upload", "drop", {"dataTransfer": transfer})
    expect(page.locator("#upload-result")).to_contain_text("Stored dropped")
    expect(page.locator("#stores tbody tr[data-name='dropped']")).to_be_visible()
    assert server.client.get("/stores/dropped/file").content == content


def test_delete_asks_first(page: Page, server: Server, traffic: Traffic, tskit_file: Path) -> None:
    name = _post(server, tskit_file)["name"]
    page.goto(f"{traffic.base}/")
    row = page.locator(f"#stores tbody tr[data-name='{name}']")
    row.locator("button", has_text="delete").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text(f"Delete the store {name}?")
    dialog.locator("button", has_text="Cancel").click()
    expect(dialog).to_be_hidden()
    assert server.client.get(f"/stores/{name}").status_code == 200

    row.locator("button", has_text="delete").click()
    dialog.locator("#confirm-yes").click()
    expect(row).to_have_count(0)
    assert server.client.get(f"/stores/{name}").status_code == 404


def test_filter_and_sort(page: Page, server: Server, traffic: Traffic, tskit_file: Path) -> None:
    for name in ("beta", "alpha", "gamma-ray"):
        _post(server, tskit_file, name)
    page.goto(f"{traffic.base}/")
    names = page.locator("#stores tbody tr td:first-child")
    expect(names).to_have_text(["alpha", "beta", "gamma-ray"])
    page.locator("th button[data-sort='name']").click()
    expect(names).to_have_text(["gamma-ray", "beta", "alpha"])
    page.fill("#filter", "a-r")
    expect(names).to_have_text(["gamma-ray"])
    expect(page.locator("#count")).to_have_text("1 of 3 stores")


def test_a_key_is_asked_for_once_and_kept_for_the_tab(
    browser: Browser, keyed_server: Server, tskit_file: Path
) -> None:
    name = tskit_file.stem
    answer = keyed_server.client.post(
        "/stores",
        files={"file": (tskit_file.name, tskit_file.read_bytes())},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status_code == 201, answer.text
    traffic = Traffic(str(keyed_server.client.base_url))
    pages = _page(browser, traffic)
    page = next(pages)
    page.goto(f"{traffic.base}/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("needs an API key")
    page.fill("#key-input", KEY)
    page.click("#key-use")
    expect(page.locator(f"#stores tbody tr[data-name='{name}']")).to_be_visible()
    expect(page.locator("#key-state")).to_be_visible()

    page.goto(f"{traffic.base}/ui/stores/{name}/arrays/nodes/time")
    page.wait_for_selector("body[data-plotted]", state="attached")
    expect(dialog).to_be_hidden()
    api_calls = [
        (path, headers) for _, path, headers in traffic.local if path.startswith("/stores")
    ]
    assert api_calls
    keyed = [path for path, headers in api_calls if headers.get("authorization") == f"Bearer {KEY}"]
    # Only the first listing went without the key (and was answered 401).
    assert len(keyed) == len(api_calls) - 1, api_calls
    with pytest.raises(StopIteration):
        next(pages)


def test_a_name_in_use_can_be_replaced(
    page: Page, server: Server, traffic: Traffic, tskit_file: Path, tmp_path: Path
) -> None:
    _post(server, tskit_file, "sim")
    other = tmp_path / "other.kas"
    kastore.dump({"x": np.arange(3, dtype=np.int8)}, other)
    page.goto(f"{traffic.base}/")
    page.fill("#upload-name", "sim")
    page.set_input_files("#file-input", other)
    result = page.locator("#upload-result")
    expect(result).to_contain_text("a store named 'sim' already exists")
    assert server.client.get("/stores/sim").json()["num_keys"] > 1
    result.locator("button", has_text="Replace it").click()
    expect(result).to_contain_text("Replaced sim: 1 keys")
    assert server.client.get("/stores/sim/file").content == other.read_bytes()


def test_the_progress_bar_follows_the_upload(
    page: Page, server: Server, traffic: Traffic, tmp_path: Path
) -> None:
    path = tmp_path / "slow.kas"
    kastore.dump({"x": np.zeros(1 << 18)}, path)  # 2 MiB
    page.goto(f"{traffic.base}/")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1 << 20},
    )
    page.evaluate(
        """() => {
            window.seen = [];
            const bar = document.getElementById("upload-bar");
            new MutationObserver(() => window.seen.push(bar.value)).observe(bar, {
              attributes: true,
            });
        }"""
    )
    page.set_input_files("#file-input", path)
    expect(page.locator("#upload-result")).to_contain_text("Stored slow", timeout=20_000)
    seen = page.evaluate("window.seen")
    assert any(0 < value < 1 for value in seen), seen
    assert seen == sorted(seen), seen


def test_a_store_of_many_keys_loads_them_a_page_at_a_time(
    page: Page, server: Server, traffic: Traffic, tmp_path: Path
) -> None:
    keys = {f"t{i % 7}/k{i:05d}": np.arange(i % 5, dtype=np.uint16) for i in range(12_000)}
    kastore.dump(keys, tmp_path / "many.kas")
    _post(server, tmp_path / "many.kas")
    page.goto(f"{traffic.base}/ui/stores/many")
    # Ten thousand rows take a while to draw on a busy machine.
    page.set_default_timeout(SLOW)
    count = page.locator("#count")
    expect(count).to_have_text("12,000 keys (10,000 loaded)", timeout=SLOW)
    # In file order (sorted): the first 10,000 keys are those of t0/ to t5/.
    expect(page.locator("details.group")).to_have_count(6, timeout=SLOW)
    page.click("#more")
    expect(page.locator("details.group")).to_have_count(7, timeout=SLOW)
    expect(count).to_have_text("12,000 keys", timeout=SLOW)
    expect(page.locator("#more")).to_be_hidden(timeout=SLOW)
    expect(page.locator("tr[data-key]")).to_have_count(12_000, timeout=SLOW)
    page.fill("#filter", "k1199")
    expect(page.locator("tr[data-key]")).to_have_count(10, timeout=SLOW)
    expect(count).to_have_text("10 of 12,000 keys", timeout=SLOW)


def test_a_ragged_numeric_column_is_shown_a_hundred_rows_at_a_time(
    page: Page, server: Server, traffic: Traffic, tmp_path: Path
) -> None:
    lengths = np.arange(150) % 4  # rows of 0 to 3 values
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.uint32)
    values = np.arange(offsets[-1], dtype=np.int32) * 10
    kastore.dump({"parents": values, "parents_offset": offsets}, tmp_path / "ragged.kas")
    _post(server, tmp_path / "ragged.kas")
    page.goto(f"{traffic.base}/ui/stores/ragged/arrays/parents")
    rows = page.locator("#text table.rows tbody tr")
    expect(rows).to_have_count(100)
    expect(page.locator("#text-title")).to_contain_text("Rows: 150, split by parents_offset")

    def shown(i: int) -> str:
        row = values[offsets[i] : offsets[i + 1]]
        return f"{i}[{', '.join(str(v) for v in row)}]"

    expect(rows.nth(0)).to_have_text(shown(0))
    expect(rows.nth(3)).to_have_text(shown(3))
    page.click("#more-rows")
    expect(rows).to_have_count(150)
    expect(rows.nth(149)).to_have_text(shown(149))
    expect(page.locator("#more-rows")).to_be_hidden()
    # The rows come a page at a time, as slices of the column.
    fetched = [p for p in traffic.paths() if p.startswith("/stores/ragged/arrays/parents?")]
    assert fetched == [
        f"/stores/ragged/arrays/parents?start={offsets[0]}&stop={offsets[100]}",
        f"/stores/ragged/arrays/parents?start={offsets[100]}&stop={offsets[150]}",
    ]


def test_downloads_carry_the_key_when_reads_need_one(
    browser: Browser, keyed_server: Server, tskit_file: Path
) -> None:
    answer = keyed_server.client.post(
        "/stores",
        files={"file": (tskit_file.name, tskit_file.read_bytes())},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status_code == 201, answer.text
    name = tskit_file.stem
    traffic = Traffic(str(keyed_server.client.base_url))
    pages = _page(browser, traffic)
    page = next(pages)
    page.goto(f"{traffic.base}/ui/stores/{name}")
    page.fill("#key-input", KEY)
    page.click("#key-use")
    row = page.locator("tr[data-key='nodes/time']")
    with page.expect_download() as download:
        row.locator("a", has_text="raw").click()
    saved = Path(download.value.path())
    assert download.value.suggested_filename == "nodes_time.float64.bin"
    assert saved.read_bytes() == kastore.load(tskit_file)["nodes/time"].tobytes()
    with page.expect_download() as download:
        row.locator("a", has_text="JSON").click()
    document = json.loads(Path(download.value.path()).read_text())
    assert document["data"] == kastore.load(tskit_file)["nodes/time"].tolist()
    with page.expect_download() as download:
        row.locator("a", has_text="npy").click()
    assert download.value.suggested_filename.endswith(".npy")
    loaded = np.load(download.value.path())
    np.testing.assert_array_equal(loaded, kastore.load(tskit_file)["nodes/time"])
    with pytest.raises(StopIteration):
        next(pages)
