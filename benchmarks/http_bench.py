"""Reading a remote store over HTTP: bytes and time, beside downloading the whole file.

    python benchmarks/http_bench.py [--repeat 3] [--size-mb 100]

Starts the real server (``python -m app``, a temporary data directory), uploads
a store of about 100 MB (ten 10 MB float64 arrays and twenty small ones) with
``kastore.remote``, then compares, on the same server:

    open + list     ``kastore.load(url)``, keys and info          vs GET of the whole file
    open + 1 array  ``kastore.load(url)``, then one 10 MB array   vs GET of the whole file,
                                                                     then ``kastore.loads``
    slice           ``service[name][key][:1000]`` (kastore.remote) vs the whole array raw

Bytes are counted by the client (``HTTPFile.bytes_received``, the body sizes);
times are the best of ``--repeat`` runs, ours and the baseline alternating. The
machine is shared and noisy: read the ratios, not the absolute figures.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

import kastore
import kastore.remote
from kastore._http import HTTPFile

ROOT = Path(__file__).resolve().parent.parent
MB = 1_000_000


def row(label: str, ours: str, base: str, ratio: float, target: str) -> None:
    print(f"{label:<44} {ours:>14} {base:>14} {ratio:>9.4f}x  {target}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(data_dir: Path) -> Iterator[str]:
    """``python -m app`` on a free port of 127.0.0.1; yields its URL."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("KASTORE_")}
    env.update(KASTORE_DATA_DIR=str(data_dir), KASTORE_PORT=str(port), KASTORE_FSYNC="false")
    env["KASTORE_LOG_LEVEL"] = "warning"
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            with contextlib.suppress(OSError):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def download(url: str) -> bytes:
    """The whole answer to a plain GET, on a connection of its own."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
    try:
        conn.request("GET", parts.path)
        answer = conn.getresponse()
        if answer.status != 200:
            raise SystemExit(f"GET {url}: {answer.status}")
        return answer.read()
    finally:
        conn.close()


def best(
    repeat: int, ours: Callable[[], object], base: Callable[[], object]
) -> tuple[float, float]:
    """Best times of ``ours`` and ``base``, run in turn ``repeat`` times each."""
    times: dict[str, list[float]] = {"ours": [], "base": []}
    for _ in range(repeat):
        for name, run in (("ours", ours), ("base", base)):
            began = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - began)
    return min(times["ours"]), min(times["base"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args()
    length = args.size_mb * MB // 10 // 8
    data = {f"x{i}": np.arange(length, dtype=np.float64) + i for i in range(10)} | {
        f"small/{i}": np.arange(i, dtype=np.int32) for i in range(20)
    }
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "data") as url:
        path = Path(tmp) / "sim.kas"
        kastore.dump(data, path)
        size = path.stat().st_size
        with kastore.remote.connect(url) as service:
            info = service.upload(path, "sim", progress=False)
            file_url = f"{info.url}/file"
            key = "x3"
            nbytes = data[key].nbytes

            print(f"kastore.load over HTTP of a {size / MB:.1f} MB store at {file_url}")
            print(f"{'':<44} {'ours':>14} {'baseline':>14} {'ratio':>10}  target")

            with HTTPFile(file_url) as listing:
                store = kastore.load(listing)
                [store.info(name) for name in store]
                opened = listing.bytes_received, listing.requests
            row(
                "open + list: bytes read",
                f"{opened[0]:,}",
                f"{size:,}",
                opened[0] / size,
                "< 0.01x (the whole file)",
            )
            with HTTPFile(file_url) as one:
                array = kastore.load(one)[key]
                assert np.array_equal(array, data[key])
                read = one.bytes_received
                row(
                    f"open + one {nbytes / MB:.0f} MB array: bytes read",
                    f"{read:,}",
                    f"{size:,}",
                    read / size,
                    f"< 0.01x + the array ({nbytes / size:.2f}x)",
                )
                row(
                    "   bytes beyond the array",
                    f"{read - nbytes:,}",
                    f"{size:,}",
                    (read - nbytes) / size,
                    "< 0.01x",
                )
                print(f"   requests: {opened[1]} to open, {one.requests - opened[1]} for the array")

            def lazy_list() -> None:
                with HTTPFile(file_url) as file:
                    store = kastore.load(file)
                    [store.info(name) for name in store]

            def lazy_array() -> None:
                with HTTPFile(file_url) as file:
                    kastore.load(file)[key].sum()

            def whole_list() -> None:
                store = kastore.loads(download(file_url))
                [store.info(name) for name in store]

            def whole_array() -> None:
                kastore.loads(download(file_url))[key].sum()

            ours, base = best(args.repeat, lazy_list, whole_list)
            row("open + list: seconds", f"{ours:.4f}", f"{base:.4f}", ours / base, "< 1x")
            ours, base = best(args.repeat, lazy_array, whole_array)
            row("open + one array: seconds", f"{ours:.4f}", f"{base:.4f}", ours / base, "< 1x")

            remote_array = service["sim"][key]
            array_url = remote_array.url
            ours, base = best(args.repeat, lambda: remote_array[:1000], lambda: download(array_url))
            row(
                "remote [:1000] vs the whole array: seconds",
                f"{ours:.4f}",
                f"{base:.4f}",
                ours / base,
                "< 1x",
            )


if __name__ == "__main__":
    main()
