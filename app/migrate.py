"""``python -m app migrate``: copy a local data directory into the configured storage.

The source is a data directory (its ``blobs/`` folder and ``index.sqlite3``),
given by ``--from-data-dir``; the target is the storage the ``KASTORE_*``
settings name, as the server would open it (usually ``KASTORE_BLOB_URL`` and
``KASTORE_INDEX_URL``: S3 and PostgreSQL). It runs in three passes over the
source index, a page of names at a time:

1. **Plan.** Each name is looked up in the target: absent (copy), present with
   the same sha256 (skip: a re-run resumes where the last one stopped), or
   present with other content (a conflict). Conflicts stop the migration
   before anything is written, unless ``--replace``. ``--dry-run`` stops here.
2. **Copy.** Each blob is streamed from its file into the target blob store in
   pieces (``BlobStore.stage``), hashed on the way; a sha256 or size other than
   the index's stops the migration with the store's name (the source is
   corrupted, and nothing is named for it). The staged blob is then published
   under the same name and file extension through ``Storage.publish``, the
   service's own lease-commit-put sequence, so a server already running on
   the target sees each store whole or not at all.
3. **Verify** (default; ``--no-verify`` skips it). Every source name is read
   back from the target: the index must point it at the source's sha256, and
   the blob's bytes, streamed from the target blob store, must hash to it.
   Step 2 hashes the bytes sent; this hashes what the target actually keeps
   and serves, through the server's own read path: it catches a blob missing
   behind a skipped name, an object damaged in the store, or a target that is
   not the one the servers will use. It reads everything once more, which a
   one-off copy, after which the source may be thrown away, can afford.

The index's ``created`` times are not carried over: the target's index sets
them when each name is published.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import sqlite3
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from .config import Settings
from .errors import ServiceError, StoreExistsError
from .main import StartupError, open_storage
from .storage import Storage, StoreRecord, Upload
from .storage.local_blobs import LocalBlobs
from .storage.sqlite_index import SqliteIndex

__all__ = ["MigrationError", "Summary", "add_arguments", "migrate", "run"]

#: Source records read from the index at a time.
PAGE = 500
#: Bytes of a source file read at a time.
PIECE = 1 << 20
#: Conflicting names shown in the error.
SHOWN = 5

Action = Literal["copy", "skip", "replace"]


class MigrationError(Exception):
    """The migration stopped; the message says why and what to do, in one line."""


@dataclass(slots=True)
class Summary:
    """What a migration did."""

    copied: int = 0
    replaced: int = 0
    skipped: int = 0
    copied_bytes: int = 0
    verified_stores: int = 0
    verified_blobs: int = 0
    verified_bytes: int = 0
    conflicts: list[str] = field(default_factory=list)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``migrate`` command's options."""
    parser.add_argument(
        "--from-data-dir",
        type=Path,
        required=True,
        metavar="PATH",
        help="the local data directory to copy (its blobs/ and index.sqlite3)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="overwrite names the target holds with other content (default: stop, copy nothing)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be copied; write nothing"
    )
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read every store back from the target and check its sha256 (default: on)",
    )


