"""The index in SQLite, in the data directory: for one machine, any number of processes.

Every change is one ``BEGIN IMMEDIATE`` transaction, which SQLite runs one at
a time across every process using the file, so the rules of ``interfaces``
(leases, doomed blobs) hold without further locks. WAL lets reads go on
while a write is under way. Reads of one name are quick and run on the
calling thread; everything else runs in a worker thread, each thread
reading through a connection of its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from ..errors import InsufficientStorageError
from .interfaces import LeaseLostError, PutResult, StoreRecord, Totals

__all__ = ["SqliteIndex", "disk_full"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS stores (
    name     TEXT PRIMARY KEY,
    sha256   TEXT NOT NULL,
    size     INTEGER NOT NULL,
    num_keys INTEGER NOT NULL,
    created  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stores_sha256 ON stores (sha256);
CREATE TABLE IF NOT EXISTS leases (
    token   TEXT PRIMARY KEY,
    sha256  TEXT NOT NULL,
    expires TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS leases_sha256 ON leases (sha256);
CREATE TABLE IF NOT EXISTS doomed (
    sha256 TEXT PRIMARY KEY,
    since  TEXT NOT NULL
) WITHOUT ROWID;
"""
_COLUMNS = "name, sha256, size, num_keys, created, suffix"
#: How long a write waits for another process's write to finish.
_BUSY_TIMEOUT_MS = 30_000

_T = TypeVar("_T")


