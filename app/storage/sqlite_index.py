"""The index: which store name points at which blob, in SQLite.

One small table; every change is one transaction, so a crash leaves the
index as it was before or after it, never between.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["Index", "StoreRecord"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    name     TEXT PRIMARY KEY,
    sha256   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    num_keys INTEGER NOT NULL,
    created  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stores_sha256 ON stores (sha256);
"""
_COLUMNS = "name, sha256, size, num_keys, created"


@dataclass(frozen=True, slots=True)
class StoreRecord:
    """A named store: the blob it points at and what is known about it."""

    name: str
    sha256: str
    size: int
    num_keys: int
    created: datetime

    @classmethod
    def _from_row(cls, row: tuple[str, str, int, int, str]) -> StoreRecord:
        name, sha256, size, num_keys, created = row
        return cls(name, sha256, size, num_keys, datetime.fromisoformat(created))


class Index:
    """Names to store records, kept in ``index.sqlite3``.

    Owned by one process (the one that owns the data directory). Two
    connections: reads run on the event loop's thread (they are quick, and
    answered from memory for the names looked up most recently); writes
    (``put``, ``delete``) block on the disk's flush, so callers run them in a
    worker thread, one at a time, and then tell the index on the event loop's
    thread (``settle``), which keeps its memory of records in step.
    """

    def __init__(self, path: Path, *, cached: int = 4096) -> None:
        self._cache: OrderedDict[str, StoreRecord] = OrderedDict()
        self._cached = cached
        self._path = path
        self._writer = _connect(path)
        self._writer.executescript(_SCHEMA)
        self._db = _connect(path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # the worker threads' connections
        self._readers_lock = threading.Lock()
        (total,) = self._db.execute("SELECT count(*) FROM stores").fetchone()
        self._count = int(total)

    def close(self) -> None:
        with self._readers_lock:
            readers, self._readers = self._readers, []
        for db in [*readers, self._db, self._writer]:
            db.close()

    def get(self, name: str) -> StoreRecord | None:
        record = self._cache.get(name)
        if record is None:
            record = self._query(self._db, name)
            if record is not None:
                self._remember(record)
        return record

    @staticmethod
    def _query(db: sqlite3.Connection, name: str) -> StoreRecord | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM stores WHERE name = ?", (name,)).fetchone()
        return None if row is None else StoreRecord._from_row(row)

    def _remember(self, record: StoreRecord) -> None:
        self._cache[record.name] = record
        if len(self._cache) > self._cached:
            self._cache.popitem(last=False)

    def settle(self, name: str, record: StoreRecord | None, *, existed: bool) -> None:
        """After a write: ``name`` now points at ``record`` (None: it is gone).

        ``existed``: whether the name pointed somewhere before the write.
        """
        if record is None:
            self._cache.pop(name, None)
        else:
            self._remember(record)
        self._count += (record is not None) - existed

    def page(self, *, offset: int, limit: int) -> list[StoreRecord]:
        """Records sorted by name (blocking: skipping ``offset`` rows takes a while, so
        call it in a worker thread; each thread reads through a connection of its own).
        """
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = _connect(self._path)
            with self._readers_lock:
                self._readers.append(db)
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM stores ORDER BY name LIMIT ? OFFSET ?", (limit, offset)
        )
        return [StoreRecord._from_row(row) for row in rows]

    def readable(self) -> bool:
        """Whether the index answers a read (one row at most, however many stores)."""
        try:
            self._db.execute("SELECT 1 FROM stores LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return True

    def count(self) -> int:
        """The number of names, kept in memory."""
        return self._count

    def totals(self) -> tuple[int, int, int]:
        """Stores, keys and bytes: the number of names, and their files' keys and sizes summed.

        Reads through a connection of its own, so it may run in a worker thread
        while the event loop's thread uses the index (WAL lets them both read).
        """
        reader = sqlite3.connect(f"{self._path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = reader.execute(
                "SELECT count(*), coalesce(sum(num_keys), 0), coalesce(sum(size), 0) FROM stores"
            ).fetchone()
        finally:
            reader.close()
        return int(row[0]), int(row[1]), int(row[2])

    def put(
        self, name: str, sha256: str, size: int, num_keys: int, *, replace: bool
    ) -> tuple[StoreRecord | None, StoreRecord | None]:
        """Point ``name`` at a blob (blocking: a write; see the class).

        Returns ``(new, old)``: ``new`` is None when the name was taken and
        ``replace`` is false; ``old`` is the record it replaced, if any.
        """
        created = datetime.now(UTC).replace(microsecond=0)
        record = StoreRecord(name, sha256, size, num_keys, created)
        db = self._writer
        with db:
            db.execute("BEGIN IMMEDIATE")
            old = self._query(db, name)
            if old is not None and not replace:
                return None, old
            db.execute(
                f"INSERT OR REPLACE INTO stores ({_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                (name, sha256, size, num_keys, created.isoformat()),
            )
        return record, old

    def delete(self, name: str) -> StoreRecord | None:
        """Remove ``name``; return the record it had, or None (blocking: a write)."""
        db = self._writer
        with db:
            db.execute("BEGIN IMMEDIATE")
            old = self._query(db, name)
            if old is not None:
                db.execute("DELETE FROM stores WHERE name = ?", (name,))
        return old

    def references(self, sha256: str) -> bool:
        """Whether any name still points at this blob."""
        row = self._db.execute("SELECT 1 FROM stores WHERE sha256 = ? LIMIT 1", (sha256,))
        return row.fetchone() is not None

    def blobs(self) -> set[str]:
        return {sha for (sha,) in self._db.execute("SELECT DISTINCT sha256 FROM stores")}


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db
