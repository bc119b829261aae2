"""Summaries of arrays, for plots: statistics, min/max buckets and a histogram."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Annotated, Any
from weakref import WeakKeyDictionary

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from ..conditional import not_modified, streamed_answer
from ..deps import SettingsDep, SliceStart, SliceStop, StoreName, open_store
from ..errors import InvalidRequestError, KeyNotFoundError, StoreNotFoundError, documented
from ..summary import summarize
from . import answer_head, arrays

#: ``arrays`` registers the ``anypath`` convertor that keys are matched with.
_ = arrays

__all__ = ["MAX_BINS", "MAX_BUCKETS", "ArraySummary", "router"]

router = APIRouter(prefix="/stores/{name}", tags=["arrays"])

#: The most buckets and histogram bins a summary may ask for.
MAX_BUCKETS = 10_000
MAX_BINS = 1_000
#: Encoded summaries kept, by content: each is some tens of kilobytes at most.
CACHED_SUMMARIES = 64
#: Summaries computed at once. Each keeps a worker thread busy for as long as its
#: array takes (seconds for gigabytes): the threads the storage needs stay free.
CONCURRENT_SUMMARIES = 2

Number = int | float | None


class Buckets(BaseModel):
    """Contiguous runs of elements, each with the min and max of its finite values."""

    starts: list[int] = Field(description="Element each run starts at.", examples=[[0, 5000]])
    min: list[Number] = Field(description="Least finite value per run; null if none.")
    max: list[Number] = Field(description="Greatest finite value per run; null if none.")


class Histogram(BaseModel):
    """``counts[i]`` finite values lie in ``[edges[i], edges[i + 1])``; the last bin is closed."""

    edges: list[int | float] = Field(examples=[[0.0, 0.5, 1.0]])
    counts: list[int] = Field(examples=[[6, 4]])


class ArraySummary(BaseModel):
    """What a plot of elements ``[start, stop)`` of an array needs."""

    key: str = Field(examples=["sites/position"])
    dtype: str = Field(examples=["float64"])
    total_length: int = Field(description="Elements in the whole array.")
    start: int = Field(description="First element summarized.")
    stop: int = Field(description="Element the summary stops before.")
    length: int = Field(description="Elements summarized: `stop - start`.")
    finite_count: int = Field(description="Elements that are neither NaN nor ±infinity.")
    nan_count: int
    inf_count: int = Field(description="Elements that are +infinity or -infinity.")
    min: Number = Field(description="Least finite value; null if there is none.")
    max: Number = Field(description="Greatest finite value; null if there is none.")
    mean: float | None = Field(description="Mean of the finite values; null if there is none.")
    buckets: Buckets
    histogram: Histogram


class _Summaries:
    """Encoded summaries by (content, key position, parameters), least recently used dropped."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.kept: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()

    def get(self, ident: tuple[Any, ...]) -> bytes | None:
        body = self.kept.get(ident)
        if body is not None:
            self.kept.move_to_end(ident)
        return body

    def keep(self, ident: tuple[Any, ...], body: bytes) -> None:
        self.kept[ident] = body
        while len(self.kept) > self.size:
            self.kept.popitem(last=False)


_cache = _Summaries(CACHED_SUMMARIES)
_limits: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()


def _limit() -> asyncio.Semaphore:
    """The running loop's limit of summaries computed at once (a semaphore is bound to one)."""
    loop = asyncio.get_running_loop()
    limit = _limits.get(loop)
    if limit is None:
        limit = _limits[loop] = asyncio.Semaphore(CONCURRENT_SUMMARIES)
    return limit


@router.get(
    "/summary/{key:anypath}",
    summary="Summarize one array for a plot",
    response_class=Response,
    responses={
        200: {"model": ArraySummary, "description": "The summary."},
        304: {"description": "The summary has not changed since the `If-None-Match` ETag."},
        **documented(StoreNotFoundError, KeyNotFoundError, InvalidRequestError),
    },
)
async def summarize_array(
    request: Request,
    name: StoreName,
    key: str,
    settings: SettingsDep,
    start: SliceStart = None,
    stop: SliceStop = None,
    buckets: Annotated[
        int,
        Query(ge=0, le=MAX_BUCKETS, description="Most min/max buckets to split into; 0: none."),
    ] = 1000,
    bins: Annotated[
        int, Query(ge=0, le=MAX_BINS, description="Most histogram bins; 0: no histogram.")
    ] = 100,
) -> Response:
    """Statistics, min/max buckets and a histogram of an array, computed by the server.

    What a plot needs, in a few kilobytes whatever the array's length: the
    web UI plots arrays of more than a million elements from this rather than
    downloading them.

    - `min`, `max`, `mean` of the finite values (null when there is none),
      `nan_count` and `inf_count`;
    - `buckets`: the elements split into at most `buckets` contiguous runs,
      run `i` starting at element `starts[i]`, with the min and max of its
      finite values (null for a run with none);
    - `histogram`: `counts[i]` finite values in `[edges[i], edges[i + 1])`,
      the last bin closed; at most `bins` equal bins for floats, and bins of a
      whole number of values for integers (one per value when there are few).

    `start` and `stop` summarize elements `[start, stop)`, clipped like a
    Python slice (for zooming in). `buckets=0` or `bins=0` leaves that part
    out: the statistics and buckets alone come sooner than with a histogram,
    which takes most of the time (the UI asks for the two separately). Keys are given as in
    `/stores/{name}/arrays/{key}`. Summaries are kept by content, and answer
    `If-None-Match`. They come compressed when `Accept-Encoding` allows zstd
    or gzip, as arrays do.

    ```
    curl http://localhost:8000/stores/sim/summary/sites/position
    curl 'http://localhost:8000/stores/sim/summary/nodes/time?buckets=200&bins=20'
    ```
    """
    record, opened = await open_store(request, name)
    position = opened.find(key)
    if position is None:
        raise KeyNotFoundError(record.name, key)
    dtype, total = opened.dtype(position), opened.length(position)
    first, end, _ = slice(start, stop).indices(total)
    end = max(first, end)
    headers = {
        "etag": f'"{record.sha256}-{position}-summary:{first}:{end}:{buckets}:{bins}"',
        "cache-control": "no-cache",
    }
    unchanged = not_modified(request.headers, headers)
    if unchanged is not None:
        return unchanged
    ident = (record.sha256, position, first, end, buckets, bins)
    body = _cache.get(ident)
    if body is None:
        async with _limit():  # at most a few arrays read at once (from S3: into memory)
            try:
                array = await opened.fetch(position, first, end)
            except FileNotFoundError:  # removed since the record was read
                raise StoreNotFoundError(record.name) from None
            summary = await asyncio.to_thread(
                summarize, array, buckets=buckets, bins=bins, offset=first
            )
        described = {
            "key": key,
            "dtype": str(dtype),
            "total_length": total,
            "start": first,
            "stop": end,
            **summary,
        }
        body = orjson.dumps(described)
        _cache.keep(ident, body)
    return streamed_answer(
        request.headers,
        body,
        headers=headers,
        media_type="application/json",
        compress_min_bytes=settings.compress_min_bytes,
    )


answer_head(router)
