"""Speed and memory of the HTTP service, each figure beside a baseline measured in this run.

    python benchmarks/service_bench.py [--quick] [--only SECTION ...] [--repeat 3]

Starts the real server (``python -m app``, one worker, a temporary data
directory) and, for baselines, nginx serving the same bytes with sendfile and a
trivial FastAPI app (``benchmarks/_trivial_app.py``) under the same uvicorn.
Sections (``--only``):

    download  raw download of one large float64 array      vs nginx, static file
                                                              (sendfile on, and off)
    keys      GET /stores/NAME/keys of a tskit file (wrk)   vs FastAPI ``/ping``
    json      ?format=json of 5 million float64             vs json / orjson in-process
    upload    PUT and multipart POST of a large file        vs a naive stream-to-file
                                                              endpoint and sha256 alone
    rss       peak RssAnon of the server while a large store is uploaded and read
    million   /healthz latency while another client opens and lists a store of
              1,000,000 keys for the first time        vs the same server idle;
              the memory that store holds, and a cold single-array GET

Clients are ``curl -o /dev/null`` (transfers) and ``wrk`` (requests/s); runs
alternate between ours and the baseline, and each figure is the best of
``--repeat``. The machine is shared and noisy, so read ratios, not absolute
figures. Needs ``curl``, ``nginx`` and ``wrk`` (``apt-get install -y nginx wrk``);
rows whose tool is missing are skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import numpy as np
import orjson

import kastore

MiB = 1 << 20
GiB = 1 << 30
ROOT = Path(__file__).resolve().parent.parent
TSKIT_FILE = Path("/work/shared/testdata/tskit/single_population.trees")
SECTIONS = ("download", "keys", "json", "upload", "rss", "million")
INSTALL_HINT = "apt-get update && apt-get install -y nginx wrk curl"


# Output


def header() -> None:
    print(f"{'':<50} {'ours':>14} {'baseline':>14} {'ratio':>8}  target")


def row(label: str, ours: str, base: str, ratio: float | None, target: str) -> None:
    shown = f"{ratio:>7.2f}x" if ratio is not None else f"{'-':>8}"
    print(f"{label:<50} {ours:>14} {base:>14} {shown}  {target}", flush=True)


def note(text: str) -> None:
    print(f"   {text}", flush=True)


def gbps(rate: float) -> str:
    return f"{rate / 1e9:.2f} GB/s"


def mbps(rate: float) -> str:
    return f"{rate / 1e6:.0f} MB/s"


def mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:.0f} MB"


# Measuring


def alternate(
    repeat: int,
    runs: dict[str, Callable[[], float]],
    setup: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Best rate (higher is better) of each run; the order rotates every round."""
    best = dict.fromkeys(runs, 0.0)
    names = list(runs)
    for round_ in range(repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if setup is not None:
                setup()
            best[name] = max(best[name], runs[name]())
    return best


@dataclass(frozen=True)
class Transfer:
    status: int
    seconds: float
    downloaded: int
    uploaded: int


def curl(*args: str, expect: tuple[int, ...] = (200,)) -> Transfer:
    """One request with curl, the body thrown away; raise unless its status is expected."""
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
    status, seconds, down, up = fields
    return Transfer(int(status), float(seconds), int(float(down)), int(float(up)))


def download_rate(url: str, nbytes: int | None = None) -> float:
    done = curl(url)
    if nbytes is not None and done.downloaded != nbytes:
        raise RuntimeError(f"{url}: expected {nbytes} bytes, got {done.downloaded}")
    return done.downloaded / done.seconds


def wrk(url: str, seconds: int, *, connections: int = 32, threads: int = 2) -> float:
    """Requests/s of ``url`` under wrk."""
    result = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Requests/sec:\s+([\d.]+)", result.stdout)
    if found is None:
        raise RuntimeError(f"wrk {url}: no Requests/sec in {result.stdout!r}")
    for problem in ("Non-2xx", "Socket errors"):
        if problem in result.stdout:
            line = next(ln for ln in result.stdout.splitlines() if problem in ln)
            print(f"   warning: wrk {url}: {line.strip()}", file=sys.stderr)
    return float(found.group(1))


def rss_anon(pid: int) -> int:
    """The process's RssAnon in bytes (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else 0


class RssSampler:
    """Peak RssAnon of a process, sampled every ``interval`` seconds on a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_anon(self.pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon(self.pid))


# Processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A server in a subprocess, on its own port, stopped when the context ends."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        log: Path,
        ready_path: str = "/",
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.log = log
        self.ready_path = ready_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> Server:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.proc.returncode}:\n{self.log_tail()}"
                )
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            try:
                conn.request("GET", self.ready_path)
                if conn.getresponse().status < 500:
                    return
            except OSError:
                pass
            finally:
                conn.close()
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        return ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def uvicorn_choice() -> str:
    """What uvicorn's "auto" loop and HTTP settings pick in this environment."""
    import uvicorn

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http_impl = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn {uvicorn.__version__} (loop={loop}, http={http_impl}, 1 worker)"


