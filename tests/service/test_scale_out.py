"""Several server processes on one storage, as replicas behind a load balancer would be.

Every test runs real ``python -m app`` processes on the same storage, once per
configuration of ``shared_storage``: a shared data directory (local folder
and SQLite), or a bucket of a real S3 server and a PostgreSQL database.

- A write through one process is seen by the very next request to another:
  uploads byte for byte, replacements and deletions at once.
- Downloads racing replacements get one whole content or the other, never a
  mix and never an error.
- ``kill -9`` of one process mid-upload: the other keeps serving, nothing
  acknowledged is lost, and what the kill left is collected.
- ``KASTORE_WORKERS=2``: both worker processes serve, and share the stores.
- A soak (``-m soak``): 16 clients of mixed writes and reads over two
  processes, every byte checked against what its name held at the time.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
import pytest

import kastore
from tests._s3 import bucket_contents, s3_credentials

from ._server import Server

pytestmark = pytest.mark.e2e

#: Seconds of the soak, by configuration; ``KASTORE_SOAK_SECONDS`` overrides both.
SOAK_SECONDS = {"local": 60.0, "s3+postgres": 30.0}
SOAK_CLIENTS = 16
#: Store names the soak's clients share, so that their writes and reads collide.
SOAK_NAMES = 12
#: Distinct contents the soak's uploads choose from (some land under several names).
SOAK_CONTENTS = 16
#: The grace period of the processes whose leftovers a test waits for.
GRACE_SECONDS = 2.0
#: How long a test waits for garbage collection at most.
GC_WAIT = 30.0


# Storage shared by several processes


@dataclass(frozen=True)
class SharedStorage:
    """A storage that several server processes share, and what it holds besides the index."""

    kind: str
    data_dir: Path
    #: What each server process's environment needs to use this storage.
    env: dict[str, str]
    s3_endpoint: str | None = None
    bucket: str = ""
    prefix: str = ""

    def temporaries(self) -> list[str]:
        """Staged uploads and other temporary files or objects, sorted."""
        if self.s3_endpoint is None:
            return sorted(path.name for path in (self.data_dir / "tmp").iterdir())
        return bucket_contents(self.s3_endpoint, self.bucket, f"{self.prefix}/tmp/").objects

    def blobs(self) -> set[str]:
        """The sha256 of every blob stored."""
        if self.s3_endpoint is None:
            return {path.stem for path in (self.data_dir / "blobs").glob("??/*.kas")}
        keys = bucket_contents(self.s3_endpoint, self.bucket, f"{self.prefix}/blobs/").objects
        return {PurePosixPath(key).stem for key in keys}


@pytest.fixture(params=["local", "s3+postgres"])
def shared_storage(request: pytest.FixtureRequest, tmp_path: Path) -> SharedStorage:
    """One storage for several servers: a data directory, or a fresh bucket and database."""
    data_dir = tmp_path / "data"
    if request.param == "local":
        return SharedStorage("local", data_dir, {})
    endpoint: str = request.getfixturevalue("s3_endpoint")
    blob_url: str = request.getfixturevalue("s3_blob_url")
    bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
    env = {
        **s3_credentials(endpoint),
        "KASTORE_BLOB_URL": blob_url,
        "KASTORE_S3_ENDPOINT_URL": endpoint,
        "KASTORE_INDEX_URL": request.getfixturevalue("postgres_db_url"),
    }
    return SharedStorage("s3+postgres", data_dir, env, endpoint, bucket, prefix)


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(shared_storage: SharedStorage, tmp_path: Path) -> Iterator[StartServer]:
    """``start_server(label, **env)``: a started server on the shared storage, closed at the end."""
    servers: list[Server] = []

    def start(label: str, **env: str) -> Server:
        server = Server(
            shared_storage.data_dir, tmp_path / f"{label}.log", env={**shared_storage.env, **env}
        )
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()


# Contents


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Content:
    """A kastore file, its sha256, and the arrays it holds with theirs."""

    data: bytes
    sha256: str
    arrays: dict[str, np.ndarray]
    array_sha256: dict[str, str]

    @classmethod
    def of(cls, data: bytes) -> Content:
        with kastore.loads(data) as store:
            arrays = {key: np.array(store[key]) for key in store}
        hashes = {key: _sha256(array.tobytes()) for key, array in arrays.items()}
        return cls(data, _sha256(data), arrays, hashes)


def generated(seed: int, values: int) -> Content:
    """A file of random arrays: the same keys and dtypes whatever ``seed`` and ``values``."""
    rng = np.random.default_rng(seed)
    return Content.of(
        kastore.dumps(
            {
                "values": rng.integers(-(1 << 40), 1 << 40, values, dtype=np.int64),
                "floats": rng.random(max(1, values // 4)),
                "seed": np.array([seed], dtype=np.int64),
                "nested/bytes": rng.integers(0, 256, 100, dtype=np.uint8),
            }
        )
    )


def _array_url(name: str, key: str) -> str:
    return f"/stores/{name}/arrays/{quote(key, safe='/')}"


def _from_json(data: list[Any], dtype: np.dtype[Any]) -> np.ndarray:
    """An array answered as JSON, NaN (sent as null) included."""
    return np.array([np.nan if value is None else value for value in data], dtype=dtype)


def assert_serves(client: httpx.Client, name: str, content: Content) -> None:
    """``name`` answers with ``content``: its record, file, and arrays raw and as JSON."""
    answer = client.get(f"/stores/{name}")
    assert answer.status_code == 200, answer.text
    assert (answer.json()["sha256"], answer.json()["size"]) == (content.sha256, len(content.data))
    answer = client.get(f"/stores/{name}/file")
    assert answer.status_code == 200, answer.text
    assert answer.content == content.data
    keys = list(content.arrays)
    for key in dict.fromkeys([*keys[:3], keys[len(keys) // 2], keys[-1]]):
        array = content.arrays[key]
        answer = client.get(_array_url(name, key))
        assert answer.status_code == 200, (key, answer.text)
        assert answer.content == array.tobytes(), key
        answer = client.get(_array_url(name, key), params={"format": "json"})
        assert answer.status_code == 200, (key, answer.text)
        assert np.array_equal(
            _from_json(answer.json()["data"], array.dtype), array, equal_nan=array.dtype.kind == "f"
        ), key


def _listing(client: httpx.Client) -> dict[str, str]:
    """Every store's name and sha256, from the listing."""
    answer = client.get("/stores", params={"limit": 1000})
    assert answer.status_code == 200, answer.text
    assert answer.json()["next"] is None
    return {store["name"]: store["sha256"] for store in answer.json()["stores"]}


