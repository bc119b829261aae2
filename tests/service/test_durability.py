"""What must hold under crashes and crowds, against the real server.

- ``kill -9`` in the middle of uploads, replacements and deletes loses nothing
  that was acknowledged, and corrupts nothing: after a restart each store
  holds its last acknowledged content byte for byte (or, for an operation
  under way at the kill, its outcome), and no stray file is left.
- Many clients at once, each checking every byte it gets back: no errors.

Each test is bounded in time (a few seconds of traffic).
"""

from __future__ import annotations

import hashlib
import io
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

import kastore

from ._server import Server

pytestmark = pytest.mark.e2e

WRITERS = 4
#: What a kill leaves is collected after this long (short, so the test need not wait).
GRACE_SECONDS = 1.0
KILLS = 3
TRAFFIC_SECONDS = 1.5


def _content(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    kastore.dump(
        {
            "values": rng.integers(0, 1 << 30, size // 8, dtype=np.int64),
            "seed": np.array([seed]),
            "nested/key": rng.random(50),
        },
        out,
    )
    return out.getvalue()


#: What a name holds: the sha256 of its content, or None once deleted.
State = str | None


@dataclass
class Writer:
    """A client thread: uploads, replaces and deletes its own names; remembers what was acked."""

    index: int
    base_url: httpx.URL
    acked: dict[str, State] = field(default_factory=dict)
    in_flight: tuple[str, State] | None = None
    contents: dict[str, bytes] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    acked_ops: int = 0

    def run(self, stop: threading.Event, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=self.base_url, timeout=30.0) as client:
            while not stop.is_set() and self.in_flight is None:
                name = f"w{self.index}-{int(rng.integers(0, 6))}"
                current = self.acked.get(name)
                if current is not None and rng.random() < 0.3:
                    self._do(client, name, None)
                else:
                    content = _content(int(rng.integers(0, 1 << 30)), int(rng.integers(1, 4)) << 20)
                    digest = hashlib.sha256(content).hexdigest()
                    self.contents[digest] = content
                    self._do(client, name, digest)

    def _do(self, client: httpx.Client, name: str, target: State) -> None:
        self.in_flight = (name, target)
        try:
            if target is None:
                answer = client.delete(f"/stores/{name}")
                ok = answer.status_code == 204
            else:
                answer = client.put(f"/stores/{name}", content=self.contents[target])
                ok = answer.status_code in (200, 201) and answer.json()["sha256"] == target
        except httpx.TransportError:
            return  # the server died under us: this one stays in flight, and the thread stops
        if not ok:
            self.failures.append(f"{name}: {answer.status_code} {answer.text[:200]}")
        else:
            self.acked[name] = target
            self.acked_ops += 1
        self.in_flight = None


def _check_after_restart(server: Server, writers: list[Writer]) -> dict[str, str]:
    client = server.client
    listed = client.get("/stores", params={"limit": 1000}).json()
    on_server = {store["name"]: store["sha256"] for store in listed["stores"]}
    for writer in writers:
        names = set(writer.acked) | ({writer.in_flight[0]} if writer.in_flight else set())
        for name in names:
            allowed = {writer.acked.get(name)}
            if writer.in_flight is not None and writer.in_flight[0] == name:
                allowed.add(writer.in_flight[1])
            found = on_server.get(name)
            assert found in allowed, (name, found, allowed)
            if found is not None:
                body = client.get(f"/stores/{name}/file").content
                assert hashlib.sha256(body).hexdigest() == found, name
                assert body == writer.contents[found], name
    assert set(on_server) <= {name for writer in writers for name in writer.acked} | {
        writer.in_flight[0] for writer in writers if writer.in_flight
    }
    # What the kill left is collected once older than the grace period.
    deadline = time.monotonic() + 10 * GRACE_SECONDS
    while True:
        leftovers = list((server.data_dir / "tmp").iterdir())
        blobs = {path.stem for path in (server.data_dir / "blobs").glob("??/*.kas")}
        if (not leftovers and blobs == set(on_server.values())) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert leftovers == []
    assert blobs == set(on_server.values()), "a blob no store points at, or a store without one"
    return on_server


def test_kill_9_during_writes_loses_nothing_acknowledged(tmp_path: Path) -> None:
    writers: list[Writer] = []
    acknowledged = 0
    for cycle in range(KILLS):
        server = Server(
            tmp_path / "data",
            tmp_path / f"server-{cycle}.log",
            env={"KASTORE_GC_GRACE_SECONDS": str(GRACE_SECONDS)},
        )
        try:
            server.start()
            if writers:
                on_server = _check_after_restart(server, writers)
            else:
                writers = [Writer(i, server.client.base_url) for i in range(WRITERS)]
            for writer in writers:
                writer.base_url = server.client.base_url
                if writer.in_flight is not None:
                    # The kill decided the unanswered operation one way or the
                    # other (checked above): carry on from what the server holds.
                    name = writer.in_flight[0]
                    writer.acked[name] = on_server.get(name)
                writer.in_flight = None
            stop = threading.Event()
            threads = [
                threading.Thread(target=writer.run, args=(stop, 1000 * cycle + writer.index))
                for writer in writers
            ]
            before = sum(writer.acked_ops for writer in writers)
            for thread in threads:
                thread.start()
            time.sleep(TRAFFIC_SECONDS)
            deadline = time.monotonic() + 10  # a loaded machine: wait for some acks
            while sum(writer.acked_ops for writer in writers) == before:
                assert time.monotonic() < deadline, "no write was acknowledged"
                time.sleep(0.05)
            server.stop(signal.SIGKILL)
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
                assert not thread.is_alive()
            acknowledged += sum(writer.acked_ops for writer in writers) - before
        finally:
            server.close()
    for writer in writers:
        assert not writer.failures, writer.failures
    assert acknowledged >= KILLS
    final = Server(
        tmp_path / "data",
        tmp_path / "server-final.log",
        env={"KASTORE_GC_GRACE_SECONDS": str(GRACE_SECONDS)},
    )
    try:
        final.start()
        _check_after_restart(final, writers)
    finally:
        final.close()


CLIENTS = 16
CROWD_SECONDS = 4.0


def test_many_clients_at_once_get_every_byte_right(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", tmp_path / "server.log", env={"KASTORE_FSYNC": "false"})
    try:
        server.start()
        shared = {f"shared-{i}": _content(i, 256 << 10) for i in range(4)}
        for name, content in shared.items():
            assert server.client.put(f"/stores/{name}", content=content).status_code == 201
        expected = {name: kastore.loads(content) for name, content in shared.items()}
        errors: list[str] = []
        counts = [0] * CLIENTS
        deadline = time.monotonic() + CROWD_SECONDS

        def client_run(i: int) -> None:
            rng = np.random.default_rng(i)
            with httpx.Client(base_url=server.client.base_url, timeout=30.0) as client:
                while time.monotonic() < deadline:
                    try:
                        _one_request(client, rng, i, shared, expected)
                    except AssertionError as err:
                        errors.append(f"client {i}: {err}")
                    except httpx.HTTPError as err:
                        errors.append(f"client {i}: {err!r}")
                    counts[i] += 1

        threads = [threading.Thread(target=client_run, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors[:5]
        assert sum(counts) > 100, counts
        assert "Traceback" not in server.output()
    finally:
        server.close()


def _one_request(
    client: httpx.Client,
    rng: np.random.Generator,
    i: int,
    shared: dict[str, bytes],
    expected: dict[str, kastore.Store],
) -> None:
    name = f"shared-{int(rng.integers(0, len(shared)))}"
    store = expected[name]
    what = rng.random()
    if what < 0.3:
        key = ["values", "seed", "nested/key"][int(rng.integers(0, 3))]
        answer = client.get(f"/stores/{name}/arrays/{key}")
        assert answer.status_code == 200, answer.text
        assert answer.content == store[key].tobytes(), (name, key)
    elif what < 0.45:
        n = len(store["values"])
        start, stop = sorted(int(x) for x in rng.integers(0, n, 2))
        answer = client.get(
            f"/stores/{name}/arrays/values",
            params={"format": "json", "start": start, "stop": stop},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"] == store["values"][start:stop].tolist()
    elif what < 0.6:
        answer = client.get(f"/stores/{name}/keys")
        assert answer.status_code == 200, answer.text
        assert [entry["key"] for entry in answer.json()["keys"]] == list(store)
    elif what < 0.7:
        answer = client.get(f"/stores/{name}/file")
        assert answer.status_code == 200
        assert answer.content == shared[name]
    else:
        # A private store: written, read back whole, and deleted, or replaced.
        own = f"own-{i}"
        content = _content(int(rng.integers(0, 1 << 30)), int(rng.integers(1, 64)) << 10)
        answer = client.put(f"/stores/{own}", content=content)
        assert answer.status_code in (200, 201), answer.text
        assert client.get(f"/stores/{own}/file").content == content
        with kastore.loads(content) as mine:
            got = client.get(f"/stores/{own}/arrays/values").content
            assert got == mine["values"].tobytes()
        if rng.random() < 0.5:
            assert client.delete(f"/stores/{own}").status_code == 204
            assert client.get(f"/stores/{own}").status_code == 404
