"""The Index contract, run against every backend: SQLite and PostgreSQL.

What a user would notice if a rule of ``app.storage.interfaces`` broke: a
store that lists in the wrong order, a name that points at a removed blob,
an upload whose blob is removed under it, a blob never removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import psycopg
import pytest

from app.errors import StorageUnavailableError
from app.storage.interfaces import Index, LeaseLostError, PutResult, StoreRecord, Totals
from app.storage.postgres_index import PostgresIndex

pytestmark = pytest.mark.anyio

LATER = datetime.now(UTC) + timedelta(days=1)
NAMES = ["a.b", "B", "a-b", "a", "a/b", "é", "Z", "a b"]

#: A snapshot, in one statement, of the rows that break the rules: a doomed
#: sha256 that a name or a lease points at. Both backends share the table names.
VIOLATIONS = """
SELECT 'named and doomed: ' || sha256 FROM doomed WHERE sha256 IN (SELECT sha256 FROM stores)
UNION ALL
SELECT 'leased and doomed: ' || sha256 FROM doomed WHERE sha256 IN (SELECT sha256 FROM leases)
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def record(name: str, content: str, *, size: int = 100, num_keys: int = 3) -> StoreRecord:
    return StoreRecord(
        name, sha(content), size, num_keys, datetime(2000, 1, 1, tzinfo=UTC), ".trees"
    )


@dataclass
class Backend:
    """Opens indexes on one shared store, as separate processes would."""

    opener: Callable[[], Awaitable[Index]]
    violations: Callable[[], list[str]]
    opened: list[Index] = field(default_factory=list)

    async def open(self) -> Index:
        index = await self.opener()
        self.opened.append(index)
        return index


def _sqlite_backend(path: Path) -> Backend:
    async def opener() -> Index:
        from app.storage.sqlite_index import SqliteIndex

        return await SqliteIndex.open(path)

    def violations() -> list[str]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            return [text for (text,) in db.execute(VIOLATIONS)]

    return Backend(opener, violations)


def _postgres_backend(url: str) -> Backend:
    async def opener() -> Index:
        return await PostgresIndex.open(url)

    def violations() -> list[str]:
        with psycopg.connect(url) as conn:
            return [text for (text,) in conn.execute(VIOLATIONS)]

    return Backend(opener, violations)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return _sqlite_backend(tmp_path / "index.sqlite3")
    return _postgres_backend(request.getfixturevalue("postgres_db_url"))


@pytest.fixture
async def index(backend: Backend) -> AsyncIterator[Index]:
    """An index on an empty store; it and any other opened on the store close after."""
    try:
        yield await backend.open()
    finally:
        for opened in backend.opened:
            await opened.close()


async def put(index: Index, rec: StoreRecord, *, replace: bool = False) -> PutResult:
    """An upload as the service makes it: lease the blob, then name it."""
    token = uuid.uuid4().hex
    assert await index.lease(rec.sha256, token, expires=LATER)
    return await index.put(rec, token=token, replace=replace)


async def all_doomed(index: Index) -> list[str]:
    return sorted(await index.doomed(older_than=LATER))


# Names and records


async def test_put_then_get_gives_the_record_with_its_creation_time(index: Index) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    result = await put(index, record("x", "one", size=1234, num_keys=7))
    after = datetime.now(UTC)
    assert result.old is None
    assert result.doomed is None
    assert result.new is not None
    assert result.new.created.tzinfo is not None
    assert result.new.created.utcoffset() == timedelta(0)
    assert result.new.created.microsecond == 0
    assert before <= result.new.created <= after
    got = await index.get("x")
    assert got == result.new
    assert (got.name, got.sha256, got.size, got.num_keys, got.suffix) == (
        "x",
        sha("one"),
        1234,
        7,
        ".trees",
    )
    assert await index.get("y") is None


async def test_page_is_in_byte_order_of_the_names(index: Index) -> None:
    for i, name in enumerate(NAMES):
        await put(index, record(name, f"content {i}"))
    expected = sorted(NAMES, key=lambda name: name.encode())
    assert expected[:4] == ["B", "Z", "a", "a b"]  # byte order, not a locale's
    assert [r.name for r in await index.page(offset=0, limit=100)] == expected
    assert [r.name for r in await index.page(offset=2, limit=3)] == expected[2:5]
    assert await index.page(offset=len(NAMES), limit=10) == []


