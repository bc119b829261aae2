"""Immutable objects named by their sha256, in an S3-compatible bucket.

Layout under ``s3://bucket/prefix``::

    blobs/ab/abcdef....kas   one object per distinct content, never modified
    tmp/UUID.upload          uploads being received (and left by crashes)
    tmp/UUID.health          the object a health check writes and removes

An upload streams into ``tmp/`` as it arrives (one PUT when it fits in one
part, else a multipart upload of ``PART_SIZE`` parts, at most
``UPLOAD_CONCURRENCY`` of them in flight), hashed on the way; ``commit`` then
copies it to its ``blobs/`` key on the server and deletes the temporary
object. S3 has no rename, but a copy is atomic for readers: a blob key holds
either nothing or the whole object.

An upload that fails, overflows or is cancelled is aborted (its multipart
upload too) and its temporary object deleted before ``stage`` returns.
What a crash leaves in ``tmp/`` goes with ``collect_temporaries``; multipart
uploads a crash leaves unfinished cannot be listed through obstore, so the
bucket should have a lifecycle rule that aborts incomplete multipart uploads
after a day (``AbortIncompleteMultipartUpload``).

Endpoint, region and credentials come from the usual ``AWS_*`` variables
(``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``...), the
``endpoint_url`` argument overriding ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import S3Store

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

from .interfaces import Staged
from .local_blobs import LocalReader

__all__ = ["S3Blobs", "S3Reader", "S3Staged"]

#: Size of the parts of a multipart upload: S3's least (but for the last part). With
#: S3's 10,000 parts at most, an upload can reach 48 GiB, more than ``MAX_BLOB``.
PART_SIZE: Final = 5 << 20
#: Parts uploaded at once: memory held by an upload is about (this + 1) x PART_SIZE.
UPLOAD_CONCURRENCY: Final = 2
#: The largest object S3 copies in one request (CopyObject), so the largest blob.
MAX_BLOB: Final = 5 << 30
#: Received pieces are gathered up to this size before being hashed and passed on.
BATCH: Final = 1 << 20
#: Batches at least this large are hashed in a worker thread, off the event loop.
HASH_IN_THREAD: Final = 64 << 10
#: Least size of the pieces of a streamed read (all but the last).
STREAM_PIECE: Final = 1 << 20
#: Sizes of blobs remembered by ``open`` (sha256-named objects never change size).
SIZE_CACHE: Final = 10_000
#: Keys deleted per request by ``collect_temporaries`` (S3's DeleteObjects limit).
DELETE_BATCH: Final = 1000

#: A read stalled this long fails (and is retried); a download may last far longer.
_CLIENT_OPTIONS: Final[ClientConfig] = {
    "connect_timeout": timedelta(seconds=10),
    "read_timeout": timedelta(minutes=2),
    "timeout": timedelta(hours=24),
}
#: ``open``'s reachability check answers within seconds, not after minutes of retries.
_PROBE_RETRIES: Final[RetryConfig] = {"max_retries": 1, "retry_timeout": timedelta(seconds=10)}

_BLOB_KEY = re.compile(r"blobs/([0-9a-f]{2})/(\1[0-9a-f]{62})\.kas")
_TMP = "tmp/"


def blob_key(sha256: str) -> str:
    """The key of a blob, under the store's prefix."""
    return f"blobs/{sha256[:2]}/{sha256}.kas"


@dataclass(frozen=True, slots=True)
class S3Reader:
    """An object's bytes, read by ranged GETs."""

    store: S3Store
    key: str
    sha256: str
    size: int

    def buffer(self) -> None:
        return None

    def _range(self, start: int, stop: int) -> tuple[int, int] | None:
        """``[start, stop)`` cut to the object as a slice would be; None when empty."""
        start, stop, _ = slice(start, stop).indices(self.size)
        return (start, stop) if start < stop else None

    async def read(self, start: int, stop: int) -> bytes | memoryview:
        byte_range = self._range(start, stop)
        if byte_range is None:
            return b""
        result = await obstore.get_async(self.store, self.key, options={"range": byte_range})
        return memoryview(await result.bytes_async())

    async def stream(self, start: int, stop: int) -> AsyncIterator[bytes]:
        byte_range = self._range(start, stop)
        if byte_range is None:
            return
        result = await obstore.get_async(self.store, self.key, options={"range": byte_range})
        async for piece in result.stream(min_chunk_size=STREAM_PIECE):
            yield piece