def _wait_for_collection(shared: SharedStorage, referenced: set[str]) -> None:
    """Wait until no temporary is left and the blobs are exactly ``referenced``."""
    deadline = time.monotonic() + GC_WAIT
    while True:
        temporaries, blobs = shared.temporaries(), shared.blobs()
        if (not temporaries and blobs == referenced) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert temporaries == [], "temporaries were not collected"
    assert blobs - referenced == set(), "blobs no store points at were not collected"
    assert referenced - blobs == set(), "stores whose blob is missing"


# 1. Two servers, one storage


def test_a_write_through_one_server_is_seen_at_once_by_the_other(
    start_server: StartServer, testdata: Path
) -> None:
    a, b = start_server("a"), start_server("b")
    trees = Content.of((testdata / "tskit" / "single_population.trees").read_bytes())
    other = generated(1, 50_000)

    assert a.client.put("/stores/sim", content=trees.data).status_code == 201
    assert_serves(b.client, "sim", trees)
    # B has the file parsed and cached now: a replacement through A must not be missed.
    assert a.client.put("/stores/sim", content=other.data).status_code == 200
    assert_serves(b.client, "sim", other)
    assert b.client.put("/stores/sim", content=trees.data).status_code == 200
    assert_serves(a.client, "sim", trees)

    assert a.client.delete("/stores/sim").status_code == 204
    assert b.client.get(_array_url("sim", "edges/left")).status_code == 404
    assert b.client.get("/stores/sim/file").status_code == 404
    assert b.client.get("/stores/sim").status_code == 404
    assert _listing(b.client) == {}
    for server in (a, b):
        assert "Traceback" not in server.output()


# 2. Replacements under concurrent downloads

REPLACEMENTS = 20
DOWNLOADERS = 4