def find_nginx() -> str | None:
    """nginx on the PATH, or where Debian puts it (``/usr/sbin`` is not on every PATH)."""
    candidates = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
    return shutil.which("nginx") or next((p for p in candidates if os.path.exists(p)), None)


NGINX_CONF = """\
{user}daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        # The same file copied through user space, as a server without sendfile must.
        location /copy/ {{
            alias {root}/;
            sendfile off;
            output_buffers 2 1m;
        }}
    }}
}}
"""


class Bench:
    """The run's temporary directory and the servers its sections share."""

    def __init__(self, args: argparse.Namespace, tmp: Path, stack: contextlib.ExitStack) -> None:
        self.args = args
        self.tmp = tmp
        self.stack = stack
        self._servers: dict[str, Server | None] = {}
        self.rng = np.random.default_rng(20240601)

    def _start(self, key: str, make: Callable[[], Server | None]) -> Server | None:
        if key not in self._servers:
            server = make()
            self._servers[key] = server if server is None else self.stack.enter_context(server)
        return self._servers[key]

    def app(
        self, *, fsync: bool = True, fresh: str = "", settings: dict[str, str] | None = None
    ) -> Server:
        """``python -m app`` on its own data directory; ``fresh`` names a separate instance.

        ``settings`` are more ``KASTORE_*`` variables (an instance of their own).
        """
        settings = settings or {}
        key = f"app-fsync={fsync}{fresh}" + "".join(
            f"-{k}={v}" for k, v in sorted(settings.items())
        )

        def make() -> Server:
            port = free_port()
            env = {
                **os.environ,
                "KASTORE_DATA_DIR": str(self.tmp / f"data-{key}"),
                "KASTORE_HOST": "127.0.0.1",
                "KASTORE_PORT": str(port),
                "KASTORE_LOG_LEVEL": "warning",
            }
            if not fsync:
                env["KASTORE_FSYNC"] = "false"
            env.update(settings)
            return Server(
                key,
                [sys.executable, "-m", "app"],
                port=port,
                log=self.tmp / f"{key}.log",
                ready_path="/healthz",
                env=env,
            )

        server = self._start(key, make)
        assert server is not None
        return server

    def trivial(self) -> Server:
        """The baseline FastAPI app, under uvicorn's defaults as ``python -m app`` uses them."""

        def make() -> Server:
            port = free_port()
            sink = self.tmp / "sink"
            spool = self.tmp / "spool"
            sink.mkdir(exist_ok=True)
            spool.mkdir(exist_ok=True)
            env = {**os.environ, "BENCH_SINK_DIR": str(sink), "TMPDIR": str(spool)}
            argv = [sys.executable, "-m", "uvicorn", "benchmarks._trivial_app:app"]
            argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            argv += ["--loop", "auto", "--http", "auto"]
            return Server(
                "trivial",
                argv,
                port=port,
                log=self.tmp / "trivial.log",
                ready_path="/ping",
                env=env,
            )

        server = self._start("trivial", make)
        assert server is not None
        return server

    def nginx(self) -> Server | None:
        """nginx serving ``tmp/www`` with sendfile, one worker; None if it is not installed."""

        def make() -> Server | None:
            binary = find_nginx()
            if binary is None:
                note(f"nginx not found: install it with `{INSTALL_HINT}`; its rows are skipped")
                return None
            prefix = self.tmp / "nginx"
            prefix.mkdir(exist_ok=True)
            port = free_port()
            # As root, workers would switch to "nobody" and could not read our 0700 tmp dir.
            user = "user root;\n" if os.geteuid() == 0 else ""
            conf = prefix / "nginx.conf"
            conf.write_text(
                NGINX_CONF.format(user=user, prefix=prefix, port=port, root=self.tmp / "www")
            )
            argv = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
            return Server("nginx", argv, port=port, log=prefix / "stdout.log")

        return self._start("nginx", make)


