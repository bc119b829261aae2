"""Where stores live: receive (streamed, hashed, validated), publish, open, list, delete.

A store is a name in the index pointing at an immutable blob named by its
sha256. The blob store and the index are interfaces (``interfaces``), each
with two backends: a local folder and SQLite (the default, for one machine),
or an S3-compatible bucket and PostgreSQL (for replicas). Every process is
stateless beyond its caches, which are keyed by content: names are looked up
in the index on every request, so a write in one process is seen at once by
all the others.

Saving stages the upload under a temporary name while hashing it, validates
it with the codec, leases its sha256 in the index, commits the blob, then
points the name at it and ends the lease in one transaction. The index dooms
a blob in the transaction that takes its last name or lease away; it is then
removed. Whatever a crash leaves is collected later by any process
(``collect_garbage``), once older than the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from ..errors import (
    ContentBusyError,
    InvalidStoreNameError,
    StoreExistsError,
    StoreNotFoundError,
    UploadExpiredError,
    UploadTooLargeError,
)
from ..keytable import OpenStore
from .interfaces import (
    DEFAULT_SUFFIX,
    BlobReader,
    BlobStore,
    Index,
    LeaseLostError,
    Staged,
    StoreRecord,
    Totals,
)
from .shield import shielded
from .validation import UploadHead

__all__ = [
    "NAME_PATTERN",
    "OpenStore",
    "Storage",
    "StoreRecord",
    "Totals",
    "Upload",
    "check_name",
]

logger = logging.getLogger("app.storage")

#: Store names: letters, digits, ``.``, ``_`` and ``-``, starting with a
#: letter or digit, at most 128 characters. Safe in paths and URLs as they are.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)
#: How long an upload waits for the removal of a blob with its content.
_DOOMED_WAIT = 30.0

_T = TypeVar("_T")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid store name, else raise ``InvalidStoreNameError``."""
    if not _NAME.fullmatch(name):
        raise InvalidStoreNameError(
            f"invalid store name {name!r}: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Upload:
    """A received, validated upload waiting to be published under a name."""

    staged: Staged
    num_keys: int


class Storage:
    """The stores of one blob store and index."""

    def __init__(
        self,
        blobs: BlobStore,
        index: Index,
        *,
        open_stores: int = 128,
        cache_bytes: int = 256 << 20,
        grace: timedelta = timedelta(hours=1),
        removal_delay: float = 0.0,
    ) -> None:
        self.blobs = blobs
        self.index = index
        self.grace = grace
        self._removal_delay = removal_delay
        #: Blobs doomed here, waiting ``removal_delay`` before they go...
        self._removals: dict[str, asyncio.Task[None]] = {}
        #: ...and those of them whose removal has begun.
        self._removed: set[str] = set()
        self._open_limit = open_stores
        self._cache_limit = cache_bytes
        self._open: OrderedDict[str, OpenStore] = OrderedDict()
        self._cached_bytes = 0
        self._opening: dict[str, asyncio.Future[OpenStore]] = {}
        #: Lookups of parsed files answered from the cache, and those that parsed one.
        self.cache_hits = 0
        self.cache_misses = 0

    async def close(self) -> None:
        # Removals still waiting go now: their content could not be uploaded again
        # until they are done.
        waiting = list(self._removals)
        for task in self._removals.values():
            task.cancel()
        await asyncio.gather(*self._removals.values(), return_exceptions=True)
        for sha256 in waiting:
            with contextlib.suppress(Exception):
                await self._remove(sha256)
        self._open.clear()
        self._cached_bytes = 0
        await self.index.close()
        await self.blobs.close()

    def describe(self) -> str:
        return f"blobs in {self.blobs.describe()}, index in {self.index.describe()}"

    # Reading

    async def get(self, name: str) -> StoreRecord:
        record = await self.index.get(name)
        if record is None:
            raise StoreNotFoundError(name)
        return record

    async def page(self, *, offset: int, limit: int) -> tuple[list[StoreRecord], int]:
        """Records sorted by name, ``limit`` from ``offset``, and how many there are."""
        total = await self.index.count()
        if offset >= total:
            return [], total
        return await self.index.page(offset=offset, limit=limit), total

    async def totals(self) -> Totals:
        """How many stores there are, their keys and their bytes, all added up."""
        return await self.index.totals()

    async def open(self, record: StoreRecord) -> OpenStore:
        """The parsed file of a store, from the cache or parsed now.

        Requests for a file being parsed wait for that one parse.
        """
        sha256 = record.sha256
        opened = self._open.get(sha256)
        if opened is not None:
            self._open.move_to_end(sha256)
            self.cache_hits += 1
            return opened
        self.cache_misses += 1
        pending = self._opening.get(sha256)
        if pending is None:
            pending = asyncio.ensure_future(self._parse(sha256))
            self._opening[sha256] = pending
            pending.add_done_callback(self._parsed)
        try:
            return await asyncio.shield(pending)
        except FileNotFoundError:  # deleted since the record was read
            raise StoreNotFoundError(record.name) from None

    async def _parse(self, sha256: str) -> OpenStore:
        return await OpenStore.open(await self.blobs.open(sha256))

    def _parsed(self, done: asyncio.Future[OpenStore]) -> None:
        if done.cancelled() or done.exception() is not None:
            self._opening = {sha: f for sha, f in self._opening.items() if f is not done}
            return
        opened = done.result()
        self._opening.pop(opened.sha256, None)
        if opened.sha256 not in self._open:
            self._open[opened.sha256] = opened
            self._cached_bytes += opened.cost
            self._evict()

    async def reader(self, record: StoreRecord) -> BlobReader:
        """The bytes of a store's whole file."""
        opened = self._open.get(record.sha256)
        if opened is not None:
            return opened.reader
        try:
            return await self.blobs.open(record.sha256)
        except FileNotFoundError:
            raise StoreNotFoundError(record.name) from None

    async def current(
        self, record: StoreRecord, use: Callable[[StoreRecord], Awaitable[_T]]
    ) -> tuple[StoreRecord, _T]:
        """``use(record)``, again with the name's record of now if its file has gone.

        A file goes only after its name has changed (replaced, deleted): a
        request that looked the name up just before is served what it has now.
        """
        while True:
            try:
                return record, await use(record)
            except StoreNotFoundError:
                latest = await self.get(record.name)  # 404 if the name has gone
                if latest == record:
                    raise
                record = latest

    async def key_page(self, opened: OpenStore, *, offset: int, limit: int) -> list[bytes]:
        """A page of the key listing (see ``OpenStore.build_page``), built once."""
        pieces = opened.cached_page(offset, limit)
        if pieces is None:
            pieces = await asyncio.to_thread(opened.build_page, offset, limit)
            if self._open.get(opened.sha256) is opened:
                self._cached_bytes += opened.keep_page(offset, limit, pieces)
                self._evict()
        return pieces

    def _evict(self) -> None:
        """Drop the least recently used stores until the cache fits its limits."""
        while len(self._open) > 1 and (
            self._cached_bytes > self._cache_limit or len(self._open) > self._open_limit
        ):
            _, evicted = self._open.popitem(last=False)
            self._cached_bytes -= evicted.cost
        if self._cached_bytes > self._cache_limit:
            # One store larger than the limit: keep it parsed, not its pages.
            for opened in self._open.values():
                self._cached_bytes -= opened.drop_pages()

    @property
    def cached_bytes(self) -> int:
        """What the parsed stores in the cache hold, in bytes."""
        return self._cached_bytes

    async def health(self) -> tuple[bool, int | None]:
        """Whether blobs can be written and the index read, and the free bytes if known."""
        writable, free = await self.blobs.health()
        return writable and await self.index.readable(), free

    # Writing

    @contextlib.asynccontextmanager
    async def receive(self, body: AsyncIterable[bytes], *, max_bytes: int) -> AsyncIterator[Upload]:
        """Stage ``body`` under a temporary name, hashing and then validating it.

        What is staged is removed when the context ends unless ``publish`` took it.

        Raises:
            UploadTooLargeError: more than ``max_bytes`` arrived.
            InvalidStoreFileError: the body is not a valid kastore file.
            InsufficientStorageError: no room.
        """
        head = UploadHead()
        try:
            staged = await self.blobs.stage(head.keep(body), limit=max_bytes)
        except OverflowError:
            raise UploadTooLargeError(max_bytes) from None
        try:
            num_keys = await head.validate(staged.reader())
            yield Upload(staged, num_keys)
        finally:
            await shielded(self.blobs.discard(staged))

    async def publish(
        self, name: str, upload: Upload, *, replace: bool, suffix: str = DEFAULT_SUFFIX
    ) -> tuple[StoreRecord, bool]:
        """Point ``name`` at a received upload; return the record and whether the name is new.

        Raises:
            InvalidStoreNameError, StoreExistsError (when not ``replace``),
            InsufficientStorageError (nothing is kept), ContentBusyError.
        """
        check_name(name)
        staged = upload.staged
        token = uuid.uuid4().hex
        await self._lease(staged.sha256, token)
        record = StoreRecord(
            name, staged.sha256, staged.size, upload.num_keys, datetime.now(UTC), suffix
        )
        try:
            await self.blobs.commit(staged)
            result = await shielded(self.index.put(record, token=token, replace=replace))
        except LeaseLostError:
            raise UploadExpiredError(self.grace.total_seconds()) from None
        except BaseException:
            doomed = await shielded(self.index.release(token))
            if doomed is not None:
                await self._remove_later(doomed)
            raise
        if result.doomed is not None:
            await self._remove_later(result.doomed)
        if result.new is None:
            raise StoreExistsError(name)
        return result.new, result.old is None

    async def _lease(self, sha256: str, token: str) -> None:
        """Lease ``sha256``, waiting while a removal of the same content finishes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _DOOMED_WAIT
        delay = 0.01
        while True:
            expires = datetime.now(UTC) + self.grace
            if await self.index.lease(sha256, token, expires=expires):
                return
            # A removal waiting here: call it off and keep the blob, so that requests
            # still reading it go on (its row goes; the lease is asked for again).
            waiting = self._removals.pop(sha256, None)
            if waiting is not None:
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
                if sha256 not in self._removed:
                    await self.index.forget(sha256)
                self._removed.discard(sha256)
                continue
            # One whose process died (its row is old): do it now.
            stale = await self.index.doomed(older_than=datetime.now(UTC) - self.grace)
            if sha256 in stale:
                await self._remove(sha256)
                continue
            if loop.time() > deadline:
                raise ContentBusyError()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def delete(self, name: str) -> None:
        """Remove a store; its blob goes once no other name or upload points at it."""
        old, doomed = await shielded(self.index.delete(name))
        if doomed is not None:
            await self._remove_later(doomed)
        if old is None:
            raise StoreNotFoundError(name)

    async def _remove_later(self, sha256: str) -> None:
        """Remove a doomed blob after ``removal_delay`` seconds, in the background.

        Requests that looked its name up just before the change still find
        their bytes; a process that stops first removes it as it stops, and
        one that dies leaves it to garbage collection.
        """
        if self._removal_delay <= 0:
            await self._remove(sha256)
            return
        if sha256 in self._removals:
            return

        async def later() -> None:
            try:
                await asyncio.sleep(self._removal_delay)
                self._removed.add(sha256)  # from here on, it goes even if called off
                await self._remove(sha256)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("removing the blob %s failed; garbage collection will", sha256)
            finally:
                if self._removals.get(sha256) is task:
                    del self._removals[sha256]
                    self._removed.discard(sha256)

        task = asyncio.create_task(later())
        self._removals[sha256] = task

    async def _remove(self, sha256: str) -> None:
        """Remove a doomed blob, then its row in the index."""
        opened = self._open.pop(sha256, None)
        if opened is not None:
            self._cached_bytes -= opened.cost

        async def remove() -> None:
            await self.blobs.remove(sha256)
            await self.index.forget(sha256)

        await shielded(remove())

    async def collect_garbage(self) -> int:
        """Remove what crashes left, once older than the grace period; how many things.

        Expired leases, removals that did not finish, blobs no name points at,
        and staged uploads. Safe to run in any number of processes at once.
        """
        now = datetime.now(UTC)
        before = now - self.grace
        doomed = set(await self.index.expire_leases(now=now))
        doomed.update(await self.index.doomed(older_than=before))
        referenced = await self.index.referenced()
        orphans = [sha async for sha, written in self.blobs.list() if written < before]
        orphans = [sha for sha in orphans if sha not in referenced and sha not in doomed]
        if orphans:
            doomed.update(await self.index.doom_orphans(orphans))
        for sha256 in sorted(doomed):
            await self._remove(sha256)
        temporaries = await self.blobs.collect_temporaries(before)
        return len(doomed) + temporaries
