"""The application factory."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi_offline import FastAPIOffline
from obstore.exceptions import BaseError as ObjectStoreError

import kastore

from .config import Settings, get_settings
from .errors import StorageUnavailableError, all_errors, install_error_handlers, service_error
from .observability import METRICS_MEDIA_TYPE, Metrics, ObservabilityMiddleware
from .routes import answer_head, arrays, health, stores, summary, ui
from .security import (
    METRICS_PATH,
    AccessMiddleware,
    CORSPolicy,
    KeyConfigError,
    KeyRing,
    describe_access,
    document_security,
)
from .storage import Storage
from .storage.interfaces import BlobStore, Index
from .storage.local_blobs import LocalBlobs
from .storage.sqlite_index import SqliteIndex

__all__ = ["StartupError", "create_app", "open_storage"]

logger = logging.getLogger("app")

#: Seconds between two garbage collections at most (a quarter of the grace period if less).
_GC_EVERY = 600.0

#: Headers a page of another origin may send, and those it may read (KASTORE_CORS_ORIGINS).
CORS_ALLOW_HEADERS = [
    "Range",
    "If-None-Match",
    "If-Range",
    "Authorization",
    "X-API-Key",
    "X-Request-ID",
    "Content-Type",
]
CORS_EXPOSE_HEADERS = [
    "ETag",
    "Content-Range",
    "Content-Disposition",
    "Content-Length",
    "Accept-Ranges",
    "Location",
    "X-Request-ID",
    "X-Kastore-Dtype",
    "X-Kastore-Length",
    "X-Kastore-Total-Length",
]

DESCRIPTION = """
Store [kastore](https://kastore.readthedocs.io) files — tskit `.trees` files
included — and read any single array over HTTP, as raw bytes or JSON, without
downloading the whole file.

Upload with `curl -F file=@sim.trees http://localhost:8000/stores`, list keys
with `GET /stores/sim/keys`, download with `GET /stores/sim/arrays/edges/left`.
Every error answer is JSON: `{"error": CODE, "detail": MESSAGE}`; the codes
are listed below, and each operation shows an example of each error it can
answer. Every GET answers HEAD; raw downloads answer `If-None-Match`, `Range`
and `If-Range`. Writes sent by web pages of other origins than this server's
(or `KASTORE_CORS_ORIGINS`) are refused with 403.

Writes need an API key with the `write` scope once the server has keys (and
on any address but loopback): send it as `Authorization: Bearer KEY` or
`X-API-Key: KEY`, or enter it with **Authorize** on this page. Each operation
says which scope it needs.
"""


class StartupError(Exception):
    """The server cannot start; the message says why and what to do, in one line."""


async def open_storage(settings: Settings) -> Storage:
    """The storage ``settings`` name, opened for this process.

    Raises:
        StartupError: the data directory cannot be written, or a backend cannot be
            reached or read; the message says which and what to do.
    """
    data_dir = settings.data_dir
    try:
        return await _open_backends(settings)
    except PermissionError as err:
        uid = os.getuid()
        raise StartupError(
            f"the data directory {data_dir} is not writable by this server (uid {uid}): "
            f"{err.strerror} on {err.filename or data_dir}; give the directory to uid {uid} "
            f"(for a host folder mounted into the image at /data: chown -R 10001 FOLDER), "
            "or run the container as the folder's owner (docker run --user $(id -u):$(id -g))"
        ) from None
    except OSError as err:
        raise StartupError(
            f"cannot use the data directory {data_dir}: {err.strerror or err} "
            f"on {err.filename or data_dir}; set KASTORE_DATA_DIR to a writable directory"
        ) from None
    except sqlite3.Error as err:
        raise StartupError(
            f"cannot read the index {data_dir / 'index.sqlite3'}: {err}; restore it from a "
            "backup, or move the data directory away and start afresh"
        ) from None
    except RuntimeError as err:  # a remote backend that cannot be reached
        raise StartupError(" ".join(str(err).split())) from None  # one line


async def _open_backends(settings: Settings) -> Storage:
    data_dir = settings.data_dir
    blobs: BlobStore
    index: Index
    if settings.blob_url is None:
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        local = await LocalBlobs.create(data_dir, fsync=settings.fsync)
        blobs, make_room = local, local.free_reserve
    else:
        from .storage.s3_blobs import S3Blobs

        blobs, make_room = (
            await S3Blobs.create(settings.blob_url, endpoint_url=settings.s3_endpoint_url),
            None,
        )
    try:
        if settings.index_url is None:
            await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
            index = await SqliteIndex.open(data_dir / "index.sqlite3", make_room=make_room)
        else:
            from .storage.postgres_index import PostgresIndex

            index = await PostgresIndex.open(
                settings.index_url,
                max_size=settings.index_pool_size,
                timeout=settings.index_timeout,
            )
    except BaseException:
        await blobs.close()
        raise
    return Storage(
        blobs,
        index,
        open_stores=settings.open_stores,
        cache_bytes=settings.cache_bytes,
        grace=timedelta(seconds=settings.gc_grace_seconds),
        # Past the grace period, garbage collection takes over a removal as abandoned.
        removal_delay=min(settings.removal_delay, settings.gc_grace_seconds / 2),
    )


async def _collect_garbage(storage: Storage, every: float) -> None:
    """Collect what crashes left, at start and then every ``every`` seconds."""
    while True:
        try:
            collected = await storage.collect_garbage()
        except Exception:
            logger.exception("garbage collection failed; trying again later")
        else:
            if collected:
                logger.info("collected %d things left by interrupted writes", collected)
        await asyncio.sleep(every)


async def _object_store_down(request: Request, exc: Exception) -> Response:
    """503 when the S3 server fails a request (down, or answering errors): retry later."""
    logger.error("the object store failed a request: %s", exc)
    return await service_error(request, StorageUnavailableError("the object store (S3)"))


def _error_codes() -> str:
    """The API description's table of every error code."""
    by_status: dict[int, list[str]] = {}
    for error in all_errors():
        by_status.setdefault(error.status_code, []).append(f"`{error.code}`")
    rows = [
        f"| {status} | {', '.join(sorted(codes))} |" for status, codes in sorted(by_status.items())
    ]
    return "\n".join(["| Status | Codes |", "| --- | --- |", *rows])


def create_app(settings: Settings | None = None, *, storage: Storage | None = None) -> FastAPI:
    """Build the service; ``settings`` default to the environment's.

    ``storage`` is one already opened for ``settings`` (``python -m app`` opens
    it first, to report a failure in one line); by default the app opens it at
    start. Either way the app closes it when it stops.

    Raises:
        StartupError: the configured API keys cannot be read.
    """
    settings = settings or get_settings()
    try:
        keys = KeyRing.from_settings(settings)
    except KeyConfigError as err:
        raise StartupError(str(err)) from None

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = storage or await open_storage(settings)
        app.state.storage = opened
        logger.log(*describe_access(settings, keys))
        collector = asyncio.create_task(
            _collect_garbage(opened, min(_GC_EVERY, settings.gc_grace_seconds / 4))
        )
        try:
            yield
        finally:
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            del app.state.storage
            await opened.close()

    app = FastAPIOffline(
        title="kastore-service",
        version=kastore.__version__,
        description=f"{DESCRIPTION}\n## Error codes\n\n{_error_codes()}\n",
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": True},
        openapi_tags=[
            {"name": "stores", "description": "Upload, list, download and delete files."},
            {"name": "arrays", "description": "The keys of a file, and one array at a time."},
            {"name": "health", "description": "For load balancers and container runtimes."},
        ],
    )
    app.state.settings = settings
    # The key and array routes first: they are the ones read most often.
    routers = [arrays.router, stores.router, summary.router, health.router, ui.router]
    for router in routers:
        app.include_router(router)
    app.mount(ui.STATIC_PATH, ui.static_files(), name="ui-static")
    answer_head(app.router)  # the documentation pages
    metrics = None
    if settings.metrics:
        metrics = Metrics()
        exposition = metrics.exposition

        @app.get(METRICS_PATH, include_in_schema=False)
        async def prometheus_metrics(request: Request) -> Response:
            storage = getattr(request.app.state, "storage", None)
            return Response(await exposition(storage), media_type=METRICS_MEDIA_TYPE)

    all_routes = [route for router in [*routers, app.router] for route in router.routes]
    install_error_handlers(app, routes=all_routes)
    app.add_exception_handler(ObjectStoreError, _object_store_down)
    document_security(app, settings, keys)
    # The first added is the innermost: keys are checked inside CORS (so that a
    # refusal can be read by the page), and every answer is counted and logged.
    app.add_middleware(AccessMiddleware, settings=settings, keys=keys)
    if settings.cors_origins:
        app.add_middleware(
            CORSPolicy,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "DELETE"],
            allow_headers=CORS_ALLOW_HEADERS,
            expose_headers=CORS_EXPOSE_HEADERS,
            max_age=600,
        )
    app.add_middleware(ObservabilityMiddleware, metrics=metrics, routes=all_routes)
    return app


def __getattr__(name: str) -> Any:
    """``app.main:app`` for process managers (uvicorn, gunicorn): built from the
    environment on first use, so importing this module builds nothing."""
    if name == "app":
        from .observability import configure_logging

        settings = get_settings()
        atexit.register(configure_logging(settings.log_level))
        built = globals()["app"] = create_app(settings)
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
