"""Temporary blobs: what is written is exactly what arrived, whatever the pieces."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.storage import local_blobs as blobs
from app.storage.local_blobs import LocalBlobs

DATA = bytes(range(256)) * 12_000  # 3 MB, more than one write batch


async def _pieces(sizes: list[int]) -> AsyncIterator[bytes]:
    start = i = 0
    while start < len(DATA):
        size = sizes[i % len(sizes)]
        yield DATA[start : start + size]
        start += size
        i += 1


def _write(tmp_path: Path, sizes: list[int]) -> blobs.TempBlob:
    folder = LocalBlobs(tmp_path)
    folder._prepare()
    temp = folder.create_temp()

    async def run() -> None:
        await temp.write_all(_pieces(sizes), limit=len(DATA))

    asyncio.run(run())
    temp.close()
    return temp


@pytest.mark.parametrize("sizes", [[65536], [1] * 300 + [1 << 20], [3, 4096, 1 << 20], [700_001]])
def test_written_file_and_hash_match_the_pieces(tmp_path: Path, sizes: list[int]) -> None:
    temp = _write(tmp_path, sizes)
    assert temp.path.read_bytes() == DATA
    assert temp.size == len(DATA)
    assert temp.sha256 == hashlib.sha256(DATA).hexdigest()


def test_short_writes_are_resumed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may take less than asked (a full pipe, a signal): nothing may be lost."""
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        return real_writev(fd, [buffers[0][:1000]])

    monkeypatch.setattr(os, "writev", short_writev)
    temp = _write(tmp_path, [65536, 12345])
    assert temp.path.read_bytes() == DATA


def test_more_than_the_limit_is_refused(tmp_path: Path) -> None:
    folder = LocalBlobs(tmp_path)
    folder._prepare()
    temp = folder.create_temp()

    async def run() -> None:
        await temp.write_all(_pieces([65536]), limit=len(DATA) - 1)

    with pytest.raises(OverflowError):
        asyncio.run(run())
    temp.discard()
    assert list((tmp_path / "tmp").iterdir()) == []
