"""What can go wrong, once: every error the service answers, and how it reads over HTTP.

Every error answer is JSON ``{"error": CODE, "detail": MESSAGE}`` (``ErrorAnswer``);
the message says what was wrong and how to fix it. Each error is a class here
with its status, its code and an example, and the OpenAPI document's error
answers are built from those classes (``documented``), so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping, Sequence
from typing import Any, ClassVar, Self

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match, Route

__all__ = [
    "AnonymousWriteRefusedError",
    "BusyError",
    "CORSRefusedError",
    "ContentBusyError",
    "CorruptBodyError",
    "CrossOriginWriteError",
    "ErrorAnswer",
    "HeadersTooLargeError",
    "InsufficientScopeError",
    "InsufficientStorageError",
    "InvalidKeyError",
    "InvalidRequestError",
    "InvalidStoreFileError",
    "InvalidStoreNameError",
    "JSONTooLargeError",
    "KeyNotFoundError",
    "MalformedUploadError",
    "MethodNotAllowedError",
    "MissingKeyError",
    "NotAcceptableError",
    "RangeNotSatisfiableError",
    "RequestTimeoutError",
    "RouteNotFoundError",
    "ServiceError",
    "StorageUnavailableError",
    "StoreExistsError",
    "StoreNotFoundError",
    "UnhealthyError",
    "UnsupportedEncodingError",
    "UnsupportedUploadError",
    "UploadExpiredError",
    "UploadTooLargeError",
    "all_errors",
    "documented",
    "error_body",
    "install_error_handlers",
    "note_error",
    "service_error",
]


def _shown(header: str, limit: int = 100) -> str:
    """A header as quoted in a message: its start, if it is long."""
    return header if len(header) <= limit else f"{header[:limit]}..."


class ServiceError(Exception):
    """Base of the errors the service answers with a JSON error body.

    Subclasses set ``status_code`` and ``code``, and ``example()`` gives one
    for the API documentation.
    """

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers

    @classmethod
    def example(cls) -> Self:
        """An instance as a client would see it, for the documentation."""
        raise NotImplementedError


class StoreNotFoundError(ServiceError):
    status_code = 404
    code = "store_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"no store named {name!r}; GET /stores lists the stores there are")

    @classmethod
    def example(cls) -> Self:
        return cls("sim")


class KeyNotFoundError(ServiceError):
    status_code = 404
    code = "key_not_found"

    def __init__(self, store: str, key: str) -> None:
        super().__init__(
            f"store {store!r} has no key {key!r}; GET /stores/{store}/keys lists its keys"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("sim", "edges/lfet")


class RouteNotFoundError(ServiceError):
    status_code = 404
    code = "not_found"

    def __init__(self, method: str, path: str, routes: str, docs_url: str) -> None:
        super().__init__(
            f"nothing answers {method} {path}; the routes are: {routes}; {docs_url} documents them"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("GET", "/store/sim", "GET, POST /stores; GET /stores/{name}; ...", "/docs")


class MethodNotAllowedError(ServiceError):
    status_code = 405
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: list[str]) -> None:
        super().__init__(
            f"{method} is not allowed on {path}; it answers {', '.join(allowed)}",
            headers={"allow": ", ".join(allowed)},
        )

    @classmethod
    def example(cls) -> Self:
        return cls("POST", "/stores/sim", ["GET", "HEAD", "PUT", "DELETE"])


class StoreExistsError(ServiceError):
    status_code = 409
    code = "store_exists"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"a store named {name!r} already exists; choose another name, "
            f"or replace it with PUT /stores/{name}"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("sim")


class InvalidRequestError(ServiceError):
    """A parameter does not have the documented form."""

    status_code = 422
    code = "invalid_request"

    @classmethod
    def example(cls) -> Self:
        return cls("query.limit: Input should be less than or equal to 1000")


class InvalidStoreNameError(ServiceError):
    status_code = 422
    code = "invalid_store_name"

    @classmethod
    def example(cls) -> Self:
        return cls(
            "invalid store name '-sim': use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class InvalidStoreFileError(ServiceError):
    status_code = 422
    code = "invalid_kastore_file"

    @classmethod
    def example(cls) -> Self:
        return cls(
            "not a valid kastore file: truncated file: header gives a size of 1000 bytes, "
            "only 150 are there"
        )


class MalformedUploadError(ServiceError):
    status_code = 400
    code = "malformed_upload"

    @classmethod
    def example(cls) -> Self:
        return cls("malformed multipart body: did not find boundary character")


class CrossOriginWriteError(ServiceError):
    status_code = 403
    code = "cross_origin_write"

    def __init__(self, origin: str) -> None:
        super().__init__(
            f"writes from pages of {origin!r} are refused: it is not this server's origin "
            "nor one of KASTORE_CORS_ORIGINS; send the request without an Origin header "
            "(curl does), or add the origin to KASTORE_CORS_ORIGINS"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("http://evil.example")


_KEY_HINT = "send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'"
_REALM = 'Bearer realm="kastore-service"'


class MissingKeyError(ServiceError):
    status_code = 401
    code = "missing_api_key"

    def __init__(self, scope: str) -> None:
        super().__init__(
            f"this needs an API key with the {scope!r} scope; {_KEY_HINT} "
            "(the server's operator creates keys)",
            headers={"www-authenticate": _REALM},
        )

    @classmethod
    def example(cls) -> Self:
        return cls("write")


class InvalidKeyError(ServiceError):
    status_code = 401
    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__(
            "the API key sent is none of this server's keys; check it (a Bearer token or an "
            "X-API-Key header holding the whole key), or ask the operator for one",
            headers={"www-authenticate": f'{_REALM}, error="invalid_token"'},
        )

    @classmethod
    def example(cls) -> Self:
        return cls()


class AnonymousWriteRefusedError(ServiceError):
    status_code = 401
    code = "anonymous_write_refused"

    def __init__(self, host: str, *, forwarded: bool = False) -> None:
        where = (
            "the request came through a proxy"
            if forwarded
            else f"the server listens on {host}, not on loopback only"
        )
        super().__init__(
            f"writes need an API key: this server has none configured and {where}. "
            "The operator creates one with `python -m app keys create --scope write` and "
            "sets KASTORE_API_KEYS or KASTORE_API_KEYS_FILE, then clients "
            f"{_KEY_HINT.removeprefix('send it as ')}; or sets KASTORE_ANONYMOUS_WRITE=true "
            "to let anyone write on purpose",
            headers={"www-authenticate": _REALM},
        )

    @classmethod
    def example(cls) -> Self:
        return cls("0.0.0.0")


class InsufficientScopeError(ServiceError):
    status_code = 403
    code = "insufficient_scope"

    def __init__(self, granted: str, needed: str) -> None:
        super().__init__(
            f"the API key sent has the {granted!r} scope; this needs {needed!r}: use a key "
            f"with {needed!r} (or a wider scope: read < write < admin)",
            headers={"www-authenticate": f'{_REALM}, error="insufficient_scope", scope="{needed}"'},
        )

    @classmethod
    def example(cls) -> Self:
        return cls("read", "write")


class CORSRefusedError(ServiceError):
    status_code = 400
    code = "cors_refused"

    def __init__(self, origin: str, refused: str) -> None:
        super().__init__(
            f"the preflight of a page of {_shown(origin)!r} asks for what is not allowed "
            f"({refused}); the server's KASTORE_CORS_ORIGINS lists the origins allowed, and "
            "pages may send Range, If-None-Match, If-Range, Authorization, X-API-Key and "
            "X-Request-ID with GET, HEAD, POST, PUT or DELETE"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("http://evil.example", "Disallowed CORS origin")


class NotAcceptableError(ServiceError):
    status_code = 406
    code = "not_acceptable"

    def __init__(self, accept: str, offered: Iterable[str]) -> None:
        super().__init__(
            f"the Accept header {_shown(accept)!r} accepts none of {', '.join(offered)}; "
            "accept one of them, or choose a form with ?format= (raw, json, npy, csv, text, rows)"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("application/json;q=0", ["application/octet-stream", "application/json"])


class UnsupportedUploadError(ServiceError):
    status_code = 415
    code = "unsupported_upload"

    @classmethod
    def example(cls) -> Self:
        return cls("the form has no 'file' field; send the file with curl -F file=@PATH")


class CorruptBodyError(ServiceError):
    status_code = 400
    code = "corrupt_body"

    def __init__(self, coding: str, reason: str) -> None:
        super().__init__(
            f"the body is not valid {coding} data (Content-Encoding: {coding}): {reason}; "
            f"send it again, compressed whole (zstd -c FILE, gzip -c FILE), or uncompressed"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("zstd", "the data ends before the end of its last frame")


class UnsupportedEncodingError(ServiceError):
    status_code = 415
    code = "unsupported_content_encoding"

    def __init__(self, encoding: str, supported: Sequence[str]) -> None:
        super().__init__(
            f"the body's Content-Encoding {_shown(encoding)!r} is not supported; "
            f"send it as {', '.join(supported)} or uncompressed",
            headers={"accept-encoding": ", ".join(supported)},
        )

    @classmethod
    def example(cls) -> Self:
        return cls("br", ["zstd", "gzip"])


class UploadTooLargeError(ServiceError):
    status_code = 413
    code = "upload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the upload is larger than the limit of {limit} bytes "
            "(the server's KASTORE_MAX_UPLOAD_BYTES setting)"
        )

    @classmethod
    def example(cls) -> Self:
        return cls(4 << 30)


class JSONTooLargeError(ServiceError):
    status_code = 413
    code = "json_too_large"

    def __init__(self, size: int, limit: int, *, raw_url: str, max_elements: int) -> None:
        super().__init__(
            f"the array has {size} bytes, more than the {limit} bytes served as JSON "
            f"(KASTORE_MAX_JSON_BYTES); download it raw with GET {raw_url} or ask for "
            f"at most {max_elements} elements at a time with ?format=json&start=...&stop=..."
        )

    @classmethod
    def example(cls) -> Self:
        return cls(
            80_000_000, 64 << 20, raw_url="/stores/sim/arrays/nodes%2Ftime", max_elements=8388608
        )


class RangeNotSatisfiableError(ServiceError):
    status_code = 416
    code = "range_not_satisfiable"

    def __init__(self, requested: str, size: int) -> None:
        super().__init__(
            f"the range {_shown(requested)!r} starts beyond the {size} bytes there are; "
            f"ask for bytes 0 to {size - 1}, or leave out the Range header",
            headers={"content-range": f"bytes */{size}"},
        )

    @classmethod
    def example(cls) -> Self:
        return cls("bytes=5000-", 4096)


class RequestTimeoutError(ServiceError):
    status_code = 408
    code = "request_timeout"

    @classmethod
    def for_headers(cls, seconds: float) -> Self:
        return cls(
            f"the request's headers did not arrive within {seconds:g} s (the server's "
            "KASTORE_HEADER_TIMEOUT); send them at once"
        )

    @classmethod
    def for_body(cls, seconds: float) -> Self:
        return cls(
            f"no byte of the upload arrived for {seconds:g} s (the server's "
            "KASTORE_BODY_TIMEOUT); nothing was kept, send it again",
            headers={"connection": "close"},  # the rest of the body is not read
        )

    @classmethod
    def example(cls) -> Self:
        return cls.for_body(30)


class HeadersTooLargeError(ServiceError):
    status_code = 431
    code = "headers_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request line and headers hold more than {limit} bytes (the server's "
            "KASTORE_MAX_HEADER_BYTES); send fewer or shorter headers"
        )

    @classmethod
    def example(cls) -> Self:
        return cls(65536)


class InsufficientStorageError(ServiceError):
    status_code = 507
    code = "insufficient_storage"

    def __init__(self) -> None:
        super().__init__(
            "the server's disk is full: nothing was stored; delete stores you no longer "
            "need (DELETE /stores/{name}) or ask the operator for space, then retry"
        )

    @classmethod
    def example(cls) -> Self:
        return cls()


class BusyError(ServiceError):
    status_code = 503
    code = "busy"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the server is serving its limit of {limit} connections (KASTORE_MAX_CONNECTIONS); "
            "retry in a moment"
        )

    @classmethod
    def example(cls) -> Self:
        return cls(256)


class ContentBusyError(ServiceError):
    status_code = 503
    code = "content_busy"

    def __init__(self) -> None:
        super().__init__(
            "a file with the same content is being removed by another request; retry in a moment"
        )

    @classmethod
    def example(cls) -> Self:
        return cls()


class UploadExpiredError(ServiceError):
    status_code = 503
    code = "upload_expired"

    def __init__(self, grace: float) -> None:
        super().__init__(
            f"the upload took longer than KASTORE_GC_GRACE_SECONDS ({grace:g} s) to be "
            "published, so its file may have been collected; nothing was stored: send it again"
        )

    @classmethod
    def example(cls) -> Self:
        return cls(3600)


class StorageUnavailableError(ServiceError):
    status_code = 503
    code = "storage_unavailable"

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} cannot be reached at the moment; retry in a moment "
            "(the server's log says more)"
        )

    @classmethod
    def example(cls) -> Self:
        return cls("the index (PostgreSQL)")


class UnhealthyError(ServiceError):
    status_code = 503
    code = "unhealthy"

    @classmethod
    def example(cls) -> Self:
        return cls(
            "the data directory cannot be written or its index read; check that it exists, "
            "is writable and has free space (the server's log names it)"
        )


def _codes() -> str:
    return ", ".join(
        f"`{error.code}` ({error.status_code})"
        for error in sorted(all_errors(), key=lambda error: (error.status_code, error.code))
    )


def all_errors() -> list[type[ServiceError]]:
    """Every error class the service answers with."""
    found: list[type[ServiceError]] = []
    pending = [ServiceError]
    while pending:
        for sub in pending.pop().__subclasses__():
            found.append(sub)
            pending.append(sub)
    return found


class ErrorAnswer(BaseModel):
    """Every error answer: a machine-readable code and a message saying how to fix it."""

    error: str = Field(description=f"What went wrong: one of {_codes()}.")
    detail: str = Field(description="What was wrong, and how to fix it.")


def error_body(code: str, detail: str) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {"error": code, "detail": detail}


def documented(
    *errors: type[ServiceError], descriptions: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of the ``errors`` a route can answer, one example each.

    Errors sharing a status share its entry; ``descriptions`` replaces the
    default description (the codes) of a status.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        sample = error.example()
        entry = responses.setdefault(
            error.status_code,
            {"model": ErrorAnswer, "content": {"application/json": {"examples": {}}}},
        )
        examples = entry["content"]["application/json"]["examples"]
        examples[error.code] = {
            "summary": error.code,
            "value": error_body(error.code, sample.detail),
        }
    for status, entry in responses.items():
        codes = ", ".join(f"`{code}`" for code in entry["content"]["application/json"]["examples"])
        entry["description"] = (descriptions or {}).get(int(status), f"Error: {codes}.")
    return responses


# --- handlers ---------------------------------------------------------------------

#: The order methods are listed in, in ``Allow`` and in messages.
_METHOD_ORDER = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _ordered(methods: Iterable[str]) -> list[str]:
    def rank(method: str) -> tuple[int, str]:
        known = method in _METHOD_ORDER
        return (_METHOD_ORDER.index(method) if known else len(_METHOD_ORDER), method)

    return sorted(set(methods), key=rank)


def note_error(scope: MutableMapping[str, Any], code: str) -> None:
    """Record the error code a request was answered with, for its log line and metrics."""
    scope.setdefault("state", {})["error_code"] = code


def _answer(error: ServiceError, request: Request) -> JSONResponse:
    note_error(request.scope, error.code)
    return JSONResponse(
        error_body(error.code, error.detail), status_code=error.status_code, headers=error.headers
    )


async def service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _answer(exc, request)


def _allowed_methods(routes: Sequence[Route], request: Request) -> list[str]:
    """Every method some route answers on this path (starlette names only the first route's)."""
    methods: set[str] = set()
    scope = {**request.scope, "method": "\0"}  # so that every route of this path matches partly
    for route in routes:
        if route.methods and route.matches(scope)[0] is Match.PARTIAL:
            methods |= route.methods
    return _ordered(methods)


def _route_list(routes: Sequence[BaseRoute]) -> str:
    """``GET, POST /stores; GET, PUT, DELETE /stores/{name}; ...`` for the documented routes."""
    by_path: dict[str, set[str]] = {}
    for route in routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            by_path.setdefault(route.path_format, set()).update(route.methods or ())
    return "; ".join(
        f"{', '.join(_ordered(methods))} {path}" for path, methods in sorted(by_path.items())
    )


def install_error_handlers(app: FastAPI, *, routes: Sequence[BaseRoute]) -> None:
    """Answer every known error with the JSON error body.

    ``routes`` are all the app's routes, for 404 and 405 answers to say what
    there is.
    """
    methods_routes = [route for route in routes if isinstance(route, Route)]
    route_list = _route_list(routes)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        path, root = request.url.path, request.scope.get("root_path", "")
        if exc.status_code == 405:
            allowed = _allowed_methods(methods_routes, request)
            return _answer(MethodNotAllowedError(request.method, path, allowed), request)
        if exc.status_code == 404:
            error = RouteNotFoundError(request.method, path, route_list, f"{root}/docs")
            return _answer(error, request)
        return JSONResponse(
            error_body("http_error", str(exc.detail)),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in exc.errors()
    ]
    return _answer(InvalidRequestError("; ".join(problems)), request)


async def _client_gone(_: Request, exc: Exception) -> JSONResponse:
    # Nobody will read this: the client hung up mid-request (an upload, say),
    # and whatever it had started has been cleaned up. Not a server error.
    return JSONResponse(error_body("client_disconnected", "the client went away"), 400)