def test_downloads_racing_replacements_get_one_whole_content_or_the_other(
    start_server: StartServer,
) -> None:
    a, b = start_server("a"), start_server("b")
    first, second = generated(2, 200_000), generated(3, 150_000)
    contents = {content.sha256: content for content in (first, second)}
    assert a.client.put("/stores/flip", content=first.data).status_code == 201
    # What each kind of download may hash to, and which content that means.
    expected = {
        "file": {content.sha256: content.sha256 for content in contents.values()},
        "values": {content.array_sha256["values"]: content.sha256 for content in contents.values()},
        "floats": {content.array_sha256["floats"]: content.sha256 for content in contents.values()},
    }
    seen: collections.Counter[tuple[str, str]] = collections.Counter()
    errors: list[str] = []
    stop = threading.Event()

    def download(i: int) -> None:
        with httpx.Client(base_url=b.client.base_url, timeout=60.0) as client:
            n = i
            while not stop.is_set():
                kind = ["file", "values", "floats"][n % 3]
                n += 1
                try:
                    if kind == "file":
                        answer = client.get("/stores/flip/file")
                    elif kind == "values":
                        answer = client.get(_array_url("flip", "values"))
                    else:
                        answer = client.get(_array_url("flip", "floats"), params={"format": "json"})
                except httpx.HTTPError as err:
                    errors.append(f"{kind}: {err!r}")
                    continue
                if answer.status_code != 200:
                    errors.append(f"{kind}: {answer.status_code} {answer.text[:200]}")
                    continue
                if kind == "floats":
                    got = _sha256(np.array(answer.json()["data"], dtype=np.float64).tobytes())
                else:
                    got = _sha256(answer.content)
                if got not in expected[kind]:
                    errors.append(f"{kind}: a download matching neither content ({got})")
                else:
                    seen[kind, expected[kind][got]] += 1

    threads = [threading.Thread(target=download, args=(i,)) for i in range(DOWNLOADERS)]
    for thread in threads:
        thread.start()
    try:
        last = first
        for round_ in range(REPLACEMENTS):
            last = second if round_ % 2 == 0 else first
            answer = a.client.put("/stores/flip", content=last.data, timeout=60.0)
            assert answer.status_code == 200, answer.text
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    kinds = collections.Counter(error.partition(":")[0] for error in errors)
    assert not errors, f"{len(errors)} errors ({kinds}) in {seen.total()} downloads: {errors[:5]}"
    assert {content for _, content in seen} == set(contents), f"downloads saw {seen}"
    assert _listing(b.client) == {"flip": last.sha256}
    assert_serves(b.client, "flip", last)
    for server in (a, b):
        assert "Traceback" not in server.output()


# 3. kill -9 mid-upload

#: The upload a kill interrupts: big, and sent slowly, so that the kill lands mid-body.
BIG_VALUES = 5_000_000  # int64: 40 MB, and 10 MB of floats
PIECE = 1 << 20
PIECE_PAUSE = 0.05


def test_kill_9_of_one_server_mid_upload_loses_nothing_and_its_leftovers_go(
    start_server: StartServer, shared_storage: SharedStorage
) -> None:
    grace = {"KASTORE_GC_GRACE_SECONDS": str(GRACE_SECONDS)}
    a, b = start_server("a", **grace), start_server("b", **grace)
    acked: dict[str, Content] = {}
    for i in range(4):
        content = generated(10 + i, 20_000)
        answer = (a, b)[i % 2].client.put(f"/stores/kept-{i}", content=content.data)
        assert answer.status_code == 201, answer.text
        acked[f"kept-{i}"] = content
    big = generated(99, BIG_VALUES).data

    halfway = threading.Event()
    killed = threading.Event()

    def slow_body() -> Iterator[bytes]:
        pieces = range(0, len(big), PIECE)
        for n, start in enumerate(pieces):
            if n == len(pieces) // 2:
                halfway.set()
            yield big[start : start + PIECE]
            time.sleep(PIECE_PAUSE)

    outcome: list[object] = []

    def send() -> None:
        try:
            outcome.append(a.client.put("/stores/big", content=slow_body(), timeout=120.0))
        except httpx.TransportError as err:
            outcome.append(err)

    failures: list[str] = []
    after_kill = 0

    def traffic() -> None:
        """Reads of what was acknowledged, and new uploads, through B all along."""
        nonlocal after_kill
        names = list(acked)
        n = 0
        with httpx.Client(base_url=b.client.base_url, timeout=60.0) as client:
            while not stop.is_set():
                n += 1
                name = names[n % len(names)]
                try:
                    if n % 4 == 0:
                        content = generated(1000 + n, 5_000)
                        answer = client.put(f"/stores/during-{n}", content=content.data)
                        if answer.status_code == 201:
                            acked[f"during-{n}"] = content
                    elif n % 4 == 1:
                        answer = client.get(f"/stores/{name}/file")
                        if answer.status_code == 200 and answer.content != acked[name].data:
                            failures.append(f"{name}: wrong file")
                    elif n % 4 == 2:
                        answer = client.get(_array_url(name, "values"))
                        if answer.status_code == 200 and answer.content != (
                            acked[name].arrays["values"].tobytes()
                        ):
                            failures.append(f"{name}: wrong array")
                    else:
                        answer = client.get("/stores")
                except httpx.HTTPError as err:
                    failures.append(f"request {n}: {err!r}")
                    continue
                if answer.status_code not in (200, 201):
                    failures.append(f"request {n}: {answer.status_code} {answer.text[:200]}")
                if killed.is_set():
                    after_kill += 1

    stop = threading.Event()
    threads = [threading.Thread(target=traffic), threading.Thread(target=send)]
    for thread in threads:
        thread.start()
    try:
        assert halfway.wait(timeout=120), "the upload did not get halfway"
        a.stop(signal.SIGKILL)
        killed.set()
        left_by_kill = shared_storage.temporaries()
        deadline = time.monotonic() + 30
        while after_kill < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError), outcome
    assert not failures, failures[:10]
    assert after_kill >= 20, "the surviving server stopped answering"
    if shared_storage.kind == "local":
        assert left_by_kill, "the kill left no staged upload: the test did not interrupt one"

    assert _listing(b.client) == {name: content.sha256 for name, content in acked.items()}
    for name, content in acked.items():
        assert b.client.get(f"/stores/{name}/file").content == content.data, name
    _wait_for_collection(shared_storage, {content.sha256 for content in acked.values()})
    assert "Traceback" not in b.output()