def disk_full(err: sqlite3.Error) -> bool:
    """Whether SQLite failed for want of disk space."""
    return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _record(row: tuple[str, str, int, int, str, str]) -> StoreRecord:
    name, sha256, size, num_keys, created, suffix = row
    return StoreRecord(name, sha256, size, num_keys, datetime.fromisoformat(created), suffix)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class SqliteIndex:
    """Names to store records, in ``index.sqlite3``.

    ``make_room`` is called when a write that frees space (a delete, the end
    of a lease) finds the disk full; the write is then tried once more.
    """

    def __init__(self, path: Path, make_room: Callable[[], None] | None = None) -> None:
        self.path = path
        self._make_room = make_room
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # Work under way in worker threads: closing waits for it (a connection
        # closed under a running query would crash the process).
        self._idle = threading.Condition()
        self._running = 0
        db = self._db()
        with db:
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(stores)")}
            if "suffix" not in columns:  # an index written before stores kept their extension
                db.execute("ALTER TABLE stores ADD COLUMN suffix TEXT NOT NULL DEFAULT '.kas'")

    @classmethod
    async def open(cls, path: Path, *, make_room: Callable[[], None] | None = None) -> SqliteIndex:
        return await asyncio.to_thread(cls, path, make_room)

    def describe(self) -> str:
        return str(self.path)

    def _db(self) -> sqlite3.Connection:
        """This thread's connection."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
            with self._connections_lock:
                self._connections.append(db)
        return db

    async def _run(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` in a worker thread, counted as under way until it ends."""

        def run() -> _T:
            with self._idle:
                self._running += 1
            try:
                return work()
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        def close() -> None:
            with self._idle:
                self._idle.wait_for(lambda: self._running == 0)
                with self._connections_lock:
                    connections, self._connections = self._connections, []
                for db in connections:
                    db.close()

        await asyncio.to_thread(close)

    # Reading

    @staticmethod
    def _query(db: sqlite3.Connection, name: str) -> StoreRecord | None:
        row = db.execute(f"SELECT {_COLUMNS} FROM stores WHERE name = ?", (name,)).fetchone()
        return None if row is None else _record(row)

    async def get(self, name: str) -> StoreRecord | None:
        # One row by its key: quicker than a hop to a worker thread.
        return self._query(self._db(), name)

    async def page(self, *, offset: int, limit: int) -> list[StoreRecord]:
        def page() -> list[StoreRecord]:
            rows = self._db().execute(
                f"SELECT {_COLUMNS} FROM stores ORDER BY name LIMIT ? OFFSET ?", (limit, offset)
            )
            return [_record(row) for row in rows]

        return await self._run(page)

    async def count(self) -> int:
        def count() -> int:
            return int(self._db().execute("SELECT count(*) FROM stores").fetchone()[0])

        return await self._run(count)

    async def totals(self) -> Totals:
        def totals() -> Totals:
            row = (
                self._db()
                .execute(
                    "SELECT count(*), coalesce(sum(num_keys), 0), coalesce(sum(size), 0) "
                    "FROM stores"
                )
                .fetchone()
            )
            return Totals(int(row[0]), int(row[1]), int(row[2]))

        return await self._run(totals)

    async def readable(self) -> bool:
        try:
            self._db().execute("SELECT 1 FROM stores LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return True

    async def referenced(self) -> set[str]:
        def referenced() -> set[str]:
            rows = self._db().execute("SELECT DISTINCT sha256 FROM stores")
            return {sha256 for (sha256,) in rows}

        return await self._run(referenced)

    async def doomed(self, *, older_than: datetime) -> list[str]:
        def doomed() -> list[str]:
            rows = self._db().execute(
                "SELECT sha256 FROM doomed WHERE since < ?", (older_than.isoformat(),)
            )
            return [sha256 for (sha256,) in rows]

        return await self._run(doomed)

    # Writing: each a transaction in a worker thread

    async def _write(
        self, change: Callable[[sqlite3.Connection], _T], *, frees: bool = False
    ) -> _T:
        """Run ``change`` in one immediate transaction; 507 when the disk is full.

        ``frees``: the change frees space, so it may use the room ``make_room`` makes.
        """

        def write() -> _T:
            db = self._db()
            for attempt in range(2):
                try:
                    with db:
                        db.execute("BEGIN IMMEDIATE")
                        return change(db)
                except sqlite3.Error as err:
                    if not disk_full(err):
                        raise
                    if attempt or not frees or self._make_room is None:
                        raise InsufficientStorageError() from None
                    self._make_room()
            raise AssertionError("unreachable")

        return await self._run(write)

    @staticmethod
    def _doom_if_free(db: sqlite3.Connection, sha256: str) -> str | None:
        """Doom ``sha256`` if no name and no lease points at it (inside a transaction)."""
        held = db.execute(
            "SELECT 1 FROM stores WHERE sha256 = ? UNION ALL "
            "SELECT 1 FROM leases WHERE sha256 = ? LIMIT 1",
            (sha256, sha256),
        ).fetchone()
        if held is not None:
            return None
        inserted = db.execute(
            "INSERT OR IGNORE INTO doomed (sha256, since) VALUES (?, ?)",
            (sha256, _now().isoformat()),
        ).rowcount
        # One doomed already is its doomer's to remove: two removers could take a
        # blob uploaded again in between.
        return sha256 if inserted else None

    async def lease(self, sha256: str, token: str, *, expires: datetime) -> bool:
        def lease(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM doomed WHERE sha256 = ?", (sha256,)).fetchone():
                return False
            db.execute(
                "INSERT OR REPLACE INTO leases (token, sha256, expires) VALUES (?, ?, ?)",
                (token, sha256, expires.isoformat()),
            )
            return True

        return await self._write(lease)

    async def put(self, record: StoreRecord, *, token: str, replace: bool) -> PutResult:
        created = _now()

        def put(db: sqlite3.Connection) -> PutResult:
            old = self._query(db, record.name)
            ended = db.execute(
                "DELETE FROM leases WHERE token = ? AND sha256 = ? RETURNING token",
                (token, record.sha256),
            ).fetchall()
            if not ended:  # expired, and perhaps its blob removed
                raise LeaseLostError(record.sha256)
            if old is not None and not replace:
                return PutResult(None, old, self._doom_if_free(db, record.sha256))
            new = StoreRecord(
                record.name, record.sha256, record.size, record.num_keys, created, record.suffix
            )
            db.execute(
                f"INSERT OR REPLACE INTO stores ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                (new.name, new.sha256, new.size, new.num_keys, created.isoformat(), new.suffix),
            )
            doomed = None
            if old is not None and old.sha256 != new.sha256:
                doomed = self._doom_if_free(db, old.sha256)
            return PutResult(new, old, doomed)

        return await self._write(put)

    async def release(self, token: str) -> str | None:
        def release(db: sqlite3.Connection) -> str | None:
            row = db.execute("SELECT sha256 FROM leases WHERE token = ?", (token,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM leases WHERE token = ?", (token,))
            return self._doom_if_free(db, row[0])

        return await self._write(release, frees=True)

    async def delete(self, name: str) -> tuple[StoreRecord | None, str | None]:
        def delete(db: sqlite3.Connection) -> tuple[StoreRecord | None, str | None]:
            old = self._query(db, name)
            if old is None:
                return None, None
            db.execute("DELETE FROM stores WHERE name = ?", (name,))
            return old, self._doom_if_free(db, old.sha256)

        return await self._write(delete, frees=True)

    async def forget(self, sha256: str) -> None:
        def forget(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM doomed WHERE sha256 = ?", (sha256,))

        await self._write(forget, frees=True)

    async def expire_leases(self, *, now: datetime) -> list[str]:
        def expire(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "DELETE FROM leases WHERE expires < ? RETURNING sha256", (now.isoformat(),)
            ).fetchall()
            shas = sorted({sha256 for (sha256,) in rows})
            return [sha for sha in shas if self._doom_if_free(db, sha)]

        return await self._write(expire, frees=True)

    async def doom_orphans(self, candidates: list[str]) -> list[str]:
        def doom(db: sqlite3.Connection) -> list[str]:
            return [sha for sha in candidates if self._doom_if_free(db, sha)]

        return await self._write(doom, frees=True)
