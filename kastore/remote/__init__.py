"""A client for the kastore service: list, upload, replace and delete stores, read arrays.

::

    import numpy as np
    import kastore.remote

    service = kastore.remote.connect("http://localhost:8000")  # or KASTORE_URL
    service.upload("sim.trees")                # streamed, with a progress bar
    store = service["sim"]                     # a read-only mapping, like kastore.Store
    store.info("nodes/time")                   # dtype, shape, size: no array fetched
    times = np.asarray(store["nodes/time"])    # the whole array, as numpy
    first = store["edges/left"][:100]          # only these 100 elements are fetched

``connect`` reads ``KASTORE_URL`` and ``KASTORE_API_KEY`` when it is not given
them. To read a whole file lazily over HTTP instead, from this service or any
server that answers Range requests, use ``kastore.load(url)``.
"""

from __future__ import annotations

from ._arrays import RemoteArray, RemoteStore
from ._errors import (
    AuthenticationError,
    InvalidRequestError,
    KeyNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RemoteError,
    ServerError,
    ServiceError,
    ServiceTimeoutError,
    ServiceUnreachableError,
    StoreChangedError,
    StoreExistsError,
    StoreNotFoundError,
    TooLargeError,
)
from ._service import Service, StoreInfo, connect

__all__ = [
    "AuthenticationError",
    "InvalidRequestError",
    "KeyNotFoundError",
    "NotFoundError",
    "PermissionDeniedError",
    "ProtocolError",
    "RemoteArray",
    "RemoteError",
    "RemoteStore",
    "ServerError",
    "Service",
    "ServiceError",
    "ServiceTimeoutError",
    "ServiceUnreachableError",
    "StoreChangedError",
    "StoreExistsError",
    "StoreInfo",
    "StoreNotFoundError",
    "TooLargeError",
    "connect",
]