# 4. Two workers in one server


def _children(pid: int) -> set[int]:
    """The processes whose parent is ``pid``."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                children.add(int(entry.name))
    return children


def _accepted_by(server_port: int, pids: set[int]) -> dict[int, int]:
    """Which of ``pids`` holds each connection accepted on ``server_port``: client port -> pid."""
    inodes: dict[int, int] = {}  # socket inode -> client port
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if state == "01" and int(local.split(":")[1], 16) == server_port:  # ESTABLISHED
            inodes[inode] = int(remote.split(":")[1], 16)
    owners = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inode = int(target[len("socket:[") : -1])
                        if inode in inodes:
                            owners[inodes[inode]] = pid
    return owners


CONNECTIONS = 16
#: Rounds of new connections tried until both workers have served some.
CONNECTION_ROUNDS = 4


def test_two_workers_both_serve_and_share_the_stores(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "data",
        tmp_path / "server.log",
        env={"KASTORE_WORKERS": "2", "KASTORE_KEEP_ALIVE_TIMEOUT": "120"},
    )
    clients: list[httpx.Client] = []
    try:
        server.start()
        assert server.process is not None
        port = server.client.base_url.port
        assert port is not None
        contents: dict[str, Content] = {}
        served_by: dict[int, int] = {}  # a connection's client port -> the worker's pid

        def upload(i: int) -> int:
            """Upload a store through connection ``i``; the connection's client port."""
            name = f"through-{i}"
            answer = clients[i].put(f"/stores/{name}", content=contents[name].data)
            assert answer.status_code == 201, answer.text
            address = answer.extensions["network_stream"].get_extra_info("client_addr")
            return int(address[1])

        for _ in range(CONNECTION_ROUNDS):
            first = len(clients)
            for i in range(first, first + CONNECTIONS):
                contents[f"through-{i}"] = generated(100 + i, 50_000)
                clients.append(httpx.Client(base_url=server.client.base_url, timeout=60.0))
            with ThreadPoolExecutor(CONNECTIONS) as pool:
                ports = list(pool.map(upload, range(first, first + CONNECTIONS)))
            workers = _children(server.process.pid)
            owners = _accepted_by(port, workers)
            served_by.update({client_port: owners[client_port] for client_port in ports})
            if len(set(served_by.values())) > 1:
                break
        assert len(workers) >= 2, f"worker processes: {workers}"
        assert len(set(served_by.values())) == 2, f"connections by worker: {served_by}"

        # Every connection (so both workers) reads every store, whichever worker took it.
        def read_all(client: httpx.Client) -> None:
            for name, content in contents.items():
                answer = client.get(f"/stores/{name}/file")
                assert answer.status_code == 200, answer.text
                assert answer.content == content.data, name
                answer = client.get(_array_url(name, "floats"))
                assert answer.content == content.arrays["floats"].tobytes(), name

        with ThreadPoolExecutor(CONNECTIONS) as pool:
            list(pool.map(read_all, clients))
        assert _listing(server.client) == {name: c.sha256 for name, c in contents.items()}
        assert "Traceback" not in server.output()
    finally:
        for client in clients:
            client.close()
        server.close()