async def test_count_and_totals_add_up_every_store(index: Index) -> None:
    assert await index.count() == 0
    assert await index.totals() == Totals(0, 0, 0)
    await put(index, record("a", "one", size=10, num_keys=1))
    await put(index, record("b", "two", size=5_000_000_000, num_keys=2))
    await put(index, record("c", "one", size=10, num_keys=1))
    assert await index.count() == 3
    assert await index.totals() == Totals(3, 4, 5_000_000_020)
    assert await index.referenced() == {sha("one"), sha("two")}
    assert await index.readable()


async def test_get_sees_what_another_index_on_the_same_store_committed(
    index: Index, backend: Backend
) -> None:
    other = await backend.open()
    assert await index.get("x") is None
    await put(other, record("x", "one"))
    got = await index.get("x")
    assert got is not None
    assert got.sha256 == sha("one")
    await other.delete("x")
    assert await index.get("x") is None


# Replacing and refusing


async def test_replacing_a_name_dooms_its_old_blob(index: Index) -> None:
    first = await put(index, record("x", "one"))
    result = await put(index, record("x", "two"), replace=True)
    assert result.old == first.new
    assert result.new is not None
    assert result.new.sha256 == sha("two")
    assert result.doomed == sha("one")
    assert (await index.get("x")) == result.new
    assert await all_doomed(index) == [sha("one")]
    assert not await index.lease(sha("one"), "t", expires=LATER)


async def test_replacing_with_the_same_content_dooms_nothing(index: Index) -> None:
    await put(index, record("x", "one"))
    result = await put(index, record("x", "one", num_keys=9), replace=True)
    assert result.doomed is None
    assert result.new is not None
    assert result.new.num_keys == 9
    assert await all_doomed(index) == []


async def test_replacing_keeps_an_old_blob_another_name_points_at(index: Index) -> None:
    await put(index, record("x", "one"))
    await put(index, record("y", "one"))
    result = await put(index, record("x", "two"), replace=True)
    assert result.doomed is None
    assert await all_doomed(index) == []


async def test_a_refused_put_keeps_the_name_and_dooms_the_upload(index: Index) -> None:
    first = await put(index, record("x", "one"))
    result = await put(index, record("x", "two"))
    assert result == PutResult(None, first.new, sha("two"))
    assert await index.get("x") == first.new
    assert await all_doomed(index) == [sha("two")]


async def test_a_refused_put_of_the_same_content_dooms_nothing(index: Index) -> None:
    first = await put(index, record("x", "one"))
    result = await put(index, record("x", "one"))
    assert result == PutResult(None, first.new, None)
    assert await all_doomed(index) == []


async def test_a_refused_put_keeps_a_blob_another_upload_holds(index: Index) -> None:
    await put(index, record("x", "one"))
    assert await index.lease(sha("two"), "other upload", expires=LATER)
    result = await put(index, record("x", "two"))
    assert result.new is None
    assert result.doomed is None
    assert await index.release("other upload") == sha("two")


# Leases


async def test_a_lease_on_a_doomed_blob_is_refused_until_forgotten(index: Index) -> None:
    await put(index, record("x", "one"))
    await index.delete("x")
    assert await all_doomed(index) == [sha("one")]
    assert not await index.lease(sha("one"), "t", expires=LATER)
    await index.forget(sha("one"))
    assert await all_doomed(index) == []
    assert await index.lease(sha("one"), "t", expires=LATER)


async def test_releasing_the_last_hold_dooms_the_blob(index: Index) -> None:
    assert await index.lease(sha("one"), "t1", expires=LATER)
    assert await index.lease(sha("one"), "t2", expires=LATER)
    assert await index.release("t1") is None
    assert await index.release("t2") == sha("one")
    assert await index.release("t2") is None  # ended already
    assert await index.release("never leased") is None


async def test_a_lease_keeps_a_blob_whose_last_name_is_deleted(index: Index) -> None:
    await put(index, record("x", "one"))
    assert await index.lease(sha("one"), "upload", expires=LATER)
    old, doomed = await index.delete("x")
    assert old is not None
    assert doomed is None
    assert await all_doomed(index) == []
    assert await index.release("upload") == sha("one")
    assert await all_doomed(index) == [sha("one")]