@dataclass(slots=True)
class S3Staged:
    """An upload received as ``tmp/UUID.upload``, or kept in memory when small."""

    store: S3Store
    key: str
    sha256: str
    size: int
    #: The bytes of an upload small enough to be kept in memory (never written to
    #: ``key``): ``commit`` writes them straight to the blob.
    whole: bytes | None = None
    #: Made its blob, and its staged object deleted: nothing is left to discard.
    committed: bool = False

    def reader(self) -> S3Reader | LocalReader:
        if self.whole is not None:
            return LocalReader(self.sha256, memoryview(self.whole))
        return S3Reader(self.store, self.key, self.sha256, self.size)


class _Intake:
    """An upload's body, counted, hashed and gathered into batches for obstore to upload.

    obstore pulls the batches through ``__anext__``, each in a task of its own;
    ``stop`` cancels the one waiting for the body, so that obstore sees an
    error and aborts its multipart upload (cancelling obstore's own call would
    drop the upload without aborting it).
    """

    def __init__(self, body: AsyncIterable[bytes], *, limit: int) -> None:
        self._body = aiter(body)
        self._limit = limit
        self._hash = hashlib.sha256()
        self._ahead: collections.deque[bytes] = collections.deque()
        self._waiting: asyncio.Task[Any] | None = None
        self._stopped = False
        self.size = 0
        self.ended = False

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def read_ahead(self, size: int) -> None:
        """Take batches from the body until ``size`` bytes are held, or it ends."""
        held = 0
        while held < size and not self.ended:
            batch = await self._next_batch()
            if batch is not None:
                self._ahead.append(batch)
                held += len(batch)

    def take_ahead(self) -> bytes:
        """The bytes held by ``read_ahead``, handed over."""
        data = b"".join(self._ahead)
        self._ahead.clear()
        return data

    async def _next_batch(self) -> bytes | None:
        if self._stopped:
            raise asyncio.CancelledError
        self._waiting = asyncio.current_task()
        try:
            return await self._gather()
        finally:
            self._waiting = None

    async def _gather(self) -> bytes | None:
        pieces: list[bytes] = []
        gathered = 0
        while gathered < BATCH:
            try:
                piece = await anext(self._body)
            except StopAsyncIteration:
                self.ended = True
                break
            self.size += len(piece)
            if self.size > self._limit:
                raise OverflowError(f"more than {self._limit} bytes")
            if piece:
                pieces.append(piece)
                gathered += len(piece)
        if not pieces:
            return None
        batch = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if len(batch) >= HASH_IN_THREAD:
            await asyncio.to_thread(self._hash.update, batch)
        else:
            self._hash.update(batch)
        return batch

    def __aiter__(self) -> _Intake:
        return self

    async def __anext__(self) -> bytes:
        if self._ahead:
            return self._ahead.popleft()
        batch = None if self.ended else await self._next_batch()
        if batch is None:
            raise StopAsyncIteration
        return batch

    def stop(self) -> None:
        """Make the upload fail at once: no more batches, the one being gathered cancelled."""
        self._stopped = True
        self._ahead.clear()
        if self._waiting is not None:
            self._waiting.cancel()


