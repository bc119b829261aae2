"""The application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

import kastore

from .config import Settings, get_settings
from .errors import install_error_handlers
from .routes import answer_head, arrays, health, stores
from .storage import Storage

__all__ = ["create_app"]

DESCRIPTION = """
Store [kastore](https://kastore.readthedocs.io) files — tskit `.trees` files
included — and read any single array over HTTP, as raw bytes or JSON, without
downloading the whole file.

Upload with `curl -F file=@sim.trees http://localhost:8000/stores`, list keys
with `GET /stores/sim/keys`, download with `GET /stores/sim/arrays/edges/left`.
Every error answer is JSON: `{"error": CODE, "detail": MESSAGE}`; the codes
are listed with the `ErrorAnswer` schema, and each operation shows an example
of each error it can answer. Every GET answers HEAD; raw downloads answer
`If-None-Match`, `Range` and `If-Range`. Writes sent by web pages of other
origins than this server's (or `KASTORE_CORS_ORIGINS`) are refused with 403.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service; ``settings`` default to the environment's."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = Storage(
            settings.data_dir,
            open_stores=settings.open_stores,
            cache_bytes=settings.cache_bytes,
            fsync=settings.fsync,
        )
        app.state.storage = storage
        try:
            yield
        finally:
            storage.close()

    app = FastAPIOffline(
        title="kastore-service",
        version=kastore.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},
        openapi_tags=[
            {"name": "stores", "description": "Upload, list, download and delete files."},
            {"name": "arrays", "description": "The keys of a file, and one array at a time."},
            {"name": "health", "description": "For load balancers and container runtimes."},
        ],
    )
    app.state.settings = settings
    # The key and array routes first: they are the ones read most often.
    routers = [arrays.router, stores.router, health.router]
    for router in routers:
        app.include_router(router)
    answer_head(app.router)  # the documentation pages
    install_error_handlers(
        app, routes=[route for router in [*routers, app.router] for route in router.routes]
    )
    return app