# 5. The soak


def _soak_seconds(kind: str) -> float:
    override = os.environ.get("KASTORE_SOAK_SECONDS")
    return float(override) if override else SOAK_SECONDS[kind]


@dataclass(frozen=True, slots=True)
class Write:
    """An upload (``sha256``) or a delete (None) of a name, from its sending to its answer."""

    start: float
    end: float
    sha256: str | None


@dataclass(frozen=True, slots=True)
class Read:
    """What a read of a name found between ``start`` and ``end``.

    ``found`` is the sha256 of the file (``key`` None) or of an array, or
    None for a 404.
    """

    name: str
    start: float
    end: float
    key: str | None
    found: str | None


@dataclass
class History:
    """Every write and read of the soak, to check each read against the writes around it."""

    #: The writes of each name, every name listed before the clients start.
    writes: dict[str, list[Write]]
    reads: list[Read] = field(default_factory=list)

    def possible(self, name: str, start: float, end: float) -> set[str | None]:
        """What ``name`` may have held for a read from ``start`` to ``end``.

        A write is possible unless it was sent after ``end``, or another write
        was sent after its answer and answered before ``start``. Before any
        write, the name is absent.
        """
        writes = [Write(-1.0, -1.0, None), *self.writes[name]]
        superseded_before = max(w.start for w in writes if w.end < start)
        return {w.sha256 for w in writes if w.start < end and w.end >= superseded_before}


@dataclass
class SoakClient:
    """One client thread: a random mix of operations on the shared names."""

    index: int
    base_url: httpx.URL
    contents: list[Content]
    history: History
    errors: list[str]
    counts: collections.Counter[str] = field(default_factory=collections.Counter)

    def run(self, deadline: float) -> None:
        rng = np.random.default_rng(self.index)
        with httpx.Client(base_url=self.base_url, timeout=120.0) as client:
            while time.monotonic() < deadline:
                name = f"soak-{int(rng.integers(0, SOAK_NAMES))}"
                what = float(rng.random())
                try:
                    if what < 0.2:
                        self._upload(
                            client, name, self.contents[int(rng.integers(0, SOAK_CONTENTS))]
                        )
                    elif what < 0.28:
                        self._delete(client, name)
                    elif what < 0.36:
                        self._list(client)
                    elif what < 0.5:
                        self._file(client, name)
                    else:
                        key = ["values", "floats", "seed", "nested/bytes"][int(rng.integers(0, 4))]
                        self._array(client, name, key, as_json=rng.random() < 0.3)
                except httpx.HTTPError as err:
                    self.errors.append(f"client {self.index}: {name}: {err!r}")

    def _upload(self, client: httpx.Client, name: str, content: Content) -> None:
        start = time.monotonic()
        answer = client.put(f"/stores/{name}", content=content.data)
        end = time.monotonic()
        if answer.status_code not in (200, 201) or answer.json()["sha256"] != content.sha256:
            self._unexpected("PUT", name, answer)
            end = float("inf")  # unknown outcome: possible from now on
        self.history.writes[name].append(Write(start, end, content.sha256))
        self.counts["upload"] += 1

    def _delete(self, client: httpx.Client, name: str) -> None:
        start = time.monotonic()
        answer = client.delete(f"/stores/{name}")
        end = time.monotonic()
        if answer.status_code == 404:
            # Absent already: a read checks that the name could be absent then.
            self.history.reads.append(Read(name, start, end, None, None))
        elif answer.status_code != 204:
            self._unexpected("DELETE", name, answer)
            end = float("inf")
        self.history.writes[name].append(Write(start, end, None))
        self.counts["delete"] += 1

    def _list(self, client: httpx.Client) -> None:
        start = time.monotonic()
        answer = client.get("/stores", params={"limit": 1000})
        end = time.monotonic()
        if answer.status_code != 200:
            self._unexpected("GET", "/stores", answer)
            return
        listed = {store["name"]: store["sha256"] for store in answer.json()["stores"]}
        for i in range(SOAK_NAMES):
            name = f"soak-{i}"
            self.history.reads.append(Read(name, start, end, None, listed.get(name)))
        self.counts["list"] += 1

    def _file(self, client: httpx.Client, name: str) -> None:
        start = time.monotonic()
        answer = client.get(f"/stores/{name}/file")
        end = time.monotonic()
        if answer.status_code not in (200, 404):
            self._unexpected("GET file", name, answer)
            return
        found = _sha256(answer.content) if answer.status_code == 200 else None
        self.history.reads.append(Read(name, start, end, None, found))
        self.counts["file"] += 1

    def _array(self, client: httpx.Client, name: str, key: str, *, as_json: bool) -> None:
        start = time.monotonic()
        params = {"format": "json"} if as_json else {}
        answer = client.get(_array_url(name, key), params=params)
        end = time.monotonic()
        if answer.status_code not in (200, 404):
            self._unexpected(f"GET {key}", name, answer)
            return
        found = None
        if answer.status_code == 200:
            if as_json:
                dtype = self.contents[0].arrays[key].dtype
                found = _sha256(_from_json(answer.json()["data"], dtype).tobytes())
            else:
                found = _sha256(answer.content)
        self.history.reads.append(Read(name, start, end, key, found))
        self.counts["json" if as_json else "array"] += 1

    def _unexpected(self, what: str, name: str, answer: httpx.Response) -> None:
        self.errors.append(
            f"client {self.index}: {what} {name}: {answer.status_code} {answer.text[:300]}"
        )