async def test_expired_leases_end_and_doom_only_unnamed_blobs(index: Index) -> None:
    now = datetime.now(UTC)
    past = now - timedelta(minutes=1)
    assert await index.lease(sha("stale"), "crashed", expires=past)
    assert await index.lease(sha("named"), "crashed too", expires=past)
    await put(index, record("x", "named"))
    assert await index.lease(sha("fresh"), "running", expires=now + timedelta(hours=1))
    assert await index.expire_leases(now=now) == [sha("stale")]
    assert await index.expire_leases(now=now) == []
    assert await all_doomed(index) == [sha("stale")]
    # The unexpired lease still holds its blob.
    assert await index.doom_orphans([sha("fresh")]) == []
    assert await index.release("running") == sha("fresh")


async def test_a_put_whose_lease_expired_changes_nothing(index: Index) -> None:
    """Its blob may have been collected since: the name must not point at it."""
    now = datetime.now(UTC)
    await put(index, record("x", "old"))
    assert await index.lease(sha("slow"), "slow upload", expires=now - timedelta(minutes=1))
    assert await index.expire_leases(now=now) == [sha("slow")]
    with pytest.raises(LeaseLostError):
        await index.put(record("x", "slow"), token="slow upload", replace=True)
    with pytest.raises(LeaseLostError):
        await index.put(record("y", "slow"), token="slow upload", replace=False)
    assert (await index.get("x")) is not None
    assert (await index.get("x")).sha256 == sha("old")  # type: ignore[union-attr]
    assert await index.get("y") is None
    assert await all_doomed(index) == [sha("slow")]


# Deleting


async def test_deleting_the_last_name_dooms_the_blob(index: Index) -> None:
    first = await put(index, record("x", "one"))
    assert await index.delete("x") == (first.new, sha("one"))
    assert await index.get("x") is None
    assert await index.count() == 0
    assert await index.delete("x") == (None, None)


async def test_a_blob_with_two_names_is_doomed_with_the_second(index: Index) -> None:
    await put(index, record("x", "one"))
    await put(index, record("y", "one"))
    old, doomed = await index.delete("x")
    assert old is not None
    assert doomed is None
    assert await index.get("y") is not None
    _, doomed = await index.delete("y")
    assert doomed == sha("one")


# Garbage collection


async def test_doom_orphans_skips_named_and_leased_blobs(index: Index) -> None:
    await put(index, record("x", "named"))
    assert await index.lease(sha("leased"), "upload", expires=LATER)
    candidates = [sha("named"), sha("leased"), sha("orphan"), sha("orphan 2")]
    assert sorted(await index.doom_orphans(candidates)) == sorted([sha("orphan"), sha("orphan 2")])
    assert await all_doomed(index) == sorted([sha("orphan"), sha("orphan 2")])
    assert await index.doom_orphans([]) == []
    assert await index.get("x") is not None


async def test_a_blob_doomed_already_is_left_to_its_doomer(index: Index) -> None:
    """A second remover could take the blob after it is uploaded again."""
    await put(index, record("x", "gone"))
    assert (await index.delete("x"))[1] == sha("gone")
    assert await index.doom_orphans([sha("gone")]) == []
    assert await all_doomed(index) == [sha("gone")]


async def test_doomed_lists_only_what_was_doomed_before_the_time_given(index: Index) -> None:
    before = datetime.now(UTC) - timedelta(minutes=1)
    assert await index.doom_orphans([sha("orphan")]) == [sha("orphan")]
    assert await index.doomed(older_than=before) == []
    assert await index.doomed(older_than=LATER) == [sha("orphan")]
    await index.forget(sha("orphan"))
    assert await index.doomed(older_than=LATER) == []
    await index.forget(sha("orphan"))  # forgotten twice: no error


# Many processes at once


