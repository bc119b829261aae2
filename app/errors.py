"""What can go wrong, once: domain errors and how each one reads over HTTP.

Every error answer is JSON ``{"error": CODE, "detail": MESSAGE}``; the message
says what was wrong and how to fix it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

__all__ = [
    "InvalidStoreFileError",
    "InvalidStoreNameError",
    "JSONTooLargeError",
    "KeyNotFoundError",
    "MalformedUploadError",
    "RangeNotSatisfiableError",
    "ServiceError",
    "StoreExistsError",
    "StoreNotFoundError",
    "UnhealthyError",
    "UnsupportedUploadError",
    "UploadTooLargeError",
    "error_body",
    "install_error_handlers",
]


class ServiceError(Exception):
    """Base of the errors the service answers with a 4xx status."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class StoreNotFoundError(ServiceError):
    status_code = 404
    code = "store_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no store named {name!r}; GET /stores lists the stores there are")


class KeyNotFoundError(ServiceError):
    status_code = 404
    code = "key_not_found"

    def __init__(self, store: str, key: str) -> None:
        super().__init__(
            f"store {store!r} has no key {key!r}; GET /stores/{store}/keys lists its keys"
        )


class StoreExistsError(ServiceError):
    status_code = 409
    code = "store_exists"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"a store named {name!r} already exists; choose another name, "
            f"or replace it with PUT /stores/{name}"
        )


class InvalidStoreNameError(ServiceError):
    status_code = 422
    code = "invalid_store_name"


class InvalidStoreFileError(ServiceError):
    status_code = 422
    code = "invalid_kastore_file"


class MalformedUploadError(ServiceError):
    status_code = 400
    code = "malformed_upload"


class UnsupportedUploadError(ServiceError):
    status_code = 415
    code = "unsupported_upload"


class UploadTooLargeError(ServiceError):
    status_code = 413
    code = "upload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the upload is larger than the limit of {limit} bytes "
            "(the server's KASTORE_MAX_UPLOAD_BYTES setting)"
        )


class JSONTooLargeError(ServiceError):
    status_code = 413
    code = "json_too_large"

    def __init__(self, size: int, limit: int, *, raw_url: str, max_elements: int) -> None:
        super().__init__(
            f"the array has {size} bytes, more than the {limit} bytes served as JSON "
            f"(KASTORE_MAX_JSON_BYTES); download it raw with GET {raw_url} or ask for "
            f"at most {max_elements} elements at a time with ?format=json&start=...&stop=..."
        )


class RangeNotSatisfiableError(ServiceError):
    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, requested: str, size: int) -> None:
        super().__init__(
            f"the range {requested!r} starts beyond the {size} bytes there are; "
            f"ask for bytes 0 to {size - 1}, or leave out the Range header",
            headers={"content-range": f"bytes */{size}"},
        )


class UnhealthyError(ServiceError):
    status_code = 503
    code = "unhealthy"


def error_body(code: str, detail: str, **extra: Any) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": code, "detail": detail, **extra}


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return JSONResponse(
        error_body(exc.code, exc.detail), status_code=exc.status_code, headers=exc.headers
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(code, str(exc.detail)), status_code=exc.status_code, headers=exc.headers
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    ]
    return JSONResponse(
        error_body("invalid_request", "; ".join(problems)),
        status_code=422,
    )


async def _client_gone(_: Request, exc: Exception) -> JSONResponse:
    # Nobody will read this: the client hung up mid-request (an upload, say),
    # and whatever it had started has been cleaned up. Not a server error.
    return JSONResponse(error_body("client_disconnected", "the client went away"), 400)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every known error with the JSON error body."""
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