def _wrong_reads(history: History, contents: dict[str, Content]) -> list[str]:
    """Reads that found what their name could not have held at the time."""
    wrong = []
    for read in history.reads:
        possible = history.possible(read.name, read.start, read.end)
        if read.key is not None:
            allowed = {
                None if sha is None else contents[sha].array_sha256[read.key] for sha in possible
            }
        else:
            allowed = possible
        if read.found not in allowed:
            what = "file" if read.key is None else read.key
            wrong.append(f"{read.name} {what}: found {read.found}, possible {allowed}")
    return wrong


@pytest.mark.soak
def test_soak_of_mixed_operations_over_two_servers(
    start_server: StartServer, shared_storage: SharedStorage
) -> None:
    # Garbage collection runs every 10 s (a quarter of the grace period) in both
    # processes, alongside the traffic: it must never take a blob that a name or an
    # upload under way points at. The grace period outlasts any upload here.
    grace = {"KASTORE_GC_GRACE_SECONDS": "40"}
    servers = [start_server("a", **grace), start_server("b", **grace)]
    contents = [
        generated(500 + i, int(np.random.default_rng(i).integers(1_000, 40_000)))
        for i in range(SOAK_CONTENTS)
    ]
    by_sha = {content.sha256: content for content in contents}
    history = History({f"soak-{i}": [] for i in range(SOAK_NAMES)})
    errors: list[str] = []
    clients = [
        SoakClient(i, servers[i % 2].client.base_url, contents, history, errors)
        for i in range(SOAK_CLIENTS)
    ]
    deadline = time.monotonic() + _soak_seconds(shared_storage.kind)
    threads = [threading.Thread(target=client.run, args=(deadline,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=_soak_seconds(shared_storage.kind) + 300)
        assert not thread.is_alive(), "a client hung"
    counts = sum((client.counts for client in clients), collections.Counter[str]())
    assert not errors, f"{len(errors)} errors, {counts}: {errors[:10]}"
    assert set(counts) == {"upload", "delete", "list", "file", "array", "json"}, counts
    wrong = _wrong_reads(history, by_sha)
    assert not wrong, f"{len(wrong)} of {len(history.reads)} reads wrong: {wrong[:10]}"

    # Both servers agree on the end state, which the last writes explain.
    end = time.monotonic()
    final = _listing(servers[0].client)
    assert _listing(servers[1].client) == final
    for i in range(SOAK_NAMES):
        name = f"soak-{i}"
        assert final.get(name) in history.possible(name, end, end), name
    # Every name's blob exists, and every blob has a name once the files of replaced
    # and deleted stores have gone (KASTORE_REMOVAL_DELAY after the change).
    _wait_for_collection(shared_storage, set(final.values()))
    for name, sha256 in final.items():
        assert servers[0].client.get(f"/stores/{name}/file").content == by_sha[sha256].data

    for n, name in enumerate(final):
        assert servers[n % 2].client.delete(f"/stores/{name}").status_code == 204
    assert _listing(servers[1].client) == {}
    _wait_for_collection(shared_storage, set())
    for server in servers:
        assert "Traceback" not in server.output()
