"""Keys and arrays of a store."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from starlette.convertors import PathConvertor, register_url_convertor

from ..conditional import not_modified, raw_answer
from ..deps import (
    MAX_QUERY_INT,
    SettingsDep,
    StoreName,
    array_url,
    open_store,
    query_int,
    storage_of,
    store_url,
)
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
from ..models import ArrayData, KeyList
from . import answer_head

__all__ = ["router"]


class _AnyPath(PathConvertor):
    """Like ``path``, but also across line breaks: keys may hold any character."""

    regex = r"[\s\S]*"


register_url_convertor("anypath", _AnyPath())

router = APIRouter(prefix="/stores/{name}", tags=["arrays"])


#: Keys per page of the key listing: by default, and at most.
KEYS_PER_PAGE = 1000
MAX_KEYS_PER_PAGE = 10_000


#: The key listing's parameters, read by the handler itself (see ``list_keys``).
_KEYS_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "title": "Name"},
            "description": "The store's name.",
        },
        {
            "name": "offset",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_QUERY_INT, "default": 0},
            "description": "Keys to skip.",
        },
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_KEYS_PER_PAGE,
                "default": KEYS_PER_PAGE,
            },
            "description": "Keys per page.",
        },
    ]
}


@router.get(
    "/keys",
    summary="List the keys of a store",
    response_model=KeyList,
    responses=documented(StoreNotFoundError, InvalidRequestError),
    openapi_extra=_KEYS_PARAMETERS,
)
async def list_keys(request: Request) -> Response:
    """Keys with their dtype, length (elements), size (bytes) and download URL, in file order.

    A page at a time (`offset`, `limit`, at most 10,000 keys a page); `next`
    is the URL of the next page, null on the last, and `total` the number of
    keys. Pages are served from a cache of the parsed file, kept by content.

    ```
    curl http://localhost:8000/stores/sim/keys
    curl 'http://localhost:8000/stores/sim/keys?offset=1000&limit=1000'
    ```
    """
    # The most requested route reads its parameters itself: FastAPI's solving
    # and validating of them cost a quarter of the request (profiled).
    name: str = request.path_params["name"]
    if request.scope["query_string"]:
        query = request.query_params
        offset = query_int(query, "offset", default=0, ge=0, le=MAX_QUERY_INT)
        limit = query_int(query, "limit", default=KEYS_PER_PAGE, ge=1, le=MAX_KEYS_PER_PAGE)
    else:
        offset, limit = 0, KEYS_PER_PAGE
    record, opened = await open_store(request, name)
    pieces = await storage_of(request).key_page(opened, offset=offset, limit=limit)
    url = store_url(request, record.name)
    after = offset + limit
    next_url = (
        orjson.dumps(f"{url}/keys?offset={after}&limit={limit}")
        if after < opened.num_keys
        else b"null"
    )
    body = b"".join(
        (
            b'{"store":%s,"sha256":"%s","keys":'
            % (orjson.dumps(record.name), record.sha256.encode()),
            orjson.dumps(url)[1:-1].join(pieces),
            b',"total":%d,"offset":%d,"limit":%d,"next":%s}'
            % (opened.num_keys, offset, limit, next_url),
        )
    )
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
    record, opened = await open_store(request, name)
    position = opened.find(key)
    if position is None:
        raise KeyNotFoundError(record.name, key)
    whole = opened.array(position)
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
        position,
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