async def test_concurrent_uploads_and_deletes_never_lose_a_named_blob(backend: Backend) -> None:
    """Two indexes (two processes) race uploads, deletes and garbage collection on few blobs.

    A blob store is simulated as a set: a blob is added when its upload holds
    a lease, and removed when the index dooms it. At every moment no doomed
    blob is named or leased, and at the end every name's blob still exists.
    """
    indexes = [await backend.open(), await backend.open()]
    contents = ["one", "two", "three"]
    names = ["n0", "n1", "n2", "n3"]
    blobs: set[str] = set()
    seen: list[str] = []
    rng = random.Random(1234)

    async def remove(sha256: str | None) -> None:
        if sha256 is not None:
            blobs.discard(sha256)
            await anyio.sleep(0)
            await indexes[rng.randrange(2)].forget(sha256)

    async def upload(index: Index) -> None:
        rec = record(rng.choice(names), rng.choice(contents))
        token = uuid.uuid4().hex
        while not await index.lease(rec.sha256, token, expires=LATER):
            await anyio.sleep(0.001)  # being removed: ask again
        blobs.add(rec.sha256)
        await anyio.sleep(0)
        if rng.random() < 0.2:
            await remove(await index.release(token))  # a failed upload
            return
        result = await index.put(rec, token=token, replace=rng.random() < 0.5)
        await remove(result.doomed)

    async def delete(index: Index) -> None:
        _, doomed = await index.delete(rng.choice(names))
        await remove(doomed)

    async def collect(index: Index) -> None:
        for doomed in await index.doom_orphans(rng.sample([sha(c) for c in contents], 2)):
            await remove(doomed)

    async def worker(index: Index) -> None:
        for _ in range(100):
            action = rng.choices([upload, delete, collect], weights=[5, 2, 1])[0]
            await action(index)

    async def workers() -> None:
        async with anyio.create_task_group() as tasks:
            for i in range(8):
                tasks.start_soon(worker, indexes[i % 2])
        done.set()

    async def check() -> None:
        while not done.is_set():
            seen.extend(await anyio.to_thread.run_sync(backend.violations))

    done = anyio.Event()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(workers)
        tasks.start_soon(check)

    assert seen == []
    assert backend.violations() == []
    named = await indexes[0].referenced()
    assert named, "the race ended with no name at all: it proves nothing"
    assert named <= blobs
    assert await all_doomed(indexes[1]) == []
    assert await indexes[0].expire_leases(now=LATER + timedelta(days=1)) == []


# PostgreSQL only


async def test_postgres_describe_hides_the_password(postgres_db_url: str) -> None:
    url = postgres_db_url.replace("postgres@", "postgres:s3cret@", 1)
    index = await PostgresIndex.open(url)
    try:
        assert "s3cret" not in index.describe()
        assert index.describe() == postgres_db_url
    finally:
        await index.close()


async def test_postgres_unreachable_says_where() -> None:
    with socket_closed_port() as port:
        url = f"postgresql://postgres:s3cret@127.0.0.1:{port}/nowhere"
        with pytest.raises(RuntimeError, match="cannot connect to the index at") as caught:
            await PostgresIndex.open(url)
    assert "s3cret" not in str(caught.value)
    assert f"127.0.0.1:{port}/nowhere" in str(caught.value)


async def test_postgres_processes_starting_at_once_share_one_schema(postgres_db_url: str) -> None:
    opened: list[PostgresIndex] = []

    async def open_one() -> None:
        opened.append(await PostgresIndex.open(postgres_db_url, max_size=2))

    async with anyio.create_task_group() as tasks:
        for _ in range(6):
            tasks.start_soon(open_one)
    try:
        await put(opened[0], record("x", "one"))
        assert all([await index.count() == 1 for index in opened])
    finally:
        for index in opened:
            await index.close()


@contextlib.contextmanager
def socket_closed_port() -> Iterator[int]:
    """A local port nothing listens on (bound, so nothing else takes it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


def disconnect_everyone(url: str) -> None:
    """End every other connection to the database, as a server restart would."""
    with psycopg.connect(url, autocommit=True) as conn:
        ended = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended is not None and ended[0] > 0, "no connection was ended: the test proves nothing"


async def test_postgres_index_outlives_a_server_restart(postgres_db_url: str) -> None:
    """Reads after a restart just work; of writes, at most the first fails."""
    index = await PostgresIndex.open(postgres_db_url, min_size=3, max_size=3)
    try:
        await put(index, record("x", "one"))
        disconnect_everyone(postgres_db_url)
        got = await index.get("x")
        assert got is not None
        assert got.sha256 == sha("one")
        disconnect_everyone(postgres_db_url)
        with contextlib.suppress(StorageUnavailableError):  # a 503 for its request
            await index.lease(sha("two"), "first", expires=LATER)
        await put(index, record("y", "two"))
        assert await index.count() == 2
        disconnect_everyone(postgres_db_url)
        assert await index.readable()
    finally:
        await index.close()