def put_store(server: Server, name: str, path: Path) -> None:
    curl("-T", str(path), f"{server.url}/stores/{name}", expect=(200, 201))


def delete_store(server: Server, name: str) -> None:
    curl("-X", "DELETE", f"{server.url}/stores/{name}", expect=(204, 404))


def have(tool: str, rows: str) -> bool:
    if shutil.which(tool):
        return True
    note(f"{tool} not found: install it with `{INSTALL_HINT}`; skipping {rows}")
    return False


# Sections


def bench_download(b: Bench) -> None:
    nbytes = b.args.download_mib * MiB
    print(f"-- raw download of one float64 array of {b.args.download_mib} MiB (curl -o /dev/null)")
    if not have("curl", "the download rows"):
        return
    array = b.rng.random(nbytes // 8)
    kas = b.tmp / "download.kas"
    www = b.tmp / "www"
    www.mkdir(exist_ok=True)
    kastore.dump({"x": array}, kas)
    array.tofile(www / "x.bin")
    del array
    server = b.app()
    put_store(server, "big", kas)
    kas.unlink()
    try:
        runs: dict[str, Callable[[], float]] = {
            "ours": lambda: download_rate(f"{server.url}/stores/big/arrays/x", nbytes)
        }
        nginx = b.nginx()
        if nginx is not None:
            runs["nginx"] = lambda: download_rate(f"{nginx.url}/x.bin", nbytes)
            runs["copy"] = lambda: download_rate(f"{nginx.url}/copy/x.bin", nbytes)
        for run in runs.values():  # warm up: page cache, open-store cache
            run()
        best = alternate(b.args.repeat, runs)
        if nginx is None:
            row("GET arrays/x (raw)", gbps(best["ours"]), "no nginx", None, ">= 0.9x nginx")
        else:
            row(
                "GET arrays/x (raw) vs nginx sendfile, 1 worker",
                gbps(best["ours"]),
                gbps(best["nginx"]),
                best["ours"] / best["nginx"],
                ">= 0.9x",
            )
            row(
                "GET arrays/x (raw) vs nginx, sendfile off",
                gbps(best["ours"]),
                gbps(best["copy"]),
                best["ours"] / best["copy"],
                "info",
            )
    finally:
        delete_store(server, "big")
        (www / "x.bin").unlink(missing_ok=True)


def bench_keys(b: Bench) -> None:
    seconds = b.args.wrk_seconds
    print(f"-- key listing, requests/s (wrk -t2 -c32 -d{seconds}s)")
    note("metrics off: KASTORE_METRICS=false; logged: KASTORE_LOG_LEVEL=info (a JSON line")
    note("per request, to a file); the others count metrics and log warnings only (defaults")
    note("but the log level)")
    if not (have("wrk", "the key listing rows") and have("curl", "the key listing rows")):
        return
    if not TSKIT_FILE.exists():
        note(f"{TSKIT_FILE} not found; skipping the key listing rows")
        return
    servers = {
        "ours": b.app(),
        "nometrics": b.app(settings={"KASTORE_METRICS": "false"}),
        "logged": b.app(settings={"KASTORE_LOG_LEVEL": "info"}),
    }
    trivial = b.trivial()
    urls = {}
    for name, server in servers.items():
        put_store(server, "tskit", TSKIT_FILE)
        urls[name] = f"{server.url}/stores/tskit/keys"
    n_keys = len(json.loads(fetch(urls["ours"]))["keys"])
    urls["ping"] = f"{trivial.url}/ping"
    runs = {name: (lambda url=url: wrk(url, seconds)) for name, url in urls.items()}
    for url in urls.values():
        wrk(url, 1)  # warm up
    best = alternate(b.args.repeat, runs)
    row(
        f"GET keys ({n_keys} keys) vs FastAPI async /ping",
        f"{best['ours']:,.0f} /s",
        f"{best['ping']:,.0f} /s",
        best["ours"] / best["ping"],
        ">= 0.7x",
    )
    row(
        "GET keys, metrics on vs off",
        f"{best['ours']:,.0f} /s",
        f"{best['nometrics']:,.0f} /s",
        best["ours"] / best["nometrics"],
        ">= 0.9x",
    )
    row(
        "GET keys, metrics and request log vs neither",
        f"{best['logged']:,.0f} /s",
        f"{best['nometrics']:,.0f} /s",
        best["logged"] / best["nometrics"],
        "info",
    )


def fetch(url: str) -> bytes:
    """The whole body of a GET, for checks (not timed)."""
    result = subprocess.run(["curl", "-sS", "-f", url], capture_output=True, check=True)
    return result.stdout


def bench_json(b: Bench) -> None:
    n = b.args.json_elements
    print(f"-- JSON of {n:,} float64 (?format=json), MB/s of JSON")
    if not have("curl", "the JSON rows"):
        return
    array = b.rng.random(n)
    kas = b.tmp / "json.kas"
    kastore.dump({"x": array}, kas)
    server = b.app()
    put_store(server, "json", kas)
    kas.unlink()
    url = f"{server.url}/stores/json/arrays/x?format=json"
    body = fetch(url)
    decoded = orjson.loads(body)
    if decoded["length"] != n or decoded["data"][:3] != array[:3].tolist():
        raise RuntimeError(f"{url}: unexpected answer {body[:200]!r}")

    def in_process(encode: Callable[[], bytes | str]) -> Callable[[], float]:
        def run() -> float:
            start = time.perf_counter()
            out = encode()
            return len(out) / (time.perf_counter() - start)

        return run

    runs = {
        "ours": lambda: download_rate(url),
        "json": in_process(lambda: json.dumps(array.tolist())),
        "orjson": in_process(lambda: orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)),
    }
    best = alternate(b.args.repeat, runs)
    row(
        "GET ?format=json vs json.dumps(a.tolist())",
        mbps(best["ours"]),
        mbps(best["json"]),
        best["ours"] / best["json"],
        ">= 400 MB/s",
    )
    row(
        "GET ?format=json vs orjson.dumps(a, NUMPY)",
        mbps(best["ours"]),
        mbps(best["orjson"]),
        best["ours"] / best["orjson"],
        ">= 400 MB/s",
    )
    delete_store(server, "json")


