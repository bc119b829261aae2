"""The BlobStore contract, run against every backend: a local folder and an S3 bucket.

What a user would notice if a backend broke it: a download that differs from
the upload by a byte, a range read off by one, a failed or refused upload
that leaves an object behind forever (storage that only grows), a blob that
garbage collection removes while an upload is still writing it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.storage.interfaces import BlobStore, Staged
from app.storage.s3_blobs import S3Blobs

from ..._s3 import bucket_contents

pytestmark = pytest.mark.anyio

MiB = 1 << 20
#: Piece size of upload bodies: odd, so pieces straddle every batch and part boundary.
PIECE = 100_003

Leftovers = Callable[[], Awaitable[list[str]]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["local", "s3"])
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """A new, empty blob store of each backend."""
    store: BlobStore
    if request.param == "local":
        from app.storage.local_blobs import LocalBlobs

        store = await LocalBlobs.create(tmp_path, fsync=False)
    else:
        url = request.getfixturevalue("s3_blob_url")
        store = await S3Blobs.create(url, endpoint_url=request.getfixturevalue("s3_endpoint"))
    yield store
    await store.close()


@pytest.fixture
def leftovers(blob_store: BlobStore, request: pytest.FixtureRequest, tmp_path: Path) -> Leftovers:
    """What is left of staged uploads: temporary files, objects, unfinished multipart uploads."""

    async def local() -> list[str]:
        return sorted(path.name for path in (tmp_path / "tmp").iterdir())

    async def s3() -> list[str]:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket, _, prefix = (
            request.getfixturevalue("s3_blob_url").removeprefix("s3://").partition("/")
        )
        contents = await asyncio.to_thread(bucket_contents, endpoint, bucket, prefix)
        temporaries = [key for key in contents.objects if key.startswith(f"{prefix}/tmp/")]
        return temporaries + [f"unfinished upload of {key}" for key in contents.uploads]

    return s3 if isinstance(blob_store, S3Blobs) else local


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


async def body(data: bytes, piece: int = PIECE) -> AsyncIterator[bytes]:
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


async def stage(store: BlobStore, data: bytes, *, limit: int = 1 << 30) -> Staged:
    return await store.stage(body(data), limit=limit)


async def commit(store: BlobStore, data: bytes) -> str:
    staged = await stage(store, data)
    await store.commit(staged)
    return staged.sha256


async def listed(store: BlobStore) -> dict[str, datetime]:
    return {sha256: written async for sha256, written in store.list()}


def ranges(size: int) -> list[tuple[int, int]]:
    """Whole, empty, first and last bytes, and random ranges of a blob of ``size`` bytes."""
    rng = random.Random(size)
    chosen = [(0, size), (0, 0), (size, size), (0, min(1, size)), (max(size - 1, 0), size)]
    for _ in range(5):
        start = rng.randrange(size + 1)
        chosen.append((start, rng.randrange(start, size + 1)))
    return chosen


@pytest.mark.parametrize("size", [0, 1, 5 * MiB + 1, 20 * MiB])
async def test_committed_blob_reads_back_byte_for_byte(
    blob_store: BlobStore, leftovers: Leftovers, size: int
) -> None:
    data = random_bytes(size)
    staged = await stage(blob_store, data)
    assert (staged.sha256, staged.size) == (hashlib.sha256(data).hexdigest(), size)
    assert bytes(await staged.reader().read(0, size)) == data  # validated before commit

    await blob_store.commit(staged)
    reader = await blob_store.open(staged.sha256)

    assert (reader.sha256, reader.size) == (staged.sha256, size)
    for start, stop in ranges(size):
        assert bytes(await reader.read(start, stop)) == data[start:stop], (start, stop)
    assert await leftovers() == []


@pytest.mark.parametrize("size", [1, 20 * MiB])
async def test_stream_pieces_make_up_the_range(blob_store: BlobStore, size: int) -> None:
    data = random_bytes(size)
    reader = await blob_store.open(await commit(blob_store, data))

    for start, stop in ranges(size):
        pieces = [bytes(piece) async for piece in reader.stream(start, stop)]
        assert b"".join(pieces) == data[start:stop], (start, stop)
        assert all(pieces), "no empty pieces"
    if size > 4 * MiB:
        pieces = [len(piece) async for piece in reader.stream(0, size)]
        assert len(pieces) > 2, f"a {size}-byte range came in {len(pieces)} pieces"


@pytest.mark.parametrize(("limit", "size"), [(100, 101), (0, 1), (12 * MiB, 20 * MiB)])
async def test_overflow_leaves_nothing(
    blob_store: BlobStore, leftovers: Leftovers, limit: int, size: int
) -> None:
    with pytest.raises(OverflowError):
        await stage(blob_store, random_bytes(size), limit=limit)

    assert await leftovers() == []
    assert await listed(blob_store) == {}


async def test_body_of_exactly_the_limit_is_accepted(blob_store: BlobStore) -> None:
    staged = await stage(blob_store, random_bytes(1000), limit=1000)
    assert staged.size == 1000


class ClientGone(Exception):
    """The body of an upload failed: the client went away."""


async def failing_body(data: bytes) -> AsyncIterator[bytes]:
    async for piece in body(data):
        yield piece
    raise ClientGone


@pytest.mark.parametrize("size", [1000, 20 * MiB])
async def test_failing_body_leaves_nothing(
    blob_store: BlobStore, leftovers: Leftovers, size: int
) -> None:
    with pytest.raises(ClientGone):
        await blob_store.stage(failing_body(random_bytes(size)), limit=1 << 30)

    assert await leftovers() == []


@pytest.mark.parametrize("size", [1000, 20 * MiB])
async def test_cancelled_upload_leaves_nothing(
    blob_store: BlobStore, leftovers: Leftovers, size: int
) -> None:
    waiting = asyncio.Event()

    async def stalled_body() -> AsyncIterator[bytes]:
        async for piece in body(random_bytes(size)):
            yield piece
        waiting.set()
        await asyncio.Event().wait()  # the client sends nothing more
        yield b"never"

    upload = asyncio.ensure_future(blob_store.stage(stalled_body(), limit=1 << 30))
    await waiting.wait()
    await asyncio.sleep(0.2)  # let a part upload start
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload

    assert await leftovers() == []


async def test_discard_is_idempotent(blob_store: BlobStore, leftovers: Leftovers) -> None:
    staged = await stage(blob_store, random_bytes(1000))

    await blob_store.discard(staged)
    await blob_store.discard(staged)

    assert await leftovers() == []
    with pytest.raises(FileNotFoundError):
        await blob_store.open(staged.sha256)


async def test_commit_of_an_existing_blob_keeps_one(
    blob_store: BlobStore, leftovers: Leftovers
) -> None:
    data = random_bytes(6 * MiB)
    first = await commit(blob_store, data)
    second = await commit(blob_store, data)

    assert first == second
    assert list(await listed(blob_store)) == [first]
    reader = await blob_store.open(first)
    assert bytes(await reader.read(0, reader.size)) == data
    assert await leftovers() == []


async def test_remove_is_idempotent(blob_store: BlobStore) -> None:
    sha256 = await commit(blob_store, random_bytes(1000))
    await blob_store.open(sha256)

    await blob_store.remove(sha256)
    await blob_store.remove(sha256)

    with pytest.raises(FileNotFoundError):
        await blob_store.open(sha256)
    assert await listed(blob_store) == {}


async def test_open_missing_blob(blob_store: BlobStore) -> None:
    with pytest.raises(FileNotFoundError):
        await blob_store.open(hashlib.sha256(b"never stored").hexdigest())


async def test_list_gives_exactly_the_committed_blobs(blob_store: BlobStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=1)
    committed = {await commit(blob_store, random_bytes(100, seed)) for seed in range(3)}
    await stage(blob_store, random_bytes(100, 99))  # staged, never committed

    blobs = await listed(blob_store)

    assert set(blobs) == committed
    assert all(
        before < written < datetime.now(UTC) + timedelta(minutes=1) for written in blobs.values()
    )


async def test_collect_temporaries_spares_recent_uploads(
    blob_store: BlobStore, leftovers: Leftovers
) -> None:
    # Larger than a part: S3 keeps smaller uploads in memory, with nothing to collect.
    size = 7 << 20
    old = await stage(blob_store, random_bytes(size, 1))
    # A whole second: S3 gives times to the second. Uploads begun after it are recent.
    cutoff = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    await asyncio.sleep((cutoff - datetime.now(UTC)).total_seconds() + 0.01)
    recent = await stage(blob_store, random_bytes(size, 2))

    assert await blob_store.collect_temporaries(cutoff) == 1

    with pytest.raises(FileNotFoundError):
        await old.reader().read(0, 1000)
    assert bytes(await recent.reader().read(0, 1000)) == random_bytes(size, 2)[:1000]
    await blob_store.commit(recent)
    assert list(await listed(blob_store)) == [recent.sha256]
    assert await leftovers() == []


async def test_health_leaves_nothing(blob_store: BlobStore, leftovers: Leftovers) -> None:
    ok, _free = await blob_store.health()
    assert ok
    assert await leftovers() == []


async def test_staging_holds_a_few_mib_whatever_the_size(blob_store: BlobStore) -> None:
    size = 64 * MiB
    block = random_bytes(MiB)
    expected = hashlib.sha256()

    async def large_body() -> AsyncIterator[bytes]:
        for _ in range(size // MiB):
            for start in range(0, MiB, 64 << 10):
                piece = block[start : start + (64 << 10)]
                expected.update(piece)
                yield piece

    tracemalloc.start()
    try:
        staged = await blob_store.stage(large_body(), limit=size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (staged.sha256, staged.size) == (expected.hexdigest(), size)
    assert peak < 32 * MiB, f"staging {size >> 20} MiB peaked at {peak / MiB:.1f} MiB"
    await blob_store.commit(staged)  # a large server-side copy, for S3
    reader = await blob_store.open(staged.sha256)
    assert bytes(await reader.read(size - 10, size)) == block[-10:]
