"""The errors of ``kastore.remote``, one class per kind of failure a caller handles.

The hierarchy::

    KastoreException
    └── RemoteError                        anything kastore.remote raises about a service
        ├── ServiceError                   the service answered with an error:
        │   │                              .status, .error and .detail of its JSON body
        │   ├── InvalidRequestError        400, 422 (also a ValueError)
        │   ├── AuthenticationError        401: no API key, or not a valid one
        │   ├── PermissionDeniedError      403: the key (or the origin) may not do that
        │   ├── NotFoundError              404 (also a LookupError)
        │   │   ├── StoreNotFoundError
        │   │   └── KeyNotFoundError
        │   ├── StoreExistsError           409: upload(..., replace=True) replaces
        │   ├── TooLargeError              413
        │   └── ServerError                5xx
        ├── StoreChangedError              the store was replaced while it was open
        ├── ProtocolError                  an answer the API does not document
        ├── ServiceUnreachableError        no connection, after every retry
        │                                  (also a ConnectionError)
        └── ServiceTimeoutError            no answer in time, after every retry
                                           (also a TimeoutError)
"""

from __future__ import annotations

from typing import ClassVar

from .._transport import HTTPTimeoutError, Response, status_error
from ..exceptions import KastoreException

__all__ = [
    "AuthenticationError",
    "InvalidRequestError",
    "KeyNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RemoteError",
    "ServerError",
    "ServiceError",
    "ServiceTimeoutError",
    "ServiceUnreachableError",
    "StoreChangedError",
    "StoreExistsError",
    "StoreNotFoundError",
    "TooLargeError",
    "error_from",
    "transport_error",
    "typed",
]


class RemoteError(KastoreException):
    """Base of everything ``kastore.remote`` raises about the service."""


class ServiceError(RemoteError):
    """The service answered with an error status.

    Attributes:
        status: the HTTP status.
        error: the service's error code (``store_not_found``, ...), or
            ``http_<status>`` when the answer had no JSON error body.
        detail: the service's message, which says how to recover.
        method, url: the request answered.
    """

    statuses: ClassVar[tuple[int, ...]] = ()

    def __init__(self, status: int, error: str, detail: str, *, method: str, url: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.method = method
        self.url = url

    def __str__(self) -> str:
        # KeyError, a base of some subclasses, would show the message quoted.
        return f"{self.status} {self.error}: {self.detail}"


class InvalidRequestError(ServiceError, ValueError):
    statuses = (400, 422)


class AuthenticationError(ServiceError):
    statuses = (401,)


class PermissionDeniedError(ServiceError):
    statuses = (403,)


class NotFoundError(ServiceError, LookupError):
    statuses = (404, 410)


class StoreNotFoundError(NotFoundError):
    """No store of that name (``error == "store_not_found"``)."""


class KeyNotFoundError(NotFoundError, KeyError):
    """The store has no such key (``error == "key_not_found"``)."""


class StoreExistsError(ServiceError):
    statuses = (409,)


class TooLargeError(ServiceError):
    statuses = (413,)


class ServerError(ServiceError):
    statuses = (500, 501, 502, 503, 504, 505, 507)


class StoreChangedError(RemoteError):
    """The store was replaced on the service after it was opened: open it again."""


class ProtocolError(RemoteError):
    """The service answered something its API does not document."""


class ServiceUnreachableError(RemoteError, ConnectionError):
    """No connection to the service, or it was dropped, on every attempt."""


class ServiceTimeoutError(RemoteError, TimeoutError):
    """The service did not answer within the timeout, on every attempt."""


_BY_CODE: dict[str, type[ServiceError]] = {
    "store_not_found": StoreNotFoundError,
    "key_not_found": KeyNotFoundError,
    "store_exists": StoreExistsError,
}
_BY_STATUS: dict[int, type[ServiceError]] = {
    status: cls
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        PermissionDeniedError,
        NotFoundError,
        StoreExistsError,
        TooLargeError,
        ServerError,
    )
    for status in cls.statuses
}


def error_from(response: Response, method: str) -> ServiceError:
    """The exception for an error answer; reads (and closes) its body."""
    err = status_error(response)
    return typed(err.status, err.code or f"http_{err.status}", err.detail, method, err.url)


def typed(status: int, error: str, detail: str, method: str, url: str) -> ServiceError:
    """The ``ServiceError`` subclass for a status and the service's error code."""
    cls = _BY_CODE.get(error) or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ServiceError
    return cls(status, error, detail, method=method, url=url)


def transport_error(err: OSError, url: str) -> RemoteError:
    """The exception for a request that got no answer."""
    if isinstance(err, HTTPTimeoutError):
        return ServiceTimeoutError(f"{url}: {err}")
    return ServiceUnreachableError(f"{url}: {err}")
