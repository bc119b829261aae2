"""The index in PostgreSQL: for any number of processes on any number of machines.

Reads run on their own, each statement seeing what is committed when it
starts (autocommit, READ COMMITTED), so nothing is ever served from a cache.
A read whose pooled connection turns out broken (the server restarted) is
tried once more after the pool has replaced its stale connections; a write
is not (it may have been committed), so after a restart at most one write
fails. Checking every connection as it leaves the pool would cost a round
trip per request instead.

Every change that may doom a blob (``lease``, ``put``, ``release``,
``delete``, ``expire_leases``, ``doom_orphans``) begins its transaction by
taking a transaction-scoped advisory lock on each sha256 it touches, keyed
by ``hashtextextended(sha256, 0)``. The check "no name and no lease points
at it" and the insert into ``doomed`` are then atomic with respect to any
other change of the same sha256, a concurrent ``lease`` included. Locks are
always taken in the order of their keys, so two changes never deadlock.

Which sha256 a name or a lease points at is only known by reading it, so a
change reads it first, locks, and reads it again under the lock; if it moved
meanwhile (another process committed in between), the transaction is rolled
back and tried again with the sha256 it found.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..errors import StorageUnavailableError
from .interfaces import DEFAULT_SUFFIX, LeaseLostError, PutResult, StoreRecord, Totals

__all__ = ["PostgresIndex"]

logger = logging.getLogger("app.storage")

#: One advisory lock key for creating the schema, apart from any sha256's.
_SCHEMA_LOCK = "kastore-service schema"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS stores (
    name     text COLLATE "C" PRIMARY KEY,
    sha256   text NOT NULL,
    size     bigint NOT NULL,
    num_keys bigint NOT NULL,
    created  timestamptz NOT NULL,
    suffix   text NOT NULL DEFAULT '{DEFAULT_SUFFIX}'
);
CREATE INDEX IF NOT EXISTS stores_sha256 ON stores (sha256);
CREATE TABLE IF NOT EXISTS leases (
    token   text PRIMARY KEY,
    sha256  text NOT NULL,
    expires timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_sha256 ON leases (sha256);
CREATE TABLE IF NOT EXISTS doomed (
    sha256 text PRIMARY KEY,
    since  timestamptz NOT NULL
)
"""
_COLUMNS = "name, sha256, size, num_keys, created, suffix"
#: Lock each distinct key once, in key order (a sorted subquery feeds the calls in order).
_LOCK = """
SELECT count(pg_advisory_xact_lock(key))
FROM (SELECT DISTINCT hashtextextended(sha256, 0) AS key
      FROM unnest(%s::text[]) AS sha256 ORDER BY key) AS keys
"""
#: Of the given sha256s, those no name and no lease points at.
_FREE = """
SELECT sha256 FROM unnest(%s::text[]) AS sha256
WHERE NOT EXISTS (SELECT 1 FROM stores WHERE stores.sha256 = sha256.sha256)
  AND NOT EXISTS (SELECT 1 FROM leases WHERE leases.sha256 = sha256.sha256)
"""
#: How long ``open`` waits for the server, and ``readable`` for a connection.
_CONNECT_TIMEOUT_S = 10
_READABLE_TIMEOUT_S = 5.0
#: Times a change is tried again when what it locked moved before it got the lock.
_MAX_ATTEMPTS = 100

_T = TypeVar("_T")
_Conn = psycopg.AsyncConnection[tuple[Any, ...]]


class _Moved(Exception):
    """A name or lease pointed elsewhere once locked: roll back and try again."""


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _record(row: tuple[Any, ...]) -> StoreRecord:
    name, sha256, size, num_keys, created, suffix = row
    return StoreRecord(name, sha256, int(size), int(num_keys), created.astimezone(UTC), suffix)


def _describe(url: str) -> str:
    """``url`` without its password, for logs and errors."""
    if "://" in url:
        parts = urlsplit(url)
        userinfo, at, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0] + at  # as written: still percent-encoded
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
        return urlunsplit(parts._replace(netloc=user + host, query=query))
    params = conninfo_to_dict(url)
    params.pop("password", None)
    return make_conninfo("", **params)


async def _lock(conn: _Conn, shas: Iterable[str]) -> None:
    """Take the advisory lock of each sha256, for the rest of the transaction."""
    await conn.execute(_LOCK, (sorted(set(shas)),))


async def _doom_free(conn: _Conn, shas: list[str]) -> list[str]:
    """Doom those of ``shas`` (locked) no name and no lease points at; return them.

    One doomed already is not returned: its removal is its doomer's to make
    (two removers could take a blob uploaded again in between).
    """
    free = {sha for (sha,) in await (await conn.execute(_FREE, (shas,))).fetchall()}
    doomed = [sha for sha in dict.fromkeys(shas) if sha in free]
    if not doomed:
        return []
    cursor = await conn.execute(
        "INSERT INTO doomed (sha256, since) SELECT unnest(%s::text[]), %s "
        "ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
        (doomed, _now()),
    )
    inserted = {sha for (sha,) in await cursor.fetchall()}
    return [sha for sha in doomed if sha in inserted]


