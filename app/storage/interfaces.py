"""What a storage backend provides: a blob store and an index.

- A **blob store** keeps immutable objects named by the sha256 of their
  bytes: a local folder (``local_blobs``) or an S3-compatible bucket
  (``s3_blobs``).
- An **index** maps store names to blobs and decides, in transactions, when
  a blob may go: SQLite in the data directory (``sqlite_index``) or
  PostgreSQL (``postgres_index``).

Any number of processes may use the same blob store and index at once. The
rules that keep that safe live in the index, since only it has transactions:

1. An upload is staged under a temporary name, hashed and validated; nothing
   names it yet.
2. Before its blob is committed under its sha256, the upload takes a
   **lease** on that sha256 in the index. While a lease is held, nothing
   removes the blob.
3. ``put`` points the name at the blob and ends the lease, in one transaction.
4. A blob that loses its last name (``put`` replacing, ``delete``) or its
   last lease (``release``, an expired lease) with no name pointing at it is
   **doomed** in that same transaction. The caller then removes the object
   and calls ``forget``. A lease asked for a doomed sha256 answers ``False``:
   the caller waits for the removal to finish and asks again.
5. A crash leaves doomed rows, expired leases, unnamed blobs and temporary
   objects. Garbage collection, which any process may run, clears what is
   older than a grace period. Unnamed blobs are doomed only through the
   index (``doom_orphans``), so never while an upload holds a lease on them.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

__all__ = [
    "DEFAULT_SUFFIX",
    "BlobReader",
    "BlobStore",
    "Index",
    "LeaseLostError",
    "PutResult",
    "Staged",
    "StoreRecord",
    "Totals",
]

#: The file name extension of a store uploaded without one.
DEFAULT_SUFFIX = ".kas"


class LeaseLostError(Exception):
    """``put`` found its lease gone: it expired (``KASTORE_GC_GRACE_SECONDS``), and the
    blob may have been removed since. Nothing was changed."""


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """A named store: the blob it points at and what is known about it."""

    name: str
    sha256: str
    size: int
    num_keys: int
    created: datetime
    #: The extension of the uploaded file's name (``.trees``), for downloads of the file.
    suffix: str = DEFAULT_SUFFIX


@dataclass(frozen=True, slots=True)
class Totals:
    """All stores added up."""

    stores: int
    keys: int
    bytes: int


@dataclass(frozen=True, slots=True)
class PutResult:
    """What ``Index.put`` did.

    ``new`` is None when the name was taken and ``replace`` was false (the
    lease is then ended all the same). ``old`` is the record the name had.
    ``doomed`` is a sha256 whose blob the caller must now remove, then
    ``forget``: the replaced blob, or the uploaded one when it was refused,
    if no name or lease points at it any more.
    """

    new: StoreRecord | None
    old: StoreRecord | None
    doomed: str | None = None


class BlobReader(Protocol):
    """The bytes of one blob (or of a staged upload), read by ranges."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    def buffer(self) -> memoryview | None:
        """The whole blob mapped in memory, when the backend can; else None."""

    async def read(self, start: int, stop: int) -> bytes | memoryview:
        """Bytes ``[start, stop)``, in one request. Raises ``FileNotFoundError`` if gone."""

    def stream(self, start: int, stop: int) -> AsyncIterator[bytes | memoryview]:
        """Bytes ``[start, stop)`` in pieces, as they arrive, in one request."""


class Staged(Protocol):
    """An upload received under a temporary name, hashed, not yet a blob."""

    @property
    def sha256(self) -> str: ...

    @property
    def size(self) -> int: ...

    def reader(self) -> BlobReader:
        """Its bytes, to validate before committing."""


class BlobStore(Protocol):
    """Immutable objects named by sha256."""

    def describe(self) -> str:
        """Where the blobs live, for logs and errors (``/data/blobs``, ``s3://b/p``)."""

    async def stage(self, body: AsyncIterable[bytes], *, limit: int) -> Staged:
        """Stream ``body`` to a temporary object, hashing it; memory stays at a few MiB.

        Raises:
            OverflowError: more than ``limit`` bytes arrived (nothing is left behind).
            InsufficientStorageError: no room (nothing is left behind).
        """

    async def commit(self, staged: Staged) -> None:
        """Make a staged upload the blob of its sha256 (one that exists already is kept).

        Call only while holding a lease on its sha256.
        """

    async def discard(self, staged: Staged) -> None:
        """Remove what is left of a staged upload; safe to call more than once."""

    async def open(self, sha256: str) -> BlobReader:
        """A blob, to read. Raises ``FileNotFoundError`` if there is none."""

    async def remove(self, sha256: str) -> None:
        """Remove a doomed blob; no error if it is gone already."""

    def list(self) -> AsyncIterator[tuple[str, datetime]]:
        """Every blob: its sha256 and when it was written."""

    async def collect_temporaries(self, older_than: datetime) -> int:
        """Remove staged uploads left by crashes, begun before ``older_than``; how many."""

    async def health(self) -> tuple[bool, int | None]:
        """Whether a temporary object can be written, and the free bytes if known."""

    async def close(self) -> None: ...


class Index(Protocol):
    """Store names to records, and the leases and doomed blobs of rules 2 to 5."""

    def describe(self) -> str:
        """Where the index lives (``/data/index.sqlite3``, ``postgresql://host/db``)."""

    async def get(self, name: str) -> StoreRecord | None:
        """The record of ``name``, as committed now (never from a cache)."""

    async def page(self, *, offset: int, limit: int) -> list[StoreRecord]:
        """Records sorted by name (byte order), ``limit`` from ``offset``."""

    async def count(self) -> int: ...

    async def totals(self) -> Totals: ...

    async def readable(self) -> bool:
        """Whether the index answers a read."""

    async def lease(self, sha256: str, token: str, *, expires: datetime) -> bool:
        """Hold the blob ``sha256`` for an upload; False while it is doomed (ask again)."""

    async def put(self, record: StoreRecord, *, token: str, replace: bool) -> PutResult:
        """Point ``record.name`` at ``record.sha256`` and end the lease ``token``, at once.

        Raises ``LeaseLostError``, changing nothing, when the lease is no longer held.
        """

    async def release(self, token: str) -> str | None:
        """End a lease without a name (a failed upload); the sha256 now doomed, if any."""

    async def delete(self, name: str) -> tuple[StoreRecord | None, str | None]:
        """Remove ``name``: the record it had (None: no such name) and the sha256 doomed."""

    async def forget(self, sha256: str) -> None:
        """A doomed blob has been removed: drop its row."""

    async def doomed(self, *, older_than: datetime) -> list[str]:
        """Blobs doomed before ``older_than`` and still not forgotten (a crashed remover)."""

    async def expire_leases(self, *, now: datetime) -> list[str]:
        """End the leases that expired; the sha256s they doomed."""

    async def doom_orphans(self, candidates: list[str]) -> list[str]:
        """Of these blobs, doom those no name and no lease points at; return them."""

    async def referenced(self) -> set[str]:
        """Every sha256 a name points at."""

    async def close(self) -> None: ...
