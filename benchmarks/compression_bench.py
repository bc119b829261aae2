"""Compression on the wire: bytes sent and speed, beside the raw download.

    python benchmarks/compression_bench.py [--repeat 3] [--size-mb 100]

Starts the real server (``python -m app``, a temporary data directory) and
measures, on the same server:

    bytes on the wire   every array of each tskit test file, and the whole file,
                        fetched with ``Accept-Encoding: zstd`` (and ``gzip``)
                        vs the same fetched raw
    throughput          one large array (``--size-mb``, sorted positions as
                        float64, like tskit's) fetched compressed, in stored
                        bytes a second, vs the raw download of it; the goal is
                        ≥ 125 MB/s a request (a 1 Gbit/s link)

Bodies are counted as they cross the wire (``http.client`` undoes the chunking
but not the coding). Times are the best of ``--repeat`` runs, compressed and
raw alternating. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
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
TSKIT = ROOT.parent / "shared" / "testdata" / "tskit"
MB = 1_000_000
GOAL_MB_S = 125


def row(label: str, ours: str, base: str, ratio: float, target: str = "") -> None:
    print(f"{label:<58} {ours:>14} {base:>14} {ratio:>9.3f}x  {target}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(data_dir: Path) -> Iterator[int]:
    """``python -m app`` on a free port of 127.0.0.1; yields the port."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("KASTORE_")}
    env.update(KASTORE_DATA_DIR=str(data_dir), KASTORE_PORT=str(port), KASTORE_FSYNC="false")
    env["KASTORE_LOG_LEVEL"] = "warning"
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=env, stdin=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            with contextlib.suppress(OSError):
                if request(port, "GET", "/healthz")[0] == 200:
                    break
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def request(
    port: int, method: str, path: str, body: bytes | None = None, encoding: str | None = None
) -> tuple[int, bytes, str | None]:
    """Status, the body as sent (still coded) and its Content-Encoding."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"accept-encoding": encoding or "identity"}
        conn.request(method, path, body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, data, answer.getheader("content-encoding")
    finally:
        conn.close()


def put(port: int, name: str, content: bytes) -> None:
    status, data, _ = request(port, "PUT", f"/stores/{name}", body=content)
    if status not in (200, 201):
        raise SystemExit(f"upload of {name} failed: {status} {data[:200]!r}")


def wire_bytes(port: int, name: str, encoding: str | None) -> tuple[int, int]:
    """Bytes sent for every array of ``name``, and for its whole file."""
    _, listing, _ = request(port, "GET", f"/stores/{name}/keys?limit=10000")
    total = 0
    for entry in json.loads(listing)["keys"]:
        status, data, _ = request(port, "GET", entry["url"], encoding=encoding)
        assert status == 200, (entry["key"], status)
        total += len(data)
    return total, len(request(port, "GET", f"/stores/{name}/file", encoding=encoding)[1])


def best_time(port: int, path: str, encoding: str | None, repeat: int) -> tuple[float, int]:
    times, sent = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        _, data, coding = request(port, "GET", path, encoding=encoding)
        times.append(time.perf_counter() - started)
        assert coding == (encoding if encoding != "identity" else None), coding
        sent = len(data)
    return min(times), sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args()
    trees = sorted(TSKIT.glob("*.trees"))
    if not trees:
        raise SystemExit(f"no .trees files under {TSKIT}")
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "data") as port:
        print("\ncompression on the wire (ours = compressed, baseline = raw)")
        row("", "ours", "baseline", 1.0, "")
        for path in trees:
            put(port, path.stem, path.read_bytes())
            raw_arrays, raw_file = wire_bytes(port, path.stem, None)
            for encoding in ("zstd", "gzip"):
                arrays, whole = wire_bytes(port, path.stem, encoding)
                row(
                    f"{path.name}: every array, {encoding} (bytes)",
                    f"{arrays:,}",
                    f"{raw_arrays:,}",
                    arrays / raw_arrays,
                )
                row(
                    f"{path.name}: whole file, {encoding} (bytes)",
                    f"{whole:,}",
                    f"{raw_file:,}",
                    whole / raw_file,
                )
        n = args.size_mb * MB // 8
        rng = np.random.default_rng(42)
        positions = np.sort(rng.integers(0, 10**8, n)).astype(np.float64)
        big = Path(tmp) / "big.kas"
        kastore.dump({"positions": positions}, big)
        put(port, "big", big.read_bytes())
        big.unlink()
        url = "/stores/big/arrays/positions"
        stored = positions.nbytes
        raw_time, _ = best_time(port, url, "identity", args.repeat)
        raw_rate = stored / raw_time / MB
        for encoding in ("zstd", "gzip"):
            coded_time, sent = best_time(port, url, encoding, args.repeat)
            rate = stored / coded_time / MB
            row(
                f"{args.size_mb} MB array, {encoding} (stored MB/s)",
                f"{rate:,.0f}",
                f"{raw_rate:,.0f}",
                rate / raw_rate,
                f"goal >= {GOAL_MB_S} MB/s: {'met' if rate >= GOAL_MB_S else 'MISSED'}",
            )
            row(
                f"{args.size_mb} MB array, {encoding} (bytes)",
                f"{sent:,}",
                f"{stored:,}",
                sent / stored,
            )


if __name__ == "__main__":
    main()