def run(args: argparse.Namespace, settings: Settings, *, out: TextIO | None = None) -> int:
    """Run ``python -m app migrate`` with parsed ``args``; return the exit status."""
    out = out or sys.stdout
    try:
        asyncio.run(
            _run(
                args.from_data_dir,
                settings,
                replace=args.replace,
                dry_run=args.dry_run,
                verify=args.verify,
                out=out,
            )
        )
    except (MigrationError, StartupError) as err:
        print(f"kastore-service: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except Exception as err:  # the target failed between stores (an index read, a read back)
        print(f"kastore-service: migration stopped: {_one_line(err)}; run again", file=sys.stderr)
        return 1
    return 0


async def _run(
    source: Path, settings: Settings, *, replace: bool, dry_run: bool, verify: bool, out: TextIO
) -> Summary:
    _refuse_same(source, settings)
    index = await _open_source(source)
    try:
        target = await open_storage(settings)
        try:
            print(f"from {source} (blobs and index.sqlite3) to {target.describe()}", file=out)
            return await migrate(
                index,
                LocalBlobs(source),
                target,
                replace=replace,
                dry_run=dry_run,
                verify=verify,
                out=out,
            )
        finally:
            await target.close()
    finally:
        await index.close()


def _refuse_same(source: Path, settings: Settings) -> None:
    """A target index in the source directory would find every name there already."""
    if settings.index_url is None and settings.data_dir.resolve() == source.resolve():
        raise MigrationError(
            f"the target is the source ({source}): set KASTORE_BLOB_URL and KASTORE_INDEX_URL "
            "(or KASTORE_DATA_DIR) to the storage to copy into"
        )


async def _open_source(source: Path) -> SqliteIndex:
    path = source / "index.sqlite3"
    if not path.is_file() or not (source / "blobs").is_dir():
        raise MigrationError(
            f"{source} is not a data directory (no index.sqlite3 and blobs/ in it): give "
            "--from-data-dir the directory KASTORE_DATA_DIR named"
        )
    try:
        return await SqliteIndex.open(path)
    except sqlite3.Error as err:
        raise MigrationError(f"cannot read the source index {path}: {err}") from None


async def migrate(
    source: SqliteIndex,
    source_blobs: LocalBlobs,
    target: Storage,
    *,
    replace: bool = False,
    dry_run: bool = False,
    verify: bool = True,
    out: TextIO,
) -> Summary:
    """Copy every store of ``source`` into ``target``; see the module's docstring.

    Progress lines and a summary go to ``out``.

    Raises:
        MigrationError: a conflicting name without ``replace``, a corrupted
            source file, a failure of the target (after which a re-run resumes),
            or a store that does not verify.
    """
    summary = Summary()
    await _plan(source, target, summary, dry_run=dry_run, out=out)
    if summary.conflicts and not replace:
        shown = ", ".join(summary.conflicts[:SHOWN])
        extra = len(summary.conflicts) - SHOWN
        more = f" and {extra} more" if extra > 0 else ""
        raise MigrationError(
            f"{len(summary.conflicts)} store(s) exist in the target with other content "
            f"({shown}{more}); nothing was copied; run again with --replace to overwrite them"
        )
    if dry_run:
        print(
            f"dry run: would copy {summary.copied}, replace {summary.replaced}, "
            f"skip {summary.skipped} (already there); nothing was written",
            file=out,
        )
        return summary
    summary.copied = summary.replaced = summary.skipped = 0
    async for record in _records(source):
        action = await _action(target, record)
        if action == "skip":
            summary.skipped += 1
            print(f"skipped  {record.name}  {record.size:,} bytes (already there)", file=out)
            continue
        if action == "replace" and not replace:
            raise MigrationError(
                f"store {record.name!r} appeared in the target with other content during the "
                "migration; run again (with --replace to overwrite it)"
            )
        await _copy(source_blobs, target, record, replace=action == "replace")
        summary.copied_bytes += record.size
        if action == "replace":
            summary.replaced += 1
            print(f"replaced {record.name}  {record.size:,} bytes", file=out)
        else:
            summary.copied += 1
            print(f"copied   {record.name}  {record.size:,} bytes", file=out)
    if verify:
        await _verify(source, target, summary)
    print(_summary_line(summary, verified=verify), file=out)
    return summary


async def _records(index: SqliteIndex) -> AsyncIterator[StoreRecord]:
    """Every record of the source, sorted by name, a page at a time."""
    offset = 0
    while True:
        page = await index.page(offset=offset, limit=PAGE)
        for record in page:
            yield record
        if len(page) < PAGE:
            return
        offset += len(page)


async def _action(target: Storage, record: StoreRecord) -> Action:
    there = await target.index.get(record.name)
    if there is None:
        return "copy"
    return "skip" if there.sha256 == record.sha256 else "replace"


async def _plan(
    source: SqliteIndex, target: Storage, summary: Summary, *, dry_run: bool, out: TextIO
) -> None:
    async for record in _records(source):
        action = await _action(target, record)
        if action == "copy":
            summary.copied += 1
        elif action == "skip":
            summary.skipped += 1
        else:
            summary.replaced += 1
            summary.conflicts.append(record.name)
        if dry_run:
            print(f"would {action:<8} {record.name}  {record.size:,} bytes", file=out)


async def _read(path: Path) -> AsyncIterator[bytes]:
    """The file at ``path`` in pieces of ``PIECE`` bytes, read in a worker thread."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        while piece := await asyncio.to_thread(file.read, PIECE):
            yield piece
    finally:
        file.close()


async def _copy(
    source_blobs: LocalBlobs, target: Storage, record: StoreRecord, *, replace: bool
) -> None:
    """Stream one store's file into the target, check it, and publish it under its name."""
    name = record.name
    path = source_blobs.path(record.sha256)
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
    except FileNotFoundError:
        raise MigrationError(
            f"store {name!r}: its file {path} is missing from the source; delete the store "
            "from the source (or restore the file from a backup), then run again"
        ) from None
    if size != record.size:
        raise MigrationError(
            f"store {name!r}: its file {path} has {size:,} bytes, the index says "
            f"{record.size:,}: the source is corrupted; restore it from a backup"
        )
    try:
        staged = await target.blobs.stage(_read(path), limit=record.size)
    except OverflowError:
        raise MigrationError(
            f"store {name!r}: its {record.size:,} bytes are more than the target blob store "
            "takes in one object (5 GiB on S3)"
        ) from None
    except ServiceError as err:
        raise MigrationError(f"store {name!r}: {err.detail}") from None
    except Exception as err:
        raise MigrationError(f"store {name!r}: {_one_line(err)}; run again to resume") from None
    try:
        if staged.sha256 != record.sha256:
            raise MigrationError(
                f"store {name!r}: its file {path} has sha256 {staged.sha256}, the index says "
                f"{record.sha256}: the source is corrupted; nothing was stored for it; restore "
                "the file from a backup, or delete the store from the source"
            )
        upload = Upload(staged, record.num_keys)
        await target.publish(name, upload, replace=replace, suffix=record.suffix)
    except StoreExistsError:
        raise MigrationError(
            f"store {name!r} appeared in the target during the migration; run again "
            "(with --replace to overwrite it if its content differs)"
        ) from None
    except ServiceError as err:
        raise MigrationError(f"store {name!r}: {err.detail}") from None
    except MigrationError:
        raise
    except Exception as err:
        raise MigrationError(f"store {name!r}: {_one_line(err)}; run again to resume") from None
    finally:
        # A failed clean-up must not hide the error; collect_garbage removes what it leaves.
        with contextlib.suppress(Exception):
            await target.blobs.discard(staged)


async def _verify(source: SqliteIndex, target: Storage, summary: Summary) -> None:
    """Check every source name in the target: its sha256, and the bytes of its blob."""
    checked: set[str] = set()
    async for record in _records(source):
        there = await target.index.get(record.name)
        if there is None or there.sha256 != record.sha256:
            found = "no such name" if there is None else f"sha256 {there.sha256}"
            raise MigrationError(
                f"verification failed: store {record.name!r} in the target has {found}, "
                f"expected {record.sha256}; run again"
            )
        summary.verified_stores += 1
        if record.sha256 in checked:
            continue
        digest, size = await _hash_blob(target, record)
        if digest != record.sha256 or size != record.size:
            raise MigrationError(
                f"verification failed: the target's blob of store {record.name!r} has "
                f"{size:,} bytes hashing to {digest}, expected {record.size:,} bytes hashing to "
                f"{record.sha256}; remove the store from the target and run again"
            )
        checked.add(record.sha256)
        summary.verified_blobs += 1
        summary.verified_bytes += size


async def _hash_blob(target: Storage, record: StoreRecord) -> tuple[str, int]:
    """The sha256 and size of a blob as the target blob store serves it."""
    try:
        reader = await target.blobs.open(record.sha256)
    except FileNotFoundError:
        raise MigrationError(
            f"verification failed: store {record.name!r} names {record.sha256}, which is not "
            f"in the target blob store {target.blobs.describe()}; remove the store from the "
            "target and run again"
        ) from None
    digest = hashlib.sha256()
    size = 0
    async for piece in reader.stream(0, reader.size):
        size += len(piece)
        await asyncio.to_thread(digest.update, piece)
    return digest.hexdigest(), size


def _summary_line(summary: Summary, *, verified: bool) -> str:
    line = (
        f"done: {summary.copied} copied, {summary.replaced} replaced "
        f"({summary.copied_bytes:,} bytes), {summary.skipped} skipped (already there)"
    )
    if verified:
        line += (
            f"; verified {summary.verified_stores} stores, {summary.verified_blobs} files "
            f"({summary.verified_bytes:,} bytes read back)"
        )
    return line


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
