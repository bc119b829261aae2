"""What only the S3 blob store does: its start-up check, its layout in the bucket, gone objects.

The BlobStore contract itself is in ``test_blob_store.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest

from app.storage.s3_blobs import S3Blobs

from ..._s3 import bucket_contents, create_bucket

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def one_piece(data: bytes):  # type: ignore[no-untyped-def]
    yield data


async def test_layout_in_the_bucket(s3_blob_url: str, s3_endpoint: str) -> None:
    """Other processes and tools share the bucket: the keys are part of the contract."""
    store = await S3Blobs.create(s3_blob_url, endpoint_url=s3_endpoint)
    data = b"kastore" * 1_000_000  # more than a part: staged in the bucket
    sha256 = hashlib.sha256(data).hexdigest()
    bucket = s3_blob_url.removeprefix("s3://").partition("/")[0]

    staged = await store.stage(one_piece(data), limit=len(data))
    during = bucket_contents(s3_endpoint, bucket)
    await store.commit(staged)
    after = bucket_contents(s3_endpoint, bucket)

    assert len(during.objects) == 1
    assert during.objects[0].startswith("prefix/tmp/")
    assert during.objects[0].endswith(".upload")
    assert after.objects == [f"prefix/blobs/{sha256[:2]}/{sha256}.kas"]
    assert store.describe() == f"{s3_blob_url} at {s3_endpoint}"


async def test_a_small_upload_is_written_once_straight_to_its_blob(
    s3_blob_url: str, s3_endpoint: str
) -> None:
    """One part or less: kept in memory while it is validated, then one PUT (no copy)."""
    store = await S3Blobs.create(s3_blob_url, endpoint_url=s3_endpoint)
    data = b"kastore" * 1000
    sha256 = hashlib.sha256(data).hexdigest()
    bucket = s3_blob_url.removeprefix("s3://").partition("/")[0]

    staged = await store.stage(one_piece(data), limit=len(data))
    assert bucket_contents(s3_endpoint, bucket).objects == []
    assert bytes(await staged.reader().read(0, len(data))) == data
    await store.commit(staged)
    await store.discard(staged)
    assert bucket_contents(s3_endpoint, bucket).objects == [
        f"prefix/blobs/{sha256[:2]}/{sha256}.kas"
    ]
    assert bytes(await (await store.open(sha256)).read(0, len(data))) == data


async def test_endpoint_from_the_environment(
    s3_blob_url: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    store = await S3Blobs.create(s3_blob_url)
    assert await store.health() == (True, None)


async def test_missing_bucket_is_named(s3_endpoint: str, s3_blob_url: str) -> None:
    with pytest.raises(RuntimeError, match=r"'no-such-bucket' .* create the bucket"):
        await S3Blobs.create("s3://no-such-bucket/prefix", endpoint_url=s3_endpoint)


async def test_unreachable_endpoint_is_named(s3_blob_url: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there

    with pytest.raises(RuntimeError, match=rf"at {closed} .*KASTORE_S3_ENDPOINT_URL"):
        await S3Blobs.create(s3_blob_url, endpoint_url=closed)


@pytest.mark.parametrize("url", ["s3:/bucket", "http://bucket/prefix", "s3:///prefix"])
async def test_malformed_url(url: str) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        await S3Blobs.create(url, endpoint_url="http://127.0.0.1:1")


async def test_blob_removed_by_another_process(s3_blob_url: str, s3_endpoint: str) -> None:
    """A reader opened before the removal fails on its next request, as if the file were gone."""
    reader_side = await S3Blobs.create(s3_blob_url, endpoint_url=s3_endpoint)
    remover_side = await S3Blobs.create(s3_blob_url, endpoint_url=s3_endpoint)
    data = b"x" * 1000
    staged = await reader_side.stage(one_piece(data), limit=len(data))
    await reader_side.commit(staged)
    reader = await reader_side.open(staged.sha256)

    await remover_side.remove(staged.sha256)

    with pytest.raises(FileNotFoundError):
        await reader.read(0, 10)
    with pytest.raises(FileNotFoundError):
        _ = [piece async for piece in reader.stream(0, 10)]


async def test_buckets_are_separate(s3_endpoint: str, s3_blob_url: str) -> None:
    """Each test's bucket starts empty (the fixture the other suites rely on)."""
    other = f"s3://{await asyncio.to_thread(create_bucket, s3_endpoint)}/prefix"
    first = await S3Blobs.create(s3_blob_url, endpoint_url=s3_endpoint)
    second = await S3Blobs.create(other, endpoint_url=s3_endpoint)
    staged = await first.stage(one_piece(b"only here"), limit=100)
    await first.commit(staged)

    assert [sha async for sha, _ in second.list()] == []
    assert [sha async for sha, _ in first.list()] == [staged.sha256]
