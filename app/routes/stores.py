"""Stores: upload, list, describe, download whole, delete."""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status

from ..conditional import raw_answer
from ..deps import MAX_QUERY_INT, RecordDep, SettingsDep, StorageDep, store_url
from ..encoders import RangedBody, attachment
from ..errors import (
    ContentBusyError,
    CorruptBodyError,
    CrossOriginWriteError,
    InvalidRequestError,
    InvalidStoreFileError,
    InvalidStoreNameError,
    MalformedUploadError,
    RangeNotSatisfiableError,
    StoreExistsError,
    StoreNotFoundError,
    UnsupportedEncodingError,
    UnsupportedUploadError,
    UploadExpiredError,
    UploadTooLargeError,
    documented,
)
from ..models import StoreInfo, StoreList
from ..security import check_origin
from ..storage import NAME_PATTERN, StoreRecord, check_name
from ..storage.interfaces import DEFAULT_SUFFIX
from ..uploads import FILE_FIELD, MultipartUpload, check_declared_size, is_multipart, raw_body
from . import answer_head

__all__ = ["router"]

router = APIRouter(prefix="/stores", tags=["stores"])

#: What every upload can be refused for.
_UPLOAD_ERRORS = (
    MalformedUploadError,
    CrossOriginWriteError,
    UploadTooLargeError,
    UnsupportedUploadError,
    InvalidStoreFileError,
    InvalidStoreNameError,
    CorruptBodyError,
    UnsupportedEncodingError,
    ContentBusyError,
    UploadExpiredError,
)

_BINARY: dict[str, Any] = {
    "type": "string",
    "format": "binary",
    "contentMediaType": "application/octet-stream",
}


def _form(*, with_name: bool) -> dict[str, Any]:
    """The multipart form of an upload, as the OpenAPI document describes it."""
    properties: dict[str, Any] = {
        FILE_FIELD: {**_BINARY, "description": "The kastore (or tskit `.trees`) file."}
    }
    if with_name:
        properties["name"] = {
            "type": "string",
            "pattern": NAME_PATTERN,
            "description": (
                "The store's name; left out (or empty in /docs), the file's name without "
                "its extension."
            ),
            # Without an example, Swagger UI would fill the field from the pattern.
            "examples": ["sim"],
        }
    return {
        "type": "object",
        "required": [FILE_FIELD],
        "properties": properties,
        "additionalProperties": False,  # other fields are refused
    }


#: How a body may be compressed, as the API documents it.
_CODINGS = (
    "The body may be sent compressed, with `Content-Encoding: zstd` or `gzip` "
    "(`curl -T sim.trees.zst -H 'Content-Encoding: zstd' http://localhost:8000/stores/sim`); "
    "the size limit counts the decompressed bytes."
)
#: Declared by hand: the handlers stream the body instead of letting FastAPI parse it.
_POST_BODY = {
    "requestBody": {
        "required": True,
        "description": _CODINGS,
        "content": {"multipart/form-data": {"schema": _form(with_name=True)}},
    }
}
_PUT_BODY = {
    "requestBody": {
        "required": True,
        "description": _CODINGS,
        "content": {
            "application/octet-stream": {"schema": _BINARY},
            "multipart/form-data": {"schema": _form(with_name=False)},
        },
    }
}


def _info(request: Request, record: StoreRecord) -> StoreInfo:
    url = store_url(request, record.name)
    return StoreInfo(
        name=record.name,
        size=record.size,
        sha256=record.sha256,
        num_keys=record.num_keys,
        created=record.created,
        url=url,
        keys_url=f"{url}/keys",
        file_url=f"{url}/file",
    )


def _created(request: Request, response: Response, record: StoreRecord) -> StoreInfo:
    info = _info(request, record)
    response.headers["Location"] = info.url
    return info


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Upload a file as a new store",
    responses=documented(*_UPLOAD_ERRORS, StoreExistsError),
    openapi_extra=_POST_BODY,
    dependencies=[Depends(check_origin)],
)
async def upload_store(
    request: Request, response: Response, storage: StorageDep, settings: SettingsDep
) -> StoreInfo:
    """Upload a kastore (or tskit `.trees`) file as a `multipart/form-data` form.

    The `file` field holds the file; the optional `name` field names the store
    (default: the file's name without its extension). The file is streamed to
    disk, hashed and fully validated before it is stored; a malformed file is
    refused with 422 and nothing is kept. A name already in use gets 409: use
    `PUT /stores/{name}` to replace a store. Names are 1 to 128 letters,
    digits, `.`, `_` or `-`, starting with a letter or digit.

    ```
    curl -F file=@sim.trees http://localhost:8000/stores
    curl -F file=@sim.trees -F name=run-42 http://localhost:8000/stores
    ```
    """
    if not is_multipart(request):
        raise UnsupportedUploadError(
            "POST /stores takes a multipart form: curl -F file=@PATH; "
            "to send the raw file use curl -T PATH /stores/NAME"
        )
    check_declared_size(request, settings.max_upload_bytes)
    form = MultipartUpload(
        request,
        max_bytes=settings.max_upload_bytes,
        timeout=settings.body_timeout,
        fields=("name",),
    )
    async with storage.receive(form.pieces(), max_bytes=settings.max_upload_bytes) as upload:
        name = form.fields["name"] if "name" in form.fields else _name_from_file(form.stem)
        suffix = file_suffix(form.filename)
        record, _ = await storage.publish(name, upload, replace=False, suffix=suffix)
    return _created(request, response, record)


def file_suffix(filename: str | None) -> str:
    """The extension a downloaded file gets: the uploaded file's (``.trees``), else ``.kas``.

    Kept only when it is short and plain (a dot, then up to 16 letters or digits).
    """
    if filename:
        suffix = PurePosixPath(filename.replace("\\", "/")).suffix
        if re.fullmatch(r"\.[A-Za-z0-9]{1,16}", suffix):
            return suffix
    return DEFAULT_SUFFIX