class S3Blobs:
    """The ``blobs/`` and ``tmp/`` keys under a bucket's prefix."""

    def __init__(self, store: S3Store, *, url: str, endpoint: str) -> None:
        self._store = store
        self._url = url
        self._endpoint = endpoint
        self._sizes: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._cleanups: set[asyncio.Task[None]] = set()

    @classmethod
    async def create(
        cls, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> S3Blobs:
        """The blob store at ``s3://bucket/prefix``, checked to be reachable (one request).

        Raises:
            ValueError: ``url`` is not an ``s3://`` URL.
            RuntimeError: the bucket cannot be listed; the message says what to fix.
        """
        bucket, prefix = _parse_url(url)
        endpoint = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        shown = endpoint or f"https://s3.{region or 'us-east-1'}.amazonaws.com"

        def connect(retry_config: RetryConfig | None = None) -> S3Store:
            config: S3Config = {}
            if endpoint is not None:
                config["endpoint"] = endpoint
            if region is not None:
                config["region"] = region
            client: ClientConfig = {**_CLIENT_OPTIONS, "allow_http": shown.startswith("http://")}
            return S3Store(
                bucket,
                prefix=prefix or None,
                config=config,
                client_options=client,
                retry_config=retry_config,
            )

        try:
            store = connect()
            await _probe(connect(_PROBE_RETRIES))
        except Exception as err:
            raise RuntimeError(_unreachable(bucket, shown, err)) from err
        where = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        return cls(store, url=where, endpoint=shown)

    def describe(self) -> str:
        return f"{self._url} at {self._endpoint}"

    async def stage(self, body: AsyncIterable[bytes], *, limit: int) -> S3Staged:
        """Stream ``body`` to ``tmp/UUID.upload``; see ``BlobStore.stage``.

        ``limit`` is lowered to ``MAX_BLOB``, the most ``commit`` can copy.
        """
        key = f"{_TMP}{uuid.uuid4().hex}.upload"
        intake = _Intake(body, limit=min(limit, MAX_BLOB))
        upload = asyncio.ensure_future(self._upload(key, intake))
        try:
            whole = await asyncio.shield(upload)
        except BaseException:
            intake.stop()
            # Cleaning up outlives a second cancellation: it runs in a task of its own.
            cleanup = asyncio.ensure_future(self._clean_up(upload, key))
            self._cleanups.add(cleanup)
            cleanup.add_done_callback(self._cleanups.discard)
            await asyncio.shield(cleanup)
            raise
        return S3Staged(self._store, key, intake.sha256(), intake.size, whole)

    async def _upload(self, key: str, intake: _Intake) -> bytes | None:
        """Upload the body to ``key``; one that ends within a part is kept, not uploaded.

        A small upload is then written once, straight to its blob, by ``commit``.
        """
        await intake.read_ahead(PART_SIZE)
        if intake.ended:
            return intake.take_ahead()
        await obstore.put_async(
            self._store,
            key,
            intake,
            use_multipart=True,
            chunk_size=PART_SIZE,
            max_concurrency=UPLOAD_CONCURRENCY,
        )
        return None

    async def _clean_up(self, upload: Awaitable[bytes | None], key: str) -> None:
        """Wait for a failed upload to end (obstore aborts it), then delete what it wrote."""
        with contextlib.suppress(BaseException):
            await upload
        # The upload's own error is the one to report; what this leaves, if S3 failed,
        # goes with collect_temporaries.
        with contextlib.suppress(Exception):
            await obstore.delete_async(self._store, key)

    async def commit(self, staged: Staged) -> None:
        """Make the upload its sha256's blob: a small one is written there from memory;
        a large one is copied there, unless that holds the same size already.

        Skipping the copy saves rewriting a large object; the size check means
        a blob that is somehow wrong is replaced rather than kept.
        """
        if not isinstance(staged, S3Staged):
            raise TypeError(f"expected an upload staged by S3Blobs, got {type(staged).__name__}")
        target = blob_key(staged.sha256)
        if staged.whole is not None:
            # One small PUT costs about what asking whether the blob exists would.
            await obstore.put_async(self._store, target, staged.whole, use_multipart=False)
        else:
            try:
                existing = await obstore.head_async(self._store, target)
            except FileNotFoundError:
                existing = None
            if existing is None or existing["size"] != staged.size:
                await obstore.copy_async(self._store, staged.key, target)
            await obstore.delete_async(self._store, staged.key)
        self._remember(staged.sha256, staged.size)
        staged.committed = True

    async def discard(self, staged: Staged) -> None:
        if not isinstance(staged, S3Staged):
            raise TypeError(f"expected an upload staged by S3Blobs, got {type(staged).__name__}")
        if not staged.committed and staged.whole is None:
            await obstore.delete_async(self._store, staged.key)

    async def open(self, sha256: str) -> S3Reader:
        key = blob_key(sha256)
        size = self._sizes.get(sha256)
        if size is None:
            size = (await obstore.head_async(self._store, key))["size"]
            self._remember(sha256, size)
        return S3Reader(self._store, key, sha256, size)

    def _remember(self, sha256: str, size: int) -> None:
        self._sizes[sha256] = size
        self._sizes.move_to_end(sha256)
        while len(self._sizes) > SIZE_CACHE:
            self._sizes.popitem(last=False)

    async def remove(self, sha256: str) -> None:
        self._sizes.pop(sha256, None)
        await obstore.delete_async(self._store, blob_key(sha256))

    async def list(self) -> AsyncIterator[tuple[str, datetime]]:
        async for chunk in obstore.list(self._store, "blobs/"):
            for meta in chunk:
                match = _BLOB_KEY.fullmatch(meta["path"])
                if match is not None:
                    yield match[2], meta["last_modified"]

    async def collect_temporaries(self, older_than: datetime) -> int:
        """Delete the objects under ``tmp/`` written before ``older_than``.

        Unfinished multipart uploads are not listed by obstore: they are left
        to the bucket's lifecycle rule (see the module docstring).
        """
        old: list[str] = []
        async for chunk in obstore.list(self._store, _TMP):
            old.extend(meta["path"] for meta in chunk if meta["last_modified"] < older_than)
        for start in range(0, len(old), DELETE_BATCH):
            await obstore.delete_async(self._store, old[start : start + DELETE_BATCH])
        return len(old)

    async def health(self) -> tuple[bool, int | None]:
        key = f"{_TMP}{uuid.uuid4().hex}.health"
        try:
            await obstore.put_async(self._store, key, b"", use_multipart=False)
            await obstore.delete_async(self._store, key)
        except (OSError, ObstoreError):
            return False, None
        return True, None

    async def close(self) -> None:
        """Wait for the clean-ups of failed uploads still running."""
        if self._cleanups:
            await asyncio.gather(*self._cleanups, return_exceptions=True)


def _parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes at its ends)."""
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise ValueError(f"expected s3://bucket/prefix, got {url!r}")
    return bucket, prefix.strip("/")


async def _probe(store: S3Store) -> None:
    """List one key of the bucket: proves the endpoint, the bucket and the credentials."""
    listing = obstore.list(store, _TMP, chunk_size=1)
    with contextlib.suppress(StopAsyncIteration):
        await anext(listing)


def _unreachable(bucket: str, endpoint: str, err: Exception) -> str:
    """One line: what failed and what to set to fix it."""
    text = str(err)
    code = _S3_ERROR_CODE.search(text)
    message = _S3_ERROR_MESSAGE.search(text)
    first_line = text.strip().split("\n", 1)[0]
    if code is not None:
        detail = f"{code[1]}: {message[1]}" if message is not None else code[1]
    else:  # obstore's line ends with the cause: "... in 101ms - HTTP error: error sending request"
        detail = first_line.rpartition(" - ")[2].strip() or type(err).__name__
    kind = code[1] if code is not None else ""
    if kind == "NoSuchBucket" or isinstance(err, FileNotFoundError):
        fix = "create the bucket, or fix its name in KASTORE_BLOB_URL"
    elif kind in _CREDENTIAL_ERRORS or type(err).__name__ in _CREDENTIAL_ERRORS:
        fix = "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)"
    elif kind in _REGION_ERRORS:
        fix = "set AWS_REGION to the bucket's region"
    else:
        fix = (
            "check KASTORE_S3_ENDPOINT_URL (or AWS_ENDPOINT_URL), AWS_REGION and the "
            "AWS_* credentials, and that the server is up"
        )
    return f"S3 bucket {bucket!r} at {endpoint} is not usable ({detail}): {fix}"


_S3_ERROR_CODE = re.compile(r"<Code>([^<]+)</Code>")
_S3_ERROR_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")
_CREDENTIAL_ERRORS = frozenset(
    {
        "AccessDenied",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "PermissionDeniedError",
        "UnauthenticatedError",
    }
)
_REGION_ERRORS = frozenset(
    {"AuthorizationHeaderMalformed", "PermanentRedirect", "IllegalLocationConstraintException"}
)