def has_sha_ni() -> bool:
    with contextlib.suppress(OSError):
        return bool(re.search(r"\bsha_ni\b", Path("/proc/cpuinfo").read_text()))
    return False


def bench_upload(b: Bench) -> None:
    nbytes = b.args.upload_mib * MiB
    print(f"-- upload of a {b.args.upload_mib} MiB store (curl -T / curl -F), GB/s")
    note("FSYNC=false: a second server with KASTORE_FSYNC=false; the others flush (default)")
    if not have("curl", "the upload rows"):
        return
    path = b.tmp / "upload.kas"
    kastore.dump({"x": b.rng.random(nbytes // 8)}, path)
    size = path.stat().st_size
    apps = {"fsync": b.app(fsync=True), "nofsync": b.app(fsync=False)}
    trivial = b.trivial()
    sink = b.tmp / "sink" / "upload"
    counter = iter(range(1_000_000))

    def put(server: Server) -> Callable[[], float]:
        return lambda: (
            size / curl("-T", str(path), f"{server.url}/stores/up", expect=(200, 201)).seconds
        )

    def post(server: Server) -> Callable[[], float]:
        def run() -> float:
            name = f"mp-{next(counter)}"
            done = curl(
                "-F", f"file=@{path}", "-F", f"name={name}", f"{server.url}/stores", expect=(201,)
            )
            delete_store(server, name)
            return size / done.seconds

        return run

    def sha256_alone() -> float:
        start = time.perf_counter()
        with open(path, "rb") as f:
            hashlib.file_digest(f, "sha256")
        return size / (time.perf_counter() - start)

    runs = {
        "put": put(apps["fsync"]),
        "put_nofsync": put(apps["nofsync"]),
        "post": post(apps["fsync"]),
        "post_nofsync": post(apps["nofsync"]),
        "sink": lambda: size / curl("-T", str(path), f"{trivial.url}/sink/upload").seconds,
        "form": lambda: size / curl("-F", f"file=@{path}", f"{trivial.url}/form").seconds,
        "sha256": sha256_alone,
    }

    def setup() -> None:
        sink.unlink(missing_ok=True)
        os.sync()  # no run pays for the dirty pages of another

    try:
        best = alternate(b.args.repeat, runs, setup)
    finally:
        sink.unlink(missing_ok=True)
        path.unlink()
        for server in apps.values():
            delete_store(server, "up")
    sha = gbps(best["sha256"])
    for label, key, target in (
        ("PUT", "put", ">= 0.8 GB/s"),
        ("PUT, FSYNC=false", "put_nofsync", ">= 0.8 GB/s"),
        ("multipart POST", "post", ">= 0.4 GB/s"),
        ("multipart, FSYNC=false", "post_nofsync", ">= 0.4 GB/s"),
    ):
        baselines = [("naive stream-to-file", "sink")]
        if key.startswith("post"):
            baselines.append(("FastAPI UploadFile", "form"))
        baselines.append(("sha256 alone", "sha256"))
        for base_label, base in baselines:
            row(
                f"{label} vs {base_label}",
                gbps(best[key]),
                gbps(best[base]),
                best[key] / best[base],
                target,
            )
    if not has_sha_ni():
        note(f"this CPU has no SHA-NI: sha256 alone runs at {sha} in-process, and every upload")
        note("is hashed, so it caps the upload rate whatever else the service does")


def bench_rss(b: Bench) -> None:
    total = b.args.rss_mib * MiB
    n_arrays = 4
    print(f"-- peak RssAnon of the server, a {b.args.rss_mib} MiB store of {n_arrays} arrays")
    if not have("curl", "the memory rows"):
        return
    path = b.tmp / "rss.kas"
    kastore.dump({f"a{i}": b.rng.random(total // n_arrays // 8) for i in range(n_arrays)}, path)
    server = b.app(fresh="-rss")
    with RssSampler(server.pid, interval=0.1) as idle:
        time.sleep(0.5)
    try:
        with RssSampler(server.pid) as upload:
            put_store(server, "rss", path)
        with RssSampler(server.pid) as form:
            curl("-F", f"file=@{path}", "-F", "name=rss-mp", f"{server.url}/stores", expect=(201,))
        with RssSampler(server.pid) as download:
            for i in range(n_arrays):
                download_rate(f"{server.url}/stores/rss/arrays/a{i}", total // n_arrays)
        with RssSampler(server.pid) as whole:
            download_rate(f"{server.url}/stores/rss/file", path.stat().st_size)
    finally:
        path.unlink()
        delete_store(server, "rss")
        delete_store(server, "rss-mp")
    for label, sampler in (
        ("PUT of the store", upload),
        ("multipart POST of the store", form),
        (f"raw GET of its {n_arrays} arrays", download),
        ("GET of the whole file", whole),
    ):
        row(
            f"{label} vs idle server",
            mb(sampler.peak),
            mb(idle.peak),
            sampler.peak / idle.peak,
            "< 200 MB",
        )


class LatencyProbe:
    """``GET /healthz`` back to back on one kept-alive connection, timed, on a thread."""

    def __init__(self, port: int, pause: float = 0.002) -> None:
        self.port = port
        self.pause = pause
        self.times: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            while not self._stop.is_set():
                start = time.perf_counter()
                try:
                    conn.request("GET", "/healthz")
                    answer = conn.getresponse()
                    answer.read()
                except OSError as err:
                    self.errors.append(repr(err))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    continue
                self.times.append(time.perf_counter() - start)
                if answer.status != 200:
                    self.errors.append(f"status {answer.status}")
                self._stop.wait(self.pause)
        finally:
            conn.close()

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def p(self, q: float) -> float:
        return float(np.quantile(np.array(self.times), q)) if self.times else float("nan")

    @property
    def worst(self) -> float:
        return max(self.times, default=float("nan"))


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def million_keys(path: Path, n: int) -> Path:
    """A store of ``n`` keys, one int32 each (83 MB for a million)."""
    kastore.dump({f"key_{i:07d}": np.array([i], dtype=np.int32) for i in range(n)}, path)
    return path


def bench_million(b: Bench) -> None:
    n = b.args.million_keys
    print(f"-- a store of {n:,} keys opened and listed for the first time, /healthz meanwhile")
    if not have("curl", "the million-key rows"):
        return
    path = million_keys(b.tmp / "million.kas", n)
    other = b.tmp / "million-2.kas"
    kastore.dump({f"key_{i:07d}": np.array([i + 1], dtype=np.int32) for i in range(n)}, other)
    size = path.stat().st_size
    server = b.app(fresh="-million")
    put_store(server, "million", path)
    put_store(server, "million-cold", other)
    time.sleep(1.0)  # let the uploads' memory settle
    with LatencyProbe(server.port) as idle:
        time.sleep(3.0)
    held_before = rss_anon(server.pid)
    limit = 10_000
    pages = -(-n // limit)
    with RssSampler(server.pid) as sampler, LatencyProbe(server.port) as busy:
        start = time.perf_counter()
        curl(f"{server.url}/stores/million/keys?limit={limit}")
        first_seconds = time.perf_counter() - start
        for page in range(1, pages):
            curl(f"{server.url}/stores/million/keys?offset={page * limit}&limit={limit}")
        listing_seconds = time.perf_counter() - start
    time.sleep(0.5)
    held_after = rss_anon(server.pid)
    # Another name for the same content holds nothing more.
    put_store(server, "million-again", path)
    curl(f"{server.url}/stores/million-again/keys?limit={limit}")
    time.sleep(0.5)
    held_again = rss_anon(server.pid)
    # A cold single array: the other content, never opened before.
    start = time.perf_counter()
    cold = curl(f"{server.url}/stores/million-cold/arrays/key_0500000")
    cold_seconds = time.perf_counter() - start
    assert cold.downloaded == 4
    start = time.perf_counter()
    with kastore.load(other) as store:
        np.array(store["key_0500000"])
    in_process = time.perf_counter() - start
    for name in ("million", "million-cold", "million-again"):
        delete_store(server, name)

    note(
        f"first page ({limit:,} keys) in {ms(first_seconds)}; all {pages} pages in "
        f"{listing_seconds:.2f} s; {len(busy.times)} /healthz meanwhile, "
        f"{len(busy.errors)} errors"
    )
    row(
        "/healthz p99 while the store is opened and listed",
        ms(busy.p(0.99)),
        ms(idle.p(0.99)),
        busy.p(0.99) / idle.p(0.99),
        "<= 50 ms",
    )
    row(
        "/healthz worst while the store is opened and listed",
        ms(busy.worst),
        ms(idle.worst),
        busy.worst / idle.worst,
        "<= 200 ms",
    )
    row(
        "/healthz median while ... vs the idle server",
        ms(busy.p(0.5)),
        ms(idle.p(0.5)),
        busy.p(0.5) / idle.p(0.5),
        "",
    )
    row(
        f"RssAnon held after listing vs the file ({mb(size)})",
        mb(held_after - held_before),
        mb(size),
        (held_after - held_before) / size,
        "proportional",
    )
    row(
        "peak RssAnon while listing vs before",
        mb(sampler.peak),
        mb(held_before),
        sampler.peak / held_before,
        "",
    )
    row(
        "a second name for the content, RssAnon added",
        mb(held_again - held_after),
        mb(size),
        (held_again - held_after) / size,
        "~0",
    )
    row(
        "cold single-array GET vs kastore.load + one array",
        ms(cold_seconds),
        ms(in_process),
        cold_seconds / in_process,
        "",
    )
    path.unlink()
    other.unlink()


# Main


def check_disk(tmp: Path, need: int) -> None:
    free = shutil.disk_usage(tmp).free
    if free < need:
        raise SystemExit(
            f"{tmp} has {free / GiB:.1f} GiB free; this run needs about {need / GiB:.1f} GiB "
            "(use --quick, smaller sizes, or TMPDIR elsewhere)"
        )


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # so that the servers are stopped on the way out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="run only this section")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per figure")
    parser.add_argument("--download-mib", type=int, help="array size for download (1024)")
    parser.add_argument("--upload-mib", type=int, help="file size for upload (1024)")
    parser.add_argument("--rss-mib", type=int, help="store size for rss (2048)")
    parser.add_argument("--json-elements", type=int, help="float64 for json (5,000,000)")
    parser.add_argument("--wrk-seconds", type=int, help="wrk duration (5)")
    parser.add_argument("--million-keys", type=int, help="keys of the large store (1,000,000)")
    args = parser.parse_args()
    defaults = (
        {
            "download_mib": 64,
            "upload_mib": 64,
            "rss_mib": 256,
            "json_elements": 500_000,
            "wrk_seconds": 1,
            "million_keys": 200_000,
        }
        if args.quick
        else {
            "download_mib": 1024,
            "upload_mib": 1024,
            "rss_mib": 2048,
            "json_elements": 5_000_000,
            "wrk_seconds": 5,
            "million_keys": 1_000_000,
        }
    )
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.repeat = min(args.repeat, 2)
    sections = args.only or list(SECTIONS)

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with (
        tempfile.TemporaryDirectory(prefix="kastore-service-bench-") as tmpdir,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmpdir)
        need = max(
            3 * args.download_mib * MiB * ("download" in sections),
            7 * args.upload_mib * MiB * ("upload" in sections),
            3 * args.rss_mib * MiB * ("rss" in sections),
        )
        check_disk(tmp, need + GiB)
        b = Bench(args, tmp, stack)
        print(
            f"kastore {kastore.__version__}, numpy {np.__version__}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, best of {args.repeat}"
        )
        print(f"server and baseline app: {uvicorn_choice()}")
        header()
        for section in SECTIONS:
            if section in sections:
                globals()[f"bench_{section}"](b)


if __name__ == "__main__":
    main()
