"""Scaling out: workers, the S3 backend and the PostgreSQL index, each beside a baseline.

    python benchmarks/scale_bench.py [--only SECTION ...] [--repeat 3] [--seconds 5]

Starts what it measures itself: the real server (``python -m app``), a moto S3
server and a PostgreSQL server (the test suite's ``tests/_s3.py`` and
``tests/_postgres.py``). Sections (``--only``):

    workers   GET /stores/NAME/keys (wrk), KASTORE_WORKERS=2        vs 1 worker
              (local backend; on a 2-core machine wrk takes a share)
    download  a 64 MiB and a 4 KiB array through the S3 backend    vs a plain ranged GET
              (the large one by curl, the small one under wrk)          of the same bytes
                                                                        from the S3 server
    upload    PUT /stores/NAME of a 2 and a 64 MiB file, S3 backend vs a plain PUT of the
                                                                        file to the S3 server
    index     GET /stores/NAME/keys and GET /stores (100 stores)   vs the same on SQLite
              on PostgreSQL (wrk; local blobs for both)

The S3 backend runs with its index in PostgreSQL, as replicas would. The S3
server is moto (in memory, one process): it bounds both sides, so the ratios
say what the service adds to the S3 traffic, not how fast S3 is. moto answers
requests only when signed: the baselines are plain curl and wrk requests to
presigned URLs (boto3's, which moto depends on).
Runs alternate between ours and the baseline and each figure is the best of
``--repeat``; the machine is shared and noisy, so read ratios, not absolute
figures. Needs ``curl`` and ``wrk`` (``apt-get install -y curl wrk``),
PostgreSQL's server and ``moto[server]`` (``make test`` installs them).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
import numpy as np
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]

import kastore
from kastore._format import HEADER, HEADER_SIZE, ITEM_DESCRIPTOR, ITEM_SIZES

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.storage.s3_blobs import PART_SIZE, UPLOAD_CONCURRENCY  # noqa: E402
from tests._postgres import fresh_database, postgres_server  # noqa: E402
from tests._s3 import create_bucket, s3_credentials, s3_server  # noqa: E402

MiB = 1 << 20
TSKIT_FILE = Path("/work/shared/testdata/tskit/single_population.trees")
SECTIONS = ("workers", "download", "upload", "index")
#: Stores listed by the index section's GET /stores.
STORES = 100


# Output


def header(title: str) -> None:
    print(f"\n{title}\n{'':<52} {'ours':>14} {'baseline':>14} {'ratio':>8}  target", flush=True)


def row(label: str, ours: str, base: str, ratio: float, target: str = "") -> None:
    print(f"{label:<52} {ours:>14} {base:>14} {ratio:>7.2f}x  {target}", flush=True)


def rate(requests: float) -> str:
    return f"{requests:,.0f} req/s"


def mbps(nbytes_per_s: float) -> str:
    return f"{nbytes_per_s / 1e6:,.0f} MB/s"


# Measuring


def alternate(repeat: int, runs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Best rate (higher is better) of each run; the order rotates every round."""
    best = dict.fromkeys(runs, 0.0)
    names = list(runs)
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            best[name] = max(best[name], runs[name]())
    return best


def curl(*args: str, expect: tuple[int, ...] = (200,)) -> tuple[float, int, int]:
    """One request with curl, the answer thrown away: (seconds, downloaded, uploaded)."""
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total} %{size_download} %{size_upload}",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    fields = result.stdout.split()
    if result.returncode != 0 or len(fields) != 4 or int(fields[0]) not in expect:
        raise RuntimeError(f"curl {' '.join(args)}: {result.stdout!r} {result.stderr.strip()}")
    return float(fields[1]), int(float(fields[2])), int(float(fields[3]))


def wrk(url: str, seconds: int, *, connections: int = 32, headers: tuple[str, ...] = ()) -> float:
    """Requests/s of ``url`` under wrk (two threads); warns of errors or non-2xx answers."""
    options = [arg for value in headers for arg in ("-H", value)]
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", *options, url],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if found is None:
        raise RuntimeError(f"wrk {url}: no Requests/sec in {result.stdout!r}")
    for line in result.stdout.splitlines():
        if "Non-2xx" in line or "Socket errors" in line:
            print(f"   warning: wrk {url}: {line.strip()}", file=sys.stderr)
    return float(found.group(1))


# Servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def service(data_dir: Path, **env: str) -> Iterator[str]:
    """``python -m app`` on a free port with ``KASTORE_*`` settings ``env``; yields its URL."""
    port = free_port()
    environ = {key: value for key, value in os.environ.items() if not key.startswith("KASTORE_")}
    environ |= {
        "KASTORE_DATA_DIR": str(data_dir),
        "KASTORE_PORT": str(port),
        "KASTORE_FSYNC": "false",
        "KASTORE_LOG_LEVEL": "warning",
        **{f"KASTORE_{name.upper()}": value for name, value in env.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app"], cwd=ROOT, env=environ, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not healthy(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start (settings {env})")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def healthy(port: int) -> bool:
    with contextlib.suppress(OSError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        finally:
            conn.close()
    return False


def put(url: str, path: Path) -> None:
    curl("-T", str(path), url, expect=(200, 201))


# Files


def tskit_or_generated(folder: Path) -> Path:
    """The shared tskit file (62 keys), or a file of as many small arrays without it."""
    if TSKIT_FILE.is_file():
        return TSKIT_FILE
    path = folder / "keys.kas"
    kastore.dump({f"column/{i:02d}": np.arange(i * 100, dtype=np.int32) for i in range(62)}, path)
    return path


def span(content: bytes, key: str) -> tuple[int, int]:
    """Where the array ``key`` lies in a kastore file: [start, end)."""
    n = HEADER.unpack_from(content)[3]
    for item in np.frombuffer(content, ITEM_DESCRIPTOR, n, offset=HEADER_SIZE):
        key_start = int(item["key_start"])
        if content[key_start : key_start + int(item["key_len"])] == key.encode():
            start = int(item["array_start"])
            return start, start + int(item["array_len"]) * int(ITEM_SIZES[int(item["type"])])
    raise KeyError(key)


def blob_key(content: bytes) -> str:
    digest = hashlib.sha256(content).hexdigest()
    return f"blobs/{digest[:2]}/{digest}.kas"


# Sections


def bench_workers(folder: Path, repeat: int, seconds: int) -> None:
    header("Workers: key listing on the local backend (wrk -t2 -c32)")
    source = tskit_or_generated(folder)
    data = folder / "workers"
    with service(data, workers="1") as one:
        put(f"{one}/stores/sim", source)
    with service(data, workers="1") as one, service(data, workers="2") as two:
        path = "/stores/sim/keys"
        for url in (one, two):
            wrk(url + path, 1)  # warm every worker's cache
        best = alternate(
            repeat,
            {"two": lambda: wrk(two + path, seconds), "one": lambda: wrk(one + path, seconds)},
        )
    row(
        "GET /stores/NAME/keys, 2 workers vs 1",
        rate(best["two"]),
        rate(best["one"]),
        best["two"] / best["one"],
        f"{os.cpu_count()} cores, wrk included",
    )


def bench_download(folder: Path, s3: S3, repeat: int, seconds: int) -> None:
    header("Array download through the S3 backend vs a ranged GET from the S3 server")
    rng = np.random.default_rng(1)
    # Two stores: moto reads a whole object to answer any range of it, so a small
    # array lives in a small file, where that costs little.
    files: dict[str, dict[str, np.ndarray]] = {
        "large": {"large": rng.random(64 * MiB // 8), "n": np.arange(10)},
        "small": {"small": rng.integers(0, 1 << 30, 1024), "n": np.arange(10)},
    }
    with s3.service(folder / "download") as url:
        for key, arrays in files.items():
            path = folder / f"{key}.kas"
            kastore.dump(arrays, path)
            content = path.read_bytes()
            put(f"{url}/stores/{key}", path)
            start, end = span(content, key)
            ours = f"{url}/stores/{key}/arrays/{key}"
            direct = s3.presigned("get_object", blob_key(content))
            byte_range = f"Range: bytes={start}-{end - 1}"
            curl(ours)  # opens the store: its header is cached from then on
            show: Callable[[float], str]
            if key == "large":
                best = alternate(repeat, large_downloads(ours, direct, byte_range, end - start))
                label, show = f"large array ({(end - start) / MiB:g} MiB), curl", mbps
            else:
                best = alternate(repeat, small_downloads(ours, direct, byte_range, seconds))
                label, show = f"small array ({end - start:,} bytes), wrk -c8", rate
            ratio = best["ours"] / best["base"]
            row(label, show(best["ours"]), show(best["base"]), ratio, ">= 0.8x")


def large_downloads(
    ours: str, direct: str, byte_range: str, nbytes: int
) -> dict[str, Callable[[], float]]:
    """Bytes/s of one download through the service and straight from the S3 server."""
    return {
        "ours": lambda: nbytes / curl(ours)[0],
        "base": lambda: nbytes / curl("-H", byte_range, direct, expect=(206,))[0],
    }


def small_downloads(
    ours: str, direct: str, byte_range: str, seconds: int
) -> dict[str, Callable[[], float]]:
    """Requests/s through the service and straight from the S3 server."""
    return {
        "ours": lambda: wrk(ours, seconds, connections=8),
        "base": lambda: wrk(direct, seconds, connections=8, headers=(byte_range,)),
    }


def bench_upload(folder: Path, s3: S3, repeat: int) -> None:
    header("Upload through the S3 backend vs a plain PUT to the S3 server (curl -T)")
    # 2 MiB fits in one part (kept in memory, then one PUT to its blob); 64 MiB is a
    # multipart upload to tmp/, then a copy to its blob.
    for mib in (2, 64):
        _bench_upload_size(folder, s3, repeat, mib)


def _bench_upload_size(folder: Path, s3: S3, repeat: int, mib: int) -> None:
    path = folder / f"upload-{mib}.kas"
    rng = np.random.default_rng(2)
    kastore.dump({"data": rng.random(mib * MiB // 8), "salt": np.zeros(1, np.int64)}, path)
    content = bytearray(path.read_bytes())
    salt = span(bytes(content), "salt")[0]
    size = len(content)
    rounds = iter(range(1, 1 << 30))

    def fresh() -> Path:
        # New content every run: a blob already held would be neither copied nor rewritten.
        content[salt : salt + 8] = next(rounds).to_bytes(8, "little")
        path.write_bytes(content)
        return path

    with s3.service(folder / f"upload-{mib}") as url:

        def ours() -> float:
            return size / curl("-T", str(fresh()), f"{url}/stores/upload", expect=(200, 201))[0]

        def base() -> float:
            seconds = curl("-T", str(fresh()), s3.presigned("put_object", "plain.kas"))[0]
            curl("-X", "DELETE", s3.presigned("delete_object", "plain.kas"), expect=(204,))
            return size / seconds

        def same_requests() -> float:
            return size / s3.staged_and_copied(fresh())

        best = alternate(repeat, {"ours": ours, "base": base, "same": same_requests})
    label = f"PUT of a {size / MiB:.0f} MiB file"
    row(label, mbps(best["ours"]), mbps(best["base"]), best["ours"] / best["base"], ">= 0.7x")
    if mib > 2:
        row(
            "  vs the same S3 requests made by boto3",
            mbps(best["ours"]),
            mbps(best["same"]),
            best["ours"] / best["same"],
            "what the service adds",
        )


def bench_index(folder: Path, postgres: str, repeat: int, seconds: int) -> None:
    header("Index: PostgreSQL vs SQLite (local blobs, wrk -t2 -c32)")
    source = tskit_or_generated(folder)
    small = folder / "small.kas"
    kastore.dump({"x": np.arange(10)}, small)
    with (
        fresh_database(postgres) as database,
        service(folder / "sqlite") as sqlite,
        service(folder / "postgres", index_url=database) as pg,
    ):
        for url in (sqlite, pg):
            put(f"{url}/stores/sim", source)
            for i in range(STORES - 1):
                put(f"{url}/stores/s{i:03d}", small)
        for path, label in (
            ("/stores/sim/keys", "GET /stores/NAME/keys"),
            (f"/stores?limit={STORES}", f"GET /stores ({STORES} stores)"),
        ):
            for url in (sqlite, pg):
                wrk(url + path, 1)
            best = alternate(
                repeat, {"pg": loaded(pg + path, seconds), "sqlite": loaded(sqlite + path, seconds)}
            )
            row(label, rate(best["pg"]), rate(best["sqlite"]), best["pg"] / best["sqlite"])


def loaded(url: str, seconds: int) -> Callable[[], float]:
    """A run of wrk on ``url``: its requests/s."""
    return lambda: wrk(url, seconds)


class S3:
    """The S3 server, a bucket on it, and the settings of services storing there."""

    def __init__(self, endpoint: str, postgres: str) -> None:
        self.endpoint = endpoint
        self.postgres = postgres
        self.bucket = create_bucket(endpoint)
        self.prefix = "bench"
        credentials = s3_credentials(endpoint)
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name=credentials["AWS_REGION"],
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        )

    def staged_and_copied(self, path: Path) -> float:
        """Seconds to make the S3 requests an upload through the backend makes, with boto3.

        A multipart upload to a temporary key in the backend's parts, as many
        at a time as it sends them, a copy to the blob's key, and a delete:
        the floor of the backend's upload on this server.
        """
        config = TransferConfig(
            multipart_threshold=PART_SIZE,
            multipart_chunksize=PART_SIZE,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        staged, blob = f"{self.prefix}/tmp/plain.upload", f"{self.prefix}/blobs/plain.kas"
        began = time.perf_counter()
        self._client.upload_file(str(path), self.bucket, staged, Config=config)
        source = {"Bucket": self.bucket, "Key": staged}
        self._client.copy_object(Bucket=self.bucket, Key=blob, CopySource=source)
        self._client.delete_object(Bucket=self.bucket, Key=staged)
        seconds = time.perf_counter() - began
        self._client.delete_object(Bucket=self.bucket, Key=blob)
        return seconds

    def presigned(self, method: str, key: str) -> str:
        """A URL for one plain request ``method`` (``get_object``...) of ``prefix/key``."""
        params = {"Bucket": self.bucket, "Key": f"{self.prefix}/{key}"}
        url: str = self._client.generate_presigned_url(method, Params=params, ExpiresIn=3600)
        return url

    @contextlib.contextmanager
    def service(self, data_dir: Path) -> Iterator[str]:
        """The service on this bucket and a fresh PostgreSQL database."""
        with fresh_database(self.postgres) as database:
            saved = dict(os.environ)
            os.environ.update(s3_credentials(self.endpoint))
            try:
                with service(
                    data_dir,
                    blob_url=f"s3://{self.bucket}/{self.prefix}",
                    s3_endpoint_url=self.endpoint,
                    index_url=database,
                ) as url:
                    yield url
            finally:
                os.environ.clear()
                os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    args = parser.parse_args()
    missing = [tool for tool in ("curl", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"needs {' and '.join(missing)}: apt-get install -y curl wrk")
    print(f"scale_bench: {os.cpu_count()} cores, best of {args.repeat}; read the ratios")
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres_server() as postgres,
        s3_server() as endpoint,
    ):
        folder = Path(tmp)
        s3 = S3(endpoint, postgres)
        print(f"S3: moto at {urlsplit(endpoint).netloc}; PostgreSQL at {urlsplit(postgres).netloc}")
        if "workers" in args.only:
            bench_workers(folder, args.repeat, args.seconds)
        if "download" in args.only:
            bench_download(folder, s3, args.repeat, args.seconds)
        if "upload" in args.only:
            bench_upload(folder, s3, args.repeat)
        if "index" in args.only:
            bench_index(folder, postgres, args.repeat, args.seconds)


if __name__ == "__main__":
    main()
