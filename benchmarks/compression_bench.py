"""Compression on the wire: bytes sent and speed, beside the raw download.

    python benchmarks/compression_bench.py [--repeat 3] [--size-mb 100] [--link-mbit 100]

Starts the real server (``python -m app``, a temporary data directory) and
measures, on the same server:

    bytes on the wire   every array of each tskit test file, and the whole file,
                        fetched with ``Accept-Encoding: zstd`` (and ``gzip``)
                        vs the same fetched raw
    throughput          one large array (``--size-mb``, sorted positions as
                        float64, like tskit's) fetched compressed, in stored
                        bytes a second, vs the raw download of it; the goal is
                        ≥ 125 MB/s a request (a 1 Gbit/s link)
    a slow link         the time to fetch every array of each tskit file, one
                        request after another on a keep-alive connection and
                        decoded as they come, and then the large array, through
                        a link throttled to ``--link-mbit`` (100 Mbit/s): a
                        proxy in this script that passes 12.5 MB/s each way
                        (a token bucket per direction), compressed vs raw

Bodies are counted as they cross the wire (``http.client`` undoes the chunking
but not the coding). Times are the best of ``--repeat`` runs, compressed and
raw alternating. The machine is shared and noisy: read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import zstandard

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


class TokenBucket:
    """``rate`` bytes a second, in bursts of at most ``burst``: one direction of the link.

    With a small burst, every answer waits for its bytes' time on the link,
    as on a real one: a few kilobytes take a few tenths of a millisecond. The
    event loop's timers round up to the millisecond, so the waits are slept
    in a thread, to the tenth of a millisecond.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.updated = time.monotonic()

    async def take(self, size: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= size
        if self.tokens < 0:  # in debt: wait until the bytes have had their time on the link
            await asyncio.to_thread(time.sleep, -self.tokens / self.rate)


class ThrottledLink:
    """A TCP proxy on 127.0.0.1 to ``port``, every byte through a token bucket each way.

    Runs its own event loop in a thread; ``port`` is where clients connect.
    """

    PIECE = 64 * 1024
    #: A third of a millisecond of the link: small answers wait for their bytes' time
    #: on it, as on a real link, and the proxy's own delays are made up for.
    BURST = 4096

    def __init__(self, target: int, mbit: float) -> None:
        rate = mbit * 1e6 / 8
        self.target = target
        self.buckets = (TokenBucket(rate, self.BURST), TokenBucket(rate, self.BURST))
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ThrottledLink:
        self.thread.start()
        if not self.ready.wait(10):
            raise SystemExit("the throttling proxy did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shut(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _shut(self) -> None:
        """Stop listening, and close the connections still open: their pumps end."""
        self.server.close()
        for writer in self.writers:
            writer.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers.update((writer, up_writer))
        up, down = self.buckets
        await asyncio.gather(self._pump(reader, up_writer, up), self._pump(up_reader, writer, down))

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bucket: TokenBucket
    ) -> None:
        try:
            while data := await reader.read(self.PIECE):
                await bucket.take(len(data))
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()


def _decoder(coding: str | None) -> Callable[[bytes], bytes]:
    if coding == "zstd":
        return lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if coding == "gzip":
        return lambda data: zlib.decompress(data, 31)
    return lambda data: data


def fetch_all(port: int, paths: list[str], encoding: str) -> tuple[float, int]:
    """Seconds to GET and decode every path in turn on one connection, and bytes sent."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    sent = 0
    try:
        started = time.perf_counter()
        for path in paths:
            conn.request("GET", path, headers={"accept-encoding": encoding})
            answer = conn.getresponse()
            data = answer.read()
            assert answer.status == 200, (path, answer.status)
            _decoder(answer.getheader("content-encoding"))(data)
            sent += len(data)
        return time.perf_counter() - started, sent
    finally:
        conn.close()


def slow_link(port: int, names: list[str], big_url: str, mbit: float, repeat: int) -> None:
    """Fetching arrays through a throttled link: compressed vs raw, time and bytes."""
    print(f"\nthrough a {mbit:g} Mbit/s link (ours = compressed, baseline = raw)")
    row("", "ours", "baseline", 1.0, "")
    with ThrottledLink(port, mbit) as link:
        cases = []
        for name in names:
            _, listing, _ = request(port, "GET", f"/stores/{name}/keys?limit=10000")
            paths = [entry["url"] for entry in json.loads(listing)["keys"]]
            cases.append((f"{name}: every array ({len(paths)})", paths, repeat))
        cases.append((f"{big_url.rsplit('/', 1)[-1]} array", [big_url], 1))
        for label, paths, times in cases:
            results: dict[str, tuple[float, int]] = {}
            for _ in range(times):  # alternating, best of each
                for encoding in ("identity", "zstd", "gzip"):
                    took, sent = fetch_all(link.port, paths, encoding)
                    if encoding not in results or took < results[encoding][0]:
                        results[encoding] = (took, sent)
            raw_time, raw_sent = results["identity"]
            for encoding in ("zstd", "gzip"):
                took, sent = results[encoding]
                row(
                    f"{label}, {encoding} (ms)",
                    f"{took * 1e3:,.1f}",
                    f"{raw_time * 1e3:,.1f}",
                    took / raw_time,
                )
                row(f"{label}, {encoding} (bytes)", f"{sent:,}", f"{raw_sent:,}", sent / raw_sent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--link-mbit", type=float, default=100.0)
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
        slow_link(port, [path.stem for path in trees], url, args.link_mbit, args.repeat)


if __name__ == "__main__":
    main()
