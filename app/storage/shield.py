"""Work that must end once begun, whatever cancels its caller (a client gone, shutdown)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["shielded"]

_T = TypeVar("_T")


async def shielded(work: Awaitable[_T]) -> _T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile.

    A cancelled caller still waits for the work to finish before it sees
    the cancellation, so that nothing (a file, an index row) is left half done.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise
