"""Time to first plot of a 10-million-element array in the web UI, beside downloading its bytes.

    python benchmarks/ui_bench.py [--elements 10000000] [--repeat 3]

Starts the real server (``python -m app``, a temporary data directory), stores
``--repeat`` files of one float64 array each (a random walk, a different one
each time), and drives Debian's headless Chromium (``/usr/bin/chromium``,
through playwright) on the same machine:

- **ours**: from the store's page, open the array's page and wait until its
  line plot has drawn. The page asks the server for a summary (statistics and
  1,000 min/max buckets), draws from that, then asks for the histogram. The
  figure is the page's own clock (``performance.now()`` from the start of
  navigation) when uPlot's draw hook runs. "Computed" opens each file once, so
  the server computes every summary; "cached" opens them again, answered from
  the server's cache of summaries (kept by content).
- **baseline**: what a page that plots every point must do before it can
  draw anything: download the array's raw bytes with ``fetch()`` into an
  ``ArrayBuffer`` in the same browser, from the same server.

The files are read once before timing, so both sides read from the page
cache. Each figure is the best of ``--repeat``; the machine is shared and
noisy, so read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import kastore

ROOT = Path(__file__).resolve().parent.parent
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


def row(label: str, ours: float, base: float, target: str) -> None:
    ratio = ours / base
    print(f"{label:<52} {ours:>9.0f} ms {base:>9.0f} ms {ratio:>7.2f}x  {target}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(data_dir: Path, log: Path) -> Iterator[str]:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("KASTORE_")}
    env.update(KASTORE_DATA_DIR=str(data_dir), KASTORE_PORT=str(port), KASTORE_LOG_LEVEL="warning")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                connection.request("GET", "/healthz")
                if connection.getresponse().status == 200:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=15)


def put(base: str, name: str, path: Path) -> None:
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    size = str(path.stat().st_size)
    with path.open("rb") as body:
        connection.request("PUT", f"/stores/{name}", body=body, headers={"Content-Length": size})
    answer = connection.getresponse()
    answer.read()
    if answer.status not in (200, 201):
        raise SystemExit(f"PUT /stores/{name}: {answer.status}")


def read_through(base: str, path: str) -> None:
    """GET ``path`` and drop the bytes: puts the stored file in the page cache."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    connection.request("GET", path)
    answer = connection.getresponse()
    while answer.read(1 << 20):
        pass


DOWNLOAD = """async (url) => {
  const start = performance.now();
  const response = await fetch(url, { cache: "no-store" });
  const bytes = await response.arrayBuffer();
  return [performance.now() - start, bytes.byteLength];
}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--elements", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"ui bench skipped: no {CHROMIUM} (apt-get install chromium)")
        return 0
    from playwright.sync_api import sync_playwright

    n = args.elements
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as folder:
        tmp = Path(folder)
        with server(tmp / "data", tmp / "server.log") as base:
            names = [f"walk{i}" for i in range(args.repeat)]
            for i, name in enumerate(names):
                walk = np.cumsum(np.random.default_rng(i).normal(size=n))
                kastore.dump({"walk": walk}, tmp / "walk.kas")
                put(base, name, tmp / "walk.kas")
                read_through(base, f"/stores/{name}/arrays/walk")
            (tmp / "walk.kas").unlink()
            nbytes = n * 8
            print(
                f"-- time to first plot of {n:,} float64 ({nbytes / 1e6:.0f} MB) in headless "
                f"Chromium, best of {args.repeat}"
            )
            print(f"{'':<52} {'ours':>12} {'baseline':>12} {'ratio':>8}  target")
            computed: list[float] = []
            cached: list[float] = []
            downloads: list[float] = []
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
                try:
                    warm_up = browser.new_page()  # the browser's own first-page costs
                    warm_up.goto(f"{base}/")
                    warm_up.close()
                    for name in names:
                        page = browser.new_page()
                        # As a user comes to it: from the store's page, in a tab of its own.
                        page.goto(f"{base}/ui/stores/{name}")
                        page.wait_for_selector("details.group")
                        for times in (computed, cached):
                            page.goto(f"{base}/ui/stores/{name}/arrays/walk")
                            page.wait_for_selector("body[data-plotted]", state="attached")
                            times.append(float(page.evaluate("document.body.dataset.plotted")))
                            # The histogram comes next: let it end before anything else runs.
                            page.wait_for_selector("body[data-histogram]", state="attached")
                        page.goto(f"{base}/healthz")
                        took, size = page.evaluate(DOWNLOAD, f"/stores/{name}/arrays/walk")
                        if size != nbytes:
                            raise SystemExit(f"downloaded {size} bytes, expected {nbytes}")
                        downloads.append(float(took))
                        page.close()
                finally:
                    browser.close()
            download = min(downloads)
            row("page plotted, summary computed by the server", min(computed), download, "< 1")
            row("page plotted, summary from the server's cache", min(cached), download, "< 1")
            print(
                "   ours: page load to the line plot's first draw, statistics shown (the histogram"
                " is asked for next); baseline: fetch() of the raw bytes alone, nothing drawn"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
