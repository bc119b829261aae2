"""Keys and arrays of a store."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from starlette.convertors import PathConvertor, register_url_convertor

from ..conditional import not_modified, raw_answer
from ..deps import MAX_QUERY_INT, SettingsDep, StoreName, array_url, open_store
from ..encoders import attachment, json_response
from ..errors import (
    InvalidRequestError,
    JSONTooLargeError,
    KeyNotFoundError,
    NotAcceptableError,
    RangeNotSatisfiableError,
    StoreNotFoundError,
    documented,
)
from ..formats import Format, choose_format
from ..models import ArrayData, KeyEntry, KeyList
from . import answer_head

__all__ = ["router"]


class _AnyPath(PathConvertor):
    """Like ``path``, but also across line breaks: keys may hold any character."""

    regex = r"[\s\S]*"


register_url_convertor("anypath", _AnyPath())

router = APIRouter(prefix="/stores/{name}", tags=["arrays"])


@router.get(
    "/keys",
    summary="List the keys of a store",
    response_model=KeyList,
    responses=documented(StoreNotFoundError, InvalidRequestError),
)
async def list_keys(request: Request, name: StoreName) -> Response:
    """Every key with its dtype, length (elements), size (bytes) and download URL, in file order.

    ```
    curl http://localhost:8000/stores/sim/keys
    ```
    """
    record, opened = open_store(request, name)
    # Stored files never change: the answer is built once per name and content.
    cache_key = ("keys", record.name, request.scope.get("root_path", ""))
    body = opened.cache.get(cache_key)
    if body is None:
        listing = KeyList(
            store=record.name,
            sha256=record.sha256,
            keys=[
                KeyEntry(
                    key=entry.key,
                    dtype=entry.dtype,
                    length=entry.length,
                    size=entry.size,
                    url=array_url(request, record.name, entry.key),
                )
                for entry in opened.keys
            ],
        )
        body = opened.cache[cache_key] = orjson.dumps(listing.model_dump())
    return Response(body, media_type="application/json")


_ARRAY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The array: raw little-endian bytes, or JSON.",
        "model": ArrayData,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {
        "description": "The bytes a `Range` header asked for (raw only), with `Content-Range`.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "The array has not changed since the `If-None-Match` ETag."},
    **documented(
        StoreNotFoundError,
        KeyNotFoundError,
        NotAcceptableError,
        JSONTooLargeError,
        RangeNotSatisfiableError,
        InvalidRequestError,
    ),
}


@router.get(
    "/arrays/{key:anypath}",
    summary="Download one array",
    response_class=Response,
    responses=_ARRAY_RESPONSES,
)
async def download_array(
    request: Request,
    name: StoreName,
    key: str,
    settings: SettingsDep,
    format: Annotated[
        Format | None,
        Query(description="`raw` (default) or `json`; overrides the Accept header."),
    ] = None,
    start: Annotated[
        int | None,
        Query(ge=0, le=MAX_QUERY_INT, description="First element to send (default 0)."),
    ] = None,
    stop: Annotated[
        int | None,
        Query(ge=0, le=MAX_QUERY_INT, description="Element to stop before (default: the end)."),
    ] = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """One array, as raw bytes (default) or as JSON (`?format=json` or `Accept: application/json`).

    Raw: the little-endian bytes as `application/octet-stream`, with
    `Content-Length`, a strong `ETag`, `X-Kastore-Dtype` and `X-Kastore-Length`
    headers, and a file name. Load it with `numpy.fromfile(path, dtype)`.
    `If-None-Match` (304), `Range` (206, 416) and `If-Range` are answered.

    JSON: `{"key", "dtype", "length", "data": [...]}`; NaN and ±inf are
    written as `null`. Arrays larger than `KASTORE_MAX_JSON_BYTES` get 413.

    `?format=` beats `Accept`; `Accept` is read with its q-values
    (`application/json;q=0` never gives JSON), and 406 answers an `Accept`
    that allows neither form.

    `start` and `stop` select elements `[start, stop)` of the array, in either
    form, and are clipped to its length like a Python slice: a `start` past
    the end, or a `stop` before `start`, gives an empty array (200), never an
    error. `X-Kastore-Length` gives the number of elements sent and
    `X-Kastore-Total-Length` the array's. `HEAD` gives the headers alone.

    Keys may hold any character: percent-encode them (`/` may stay as it is).
    The `url` of each key in the key listing is ready to use.

    ```
    curl -o left.bin http://localhost:8000/stores/sim/arrays/edges/left
    curl 'http://localhost:8000/stores/sim/arrays/edges%2Fleft?format=json'
    curl 'http://localhost:8000/stores/sim/arrays/edges/left?format=json&start=10&stop=20'
    ```
    """
    record, opened = open_store(request, name)
    whole = opened.array(record.name, key)
    form = choose_format(format, accept)
    sliced = start is not None or stop is not None
    if sliced:
        first, end, _ = slice(start, stop).indices(len(whole))
        end = max(first, end)
        array = whole[first:end]
    else:
        array = whole
    # One strong ETag per representation: stored content never changes.
    etag = '"{}-{}{}{}"'.format(
        record.sha256,
        opened.position[key],
        f":{first}:{end}" if sliced else "",
        "-json" if form == "json" else "",
    )
    headers = {
        "etag": etag,
        "x-kastore-dtype": str(array.dtype),
        "x-kastore-length": str(len(array)),
        "x-kastore-total-length": str(len(whole)),
        "cache-control": "no-cache",
        "vary": "Accept",
    }
    if form == "raw":
        headers["content-disposition"] = attachment(f"{key.replace('/', '_')}.{array.dtype}.bin")
        return raw_answer(request.headers, array.data.cast("B"), headers=headers)
    unchanged = not_modified(request.headers, headers)
    if unchanged is not None:
        return unchanged
    if array.nbytes > settings.max_json_bytes:
        raise JSONTooLargeError(
            array.nbytes,
            settings.max_json_bytes,
            raw_url=array_url(request, record.name, key),
            max_elements=settings.max_json_bytes // array.itemsize,
        )
    return json_response(key, array, headers=headers)


answer_head(router)
