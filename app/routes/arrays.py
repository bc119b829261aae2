"""Keys and arrays of a store."""

from __future__ import annotations

import itertools
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Header, Query, Request, Response
from starlette.convertors import PathConvertor, register_url_convertor

from ..conditional import raw_answer, streamed_answer
from ..config import Settings
from ..deps import (
    MAX_QUERY_INT,
    SettingsDep,
    SliceStart,
    SliceStop,
    StoreName,
    array_url,
    open_store,
    query_int,
    storage_of,
    store_url,
)
from ..encoders import (
    TEXT_MEDIA_TYPES,
    RangedBody,
    attachment,
    csv_pieces,
    json_body,
    npy_header,
    rows_pieces,
    shape_only,
    utf8_text,
)
from ..errors import (
    InvalidRequestError,
    JSONTooLargeError,
    KeyNotFoundError,
    NotAcceptableError,
    RangeNotSatisfiableError,
    StoreNotFoundError,
    documented,
)
from ..formats import EXTENSIONS, FORMATS, Format, choose_format
from ..keytable import OpenStore
from ..models import ArrayData, ArrayRows, KeyList
from ..storage import StoreRecord
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
        "description": "The array: raw little-endian bytes, JSON, npy, CSV or text.",
        "model": ArrayData | ArrayRows,
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
            "text/csv": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    },
    206: {
        "description": "The bytes a `Range` header asked for (raw and npy), with `Content-Range`.",
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
        Query(
            description="`raw` (default), `json`, `npy`, `csv`, `text` (int8/uint8 arrays "
            "holding UTF-8) or `rows` (a ragged column `X` cut at `X_offset`, as JSON); "
            "overrides the Accept header."
        ),
    ] = None,
    start: SliceStart = None,
    stop: SliceStop = None,
    accept: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Response:
    """One array, as raw bytes (default), JSON, npy, CSV, text or rows.

    Raw: the little-endian bytes as `application/octet-stream`, with
    `Content-Length`, a strong `ETag`, `X-Kastore-Dtype` and `X-Kastore-Length`
    headers, and a file name. Load it with `numpy.fromfile(path, dtype)`.
    `If-None-Match` (304), `Range` (206, 416) and `If-Range` are answered.

    npy (`application/x-npy`): numpy's file format, the `.npy` header then the
    same bytes; `numpy.load` gets the dtype and shape. Ranges as for raw.

    JSON: `{"key", "dtype", "length", "data": [...]}`; NaN and ±inf are
    written as `null`. CSV (`text/csv; header=present`): the key, then one
    value a line. Text (`text/plain`): the bytes of an int8 or uint8 array
    that hold UTF-8 (tskit's metadata and provenance columns); 422 for other
    arrays. Rows (`?format=rows`, JSON): a ragged column `X` cut where its
    `X_offset` array says, each row as text when all of them are UTF-8,
    `{"key", "dtype", "length", "rows": [...]}`; `start` and `stop` then select
    rows. JSON, CSV, text and rows of arrays larger than
    `KASTORE_MAX_JSON_BYTES` get 413. Each form has its own ETag, and answers
    say `Vary: Accept`.

    Answers of 1 KiB or more (`KASTORE_COMPRESS_MIN_BYTES`), in every form,
    are compressed on the way when `Accept-Encoding` allows zstd or gzip (read
    with q-values; zstd wins a tie), unless they do not shrink or the request
    has a `Range` (raw and npy); each coding has its own ETag (`-zstd`,
    `-gzip`), and answers say `Vary: Accept, Accept-Encoding`.

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
    dtype, total = opened.dtype(position), opened.length(position)
    byte_array = dtype.itemsize == 1 and dtype.kind in "iu"
    form = choose_format(format, accept, text=byte_array)
    if form == "rows":
        return await _rows_answer(request, record, key, position, opened, start, stop, settings)
    sliced = start is not None or stop is not None
    first, end = 0, total
    if sliced:
        first, end, _ = slice(start, stop).indices(total)
        end = max(first, end)
    # One strong ETag per representation: stored content never changes.
    etag = '"{}-{}{}{}"'.format(
        record.sha256,
        position,
        f":{first}:{end}" if sliced else "",
        "" if form == "raw" else f"-{form}",
    )
    headers = {
        "etag": etag,
        "x-kastore-dtype": str(dtype),
        "x-kastore-length": str(end - first),
        "x-kastore-total-length": str(total),
        "cache-control": "no-cache",
        "vary": "Accept, Accept-Encoding",
    }
    if form in EXTENSIONS:
        stem = key.replace("/", "_") + (f".{dtype}" if form == "raw" else "")
        headers["content-disposition"] = attachment(f"{stem}.{EXTENSIONS[form]}")
    missing = StoreNotFoundError(record.name)
    body: Any
    if form in ("raw", "npy"):
        if opened.reader.buffer() is not None:
            body = opened.array(position)[first:end].data.cast("B")
        else:  # read by ranges as it is sent: the bytes of the slice alone
            at = opened.span(position)[0]
            body = RangedBody(opened.reader, at + first * dtype.itemsize, at + end * dtype.itemsize)
        return raw_answer(
            request.headers,
            body,
            headers=headers,
            prefix=npy_header(shape_only(dtype, end - first)) if form == "npy" else b"",
            media_type=FORMATS[form],
            compress_min_bytes=settings.compress_min_bytes,
            missing=missing,
        )
    _check_text_size(
        request,
        record.name,
        key,
        (end - first) * dtype.itemsize,
        dtype.itemsize,
        settings.max_json_bytes,
    )
    array = await _fetch(opened, position, first, end, missing)
    if form == "csv":
        body = csv_pieces(key, array)
    elif form == "text":
        if (utf8_text(array) if byte_array else None) is None:
            raise InvalidRequestError(
                f"the array {key!r} ({array.dtype}) does not hold UTF-8 text: "
                "?format=text is for int8 or uint8 arrays of UTF-8 bytes; use raw or json"
            )
        body = array.data.cast("B")
    else:
        body = json_body(key, array)
    return streamed_answer(
        request.headers,
        body,
        headers=headers,
        media_type=TEXT_MEDIA_TYPES[form],
        compress_min_bytes=settings.compress_min_bytes,
    )


async def _fetch(
    opened: OpenStore, position: int, first: int, end: int, missing: Exception
) -> np.ndarray:
    """Elements ``[first, end)`` of an array: a view of the map, or read now by range."""
    try:
        return await opened.fetch(position, first, end)
    except FileNotFoundError:  # removed since the record was read
        raise missing from None


def _check_text_size(
    request: Request, name: str, key: str, nbytes: int, itemsize: int, limit: int
) -> None:
    """413 for arrays too large to send as JSON, CSV or text (``KASTORE_MAX_JSON_BYTES``)."""
    if nbytes > limit:
        raise JSONTooLargeError(
            nbytes, limit, raw_url=array_url(request, name, key), max_elements=limit // itemsize
        )


async def _rows_answer(
    request: Request,
    record: StoreRecord,
    key: str,
    column: int,
    opened: OpenStore,
    start: int | None,
    stop: int | None,
    settings: Settings,
) -> Response:
    """``?format=rows``: the column ``key`` cut where ``{key}_offset`` says."""
    position: int | None = opened.find(f"{key}_offset")
    if position is None:
        raise InvalidRequestError(
            f"the store has no {key + '_offset'!r} array: ?format=rows is for a ragged "
            f"column X whose rows end where X_offset says"
        )
    missing = StoreNotFoundError(record.name)
    dtype, total = opened.dtype(column), opened.length(column)
    offsets = opened.dtype(position)
    size = opened.length(position) * offsets.itemsize
    _check_text_size(
        request, record.name, f"{key}_offset", size, offsets.itemsize, settings.max_json_bytes
    )
    bounds: list[int] = []
    if offsets.kind in "iu":
        bounds = (await _fetch(opened, position, 0, opened.length(position), missing)).tolist()
    if (
        len(bounds) < 1
        or bounds[0] != 0
        or bounds[-1] != total
        or any(b < a for a, b in itertools.pairwise(bounds))
    ):
        raise InvalidRequestError(
            f"{key + '_offset'!r} does not cut {key!r} into rows: it must rise from 0 "
            f"to the column's length ({total})"
        )
    first, end, _ = slice(start, stop).indices(len(bounds) - 1)
    end = max(first, end)
    bounds = bounds[first : end + 1]
    nbytes = (bounds[-1] - bounds[0]) * dtype.itemsize
    _check_text_size(request, record.name, key, nbytes, dtype.itemsize, settings.max_json_bytes)
    headers = {
        "etag": f'"{record.sha256}-{position}-rows:{first}:{end}"',
        "cache-control": "no-cache",
        "vary": "Accept, Accept-Encoding",
    }
    chosen = await _fetch(opened, column, bounds[0], bounds[-1], missing)
    return streamed_answer(
        request.headers,
        rows_pieces(key, chosen, [bound - bounds[0] for bound in bounds]),
        headers=headers,
        media_type=TEXT_MEDIA_TYPES["rows"],
        compress_min_bytes=settings.compress_min_bytes,
    )


answer_head(router)