async def _query(conn: _Conn, name: str, *, lock: bool = False) -> StoreRecord | None:
    suffix = " FOR UPDATE" if lock else ""
    cursor = await conn.execute(f"SELECT {_COLUMNS} FROM stores WHERE name = %s{suffix}", (name,))
    row = await cursor.fetchone()
    return None if row is None else _record(row)


class PostgresIndex:
    """Names to store records, in the tables ``stores``, ``leases`` and ``doomed``."""

    def __init__(self, url: str, pool: AsyncConnectionPool[_Conn]) -> None:
        self._url = url
        self._pool = pool

    @classmethod
    async def open(
        cls, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0
    ) -> PostgresIndex:
        """Connect to the database at ``url`` and create the tables it lacks.

        Several processes may open the same database at once. ``timeout``: how
        long a request waits for a connection (503 beyond).

        Raises:
            RuntimeError: the server cannot be reached or refuses the connection.
        """
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S
            )
            async with conn, conn.transaction():
                await _lock(conn, [_SCHEMA_LOCK])
                for statement in _SCHEMA.split(";"):
                    await conn.execute(statement)
        except psycopg.OperationalError as err:
            raise RuntimeError(f"cannot connect to the index at {_describe(url)}: {err}") from err
        pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT_S},
            timeout=timeout,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
        except PoolTimeout as err:
            await pool.close()
            raise RuntimeError(f"cannot connect to the index at {_describe(url)}: {err}") from err
        return cls(url, pool)

    def describe(self) -> str:
        return _describe(self._url)

    async def close(self) -> None:
        await self._pool.close()

    # Reading

    async def _read(
        self, query: Callable[[_Conn], Awaitable[_T]], *, timeout: float | None = None
    ) -> _T:
        """Run ``query``; once more if its connection had broken (a server restart).

        ``timeout``: how long to wait for a connection, if not the pool's.
        """
        try:
            async with self._pool.connection(timeout) as conn:
                return await query(conn)
        except PoolTimeout as err:
            # No connection at all: trying again would only wait as long again.
            raise self._unavailable(err) from None
        except psycopg.OperationalError:
            # The pool has dropped that connection; its idle ones may be as stale.
            await self._pool.check()
        try:
            async with self._pool.connection(timeout) as conn:
                return await query(conn)
        except (PoolTimeout, psycopg.OperationalError) as err:
            raise self._unavailable(err) from None

    def _unavailable(self, err: Exception) -> StorageUnavailableError:
        logger.error("the index at %s cannot be reached: %s", self.describe(), err)
        return StorageUnavailableError("the index (PostgreSQL)")

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        async def rows(conn: _Conn) -> list[tuple[Any, ...]]:
            return await (await conn.execute(sql, params)).fetchall()

        return await self._read(rows)

    async def get(self, name: str) -> StoreRecord | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM stores WHERE name = %s", (name,))
        return _record(rows[0]) if rows else None

    async def page(self, *, offset: int, limit: int) -> list[StoreRecord]:
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM stores ORDER BY name LIMIT %s OFFSET %s", (limit, offset)
        )
        return [_record(row) for row in rows]

    async def count(self) -> int:
        [(count,)] = await self._rows("SELECT count(*) FROM stores")
        return int(count)

    async def totals(self) -> Totals:
        [(stores, keys, size)] = await self._rows(
            "SELECT count(*), coalesce(sum(num_keys), 0), coalesce(sum(size), 0) FROM stores"
        )
        return Totals(int(stores), int(keys), int(size))

    async def readable(self) -> bool:
        async def probe(conn: _Conn) -> None:
            await conn.execute("SELECT 1 FROM stores LIMIT 1")

        try:
            await self._read(probe, timeout=_READABLE_TIMEOUT_S)
        except (psycopg.Error, StorageUnavailableError):  # PoolTimeout included
            return False
        return True

    async def referenced(self) -> set[str]:
        return {sha256 for (sha256,) in await self._rows("SELECT DISTINCT sha256 FROM stores")}

    async def doomed(self, *, older_than: datetime) -> list[str]:
        rows = await self._rows(
            "SELECT sha256 FROM doomed WHERE since < %s ORDER BY since, sha256", (older_than,)
        )
        return [sha256 for (sha256,) in rows]

    # Writing: each a transaction that first locks the sha256s it may doom

    async def _write(self, change: Callable[[_Conn], Awaitable[_T]]) -> _T:
        """Run ``change`` in one transaction, again if it finds it locked the wrong sha256.

        A broken connection is not tried again (the change may have been
        committed), but the pool replaces its stale connections for the next call.
        """
        try:
            async with self._pool.connection() as conn:
                for _ in range(_MAX_ATTEMPTS):
                    try:
                        async with conn.transaction():
                            return await change(conn)
                    except _Moved:
                        continue
        except PoolTimeout as err:
            raise self._unavailable(err) from None
        except psycopg.OperationalError as err:
            await self._pool.check()
            raise self._unavailable(err) from None
        raise RuntimeError(f"a change kept racing others after {_MAX_ATTEMPTS} attempts")

    async def lease(self, sha256: str, token: str, *, expires: datetime) -> bool:
        async def lease(conn: _Conn) -> bool:
            await _lock(conn, [sha256])
            cursor = await conn.execute("SELECT 1 FROM doomed WHERE sha256 = %s", (sha256,))
            if await cursor.fetchone() is not None:
                return False
            await conn.execute(
                "INSERT INTO leases (token, sha256, expires) VALUES (%s, %s, %s) "
                "ON CONFLICT (token) DO UPDATE "
                "SET sha256 = excluded.sha256, expires = excluded.expires",
                (token, sha256, expires),
            )
            return True

        return await self._write(lease)

    async def put(self, record: StoreRecord, *, token: str, replace: bool) -> PutResult:
        created = _now()
        new = StoreRecord(
            record.name, record.sha256, record.size, record.num_keys, created, record.suffix
        )
        guess = await self.get(record.name)

        async def put(conn: _Conn) -> PutResult:
            nonlocal guess
            locked = {new.sha256} if guess is None else {new.sha256, guess.sha256}
            await _lock(conn, locked)
            old = await _query(conn, new.name, lock=True)
            if old is not None and old.sha256 not in locked:
                guess = old
                raise _Moved
            ended = await conn.execute(
                "DELETE FROM leases WHERE token = %s AND sha256 = %s RETURNING token",
                (token, new.sha256),
            )
            if await ended.fetchone() is None:  # expired, and perhaps its blob removed
                raise LeaseLostError(new.sha256)
            if old is not None and not replace:
                return PutResult(None, old, next(iter(await _doom_free(conn, [new.sha256])), None))
            values = (new.name, new.sha256, new.size, new.num_keys, new.created, new.suffix)
            if old is None:
                cursor = await conn.execute(
                    f"INSERT INTO stores ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (name) DO NOTHING RETURNING name",
                    values,
                )
                if await cursor.fetchone() is None:  # another process named it meanwhile
                    guess = await _query(conn, new.name)
                    raise _Moved
                return PutResult(new, None)
            await conn.execute(
                "UPDATE stores SET sha256 = %s, size = %s, num_keys = %s, created = %s, "
                "suffix = %s WHERE name = %s",
                (*values[1:], new.name),
            )
            doomed = None
            if old.sha256 != new.sha256:
                doomed = next(iter(await _doom_free(conn, [old.sha256])), None)
            return PutResult(new, old, doomed)

        return await self._write(put)

    async def release(self, token: str) -> str | None:
        async def release(conn: _Conn) -> str | None:
            cursor = await conn.execute("SELECT sha256 FROM leases WHERE token = %s", (token,))
            row = await cursor.fetchone()
            if row is None:
                return None
            await _lock(conn, [row[0]])
            cursor = await conn.execute(
                "DELETE FROM leases WHERE token = %s AND sha256 = %s RETURNING sha256",
                (token, row[0]),
            )
            if await cursor.fetchone() is None:
                raise _Moved
            return next(iter(await _doom_free(conn, [row[0]])), None)

        return await self._write(release)

    async def delete(self, name: str) -> tuple[StoreRecord | None, str | None]:
        async def delete(conn: _Conn) -> tuple[StoreRecord | None, str | None]:
            guess = await _query(conn, name)
            if guess is None:
                return None, None
            await _lock(conn, [guess.sha256])
            cursor = await conn.execute(
                f"DELETE FROM stores WHERE name = %s AND sha256 = %s RETURNING {_COLUMNS}",
                (name, guess.sha256),
            )
            row = await cursor.fetchone()
            if row is None:
                raise _Moved
            return _record(row), next(iter(await _doom_free(conn, [guess.sha256])), None)

        return await self._write(delete)

    async def forget(self, sha256: str) -> None:
        async def forget(conn: _Conn) -> None:
            await conn.execute("DELETE FROM doomed WHERE sha256 = %s", (sha256,))

        await self._read(forget)  # idempotent: safe to try again like a read

    async def expire_leases(self, *, now: datetime) -> list[str]:
        async def expire(conn: _Conn) -> list[str]:
            cursor = await conn.execute(
                "SELECT DISTINCT sha256 FROM leases WHERE expires < %s", (now,)
            )
            shas = [sha256 for (sha256,) in await cursor.fetchall()]
            if not shas:
                return []
            await _lock(conn, shas)
            # Leases that expired meanwhile on other sha256s wait for the next call.
            cursor = await conn.execute(
                "DELETE FROM leases WHERE expires < %s AND sha256 = ANY(%s) RETURNING sha256",
                (now, shas),
            )
            ended = sorted({sha256 for (sha256,) in await cursor.fetchall()})
            return await _doom_free(conn, ended)

        return await self._write(expire)

    async def doom_orphans(self, candidates: list[str]) -> list[str]:
        if not candidates:
            return []

        async def doom(conn: _Conn) -> list[str]:
            await _lock(conn, candidates)
            return await _doom_free(conn, candidates)

        return await self._write(doom)