def download_name(record: StoreRecord) -> str:
    """The whole file's name: the store's, with the uploaded extension unless it has it."""
    if record.name.endswith(record.suffix):
        return record.name
    return record.name + record.suffix


def _name_from_file(stem: str | None) -> str:
    """The store name a file gives when the form names none."""
    hint = "name the store with -F name=NAME"
    if not stem:
        raise InvalidStoreNameError(f"the upload has no file name to take a name from; {hint}")
    try:
        return check_name(stem)
    except InvalidStoreNameError as err:
        raise InvalidStoreNameError(f"{err.detail} (taken from the file name); {hint}") from None


@router.put(
    "/{name}",
    status_code=status.HTTP_201_CREATED,
    summary="Upload or replace a store",
    responses={
        200: {"model": StoreInfo, "description": "An existing store was replaced."},
        **documented(*_UPLOAD_ERRORS),
    },
    openapi_extra=_PUT_BODY,
    dependencies=[Depends(check_origin)],
)
async def put_store(
    name: str, request: Request, response: Response, storage: StorageDep, settings: SettingsDep
) -> StoreInfo:
    """Store the request body (the raw file) under `name`, replacing any store of that name.

    Answers 201 when the name is new and 200 when a store was replaced. The
    replaced content stays readable by downloads already under way. A
    multipart form (`-F file=@PATH`) is accepted too. Names are 1 to 128
    letters, digits, `.`, `_` or `-`, starting with a letter or digit.

    ```
    curl -T sim.trees http://localhost:8000/stores/sim
    ```
    """
    check_name(name)  # before a byte of the body is read
    check_declared_size(request, settings.max_upload_bytes)
    form = None
    if is_multipart(request):
        form = MultipartUpload(
            request, max_bytes=settings.max_upload_bytes, timeout=settings.body_timeout
        )
        body = form.pieces()
    else:
        body = raw_body(request, timeout=settings.body_timeout)
    async with storage.receive(body, max_bytes=settings.max_upload_bytes) as upload:
        # A raw body has no file name: the store's own name may carry the extension.
        suffix = file_suffix(form.filename if form is not None else name)
        record, created = await storage.publish(name, upload, replace=True, suffix=suffix)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _created(request, response, record)


@router.get("", summary="List stores", responses=documented(InvalidRequestError))
async def list_stores(
    request: Request,
    storage: StorageDep,
    offset: Annotated[int, Query(ge=0, le=MAX_QUERY_INT, description="Stores to skip.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000, description="Stores per page.")] = 100,
) -> StoreList:
    """List stores sorted by name, a page at a time (`offset`, `limit`; `next` links on).

    ```
    curl http://localhost:8000/stores
    curl 'http://localhost:8000/stores?offset=100&limit=100'
    ```
    """
    records, total = await storage.page(offset=offset, limit=limit)
    after = offset + len(records)
    next_url = (
        f"{request.scope.get('root_path', '')}/stores?offset={after}&limit={limit}"
        if after < total
        else None
    )
    return StoreList(
        stores=[_info(request, record) for record in records],
        total=total,
        offset=offset,
        limit=limit,
        next=next_url,
    )


@router.get(
    "/{name}",
    summary="Describe a store",
    responses=documented(StoreNotFoundError, InvalidRequestError),
)
async def get_store(request: Request, record: RecordDep) -> StoreInfo:
    """Name, size, sha256, number of keys, creation time and URLs of one store.

    ```
    curl http://localhost:8000/stores/sim
    ```
    """
    return _info(request, record)


@router.get(
    "/{name}/file",
    summary="Download the whole file",
    response_class=Response,
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": _BINARY}},
            "description": "The file.",
        },
        206: {
            "content": {"application/octet-stream": {"schema": _BINARY}},
            "description": "The bytes a `Range` header asked for, with `Content-Range`.",
        },
        304: {"description": "The file is the one the `If-None-Match` ETag names."},
        **documented(StoreNotFoundError, RangeNotSatisfiableError, InvalidRequestError),
    },
)
async def download_file(
    request: Request, record: RecordDep, storage: StorageDep, settings: SettingsDep
) -> Response:
    """The stored file, byte for byte, with its sha256 as the `ETag`.

    `If-None-Match` (304), `Range` (206, 416) and `If-Range` are answered, so
    interrupted downloads can resume and unchanged files are not sent again.
    With `Accept-Encoding: zstd` or `gzip` the file is compressed on the way
    (not for a `Range`), with its own ETag (`-zstd`, `-gzip`).

    ```
    curl -o sim.trees http://localhost:8000/stores/sim/file
    curl -C - -o sim.trees http://localhost:8000/stores/sim/file
    ```
    """
    record, reader = await storage.current(record, storage.reader)
    headers = {
        "etag": f'"{record.sha256}"',
        "content-disposition": attachment(download_name(record)),
    }
    mapped = reader.buffer()
    return raw_answer(
        request.headers,
        mapped if mapped is not None else RangedBody(reader, 0, reader.size),
        headers=headers,
        compress_min_bytes=settings.compress_min_bytes,
        missing=StoreNotFoundError(record.name),
    )


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a store",
    response_class=Response,
    responses=documented(StoreNotFoundError, CrossOriginWriteError, InvalidRequestError),
    dependencies=[Depends(check_origin)],
)
async def delete_store(name: str, storage: StorageDep) -> Response:
    """Delete a store; later reads of it answer 404. Downloads under way finish.

    ```
    curl -X DELETE http://localhost:8000/stores/sim
    ```
    """
    await storage.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


answer_head(router)
