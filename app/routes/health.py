"""Liveness of the service and its data directory."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from ..deps import SettingsDep, StorageDep
from ..errors import UnhealthyError, documented
from ..models import Health
from . import answer_head

__all__ = ["router"]

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)


@router.get(
    "/healthz",
    summary="Health check",
    responses=documented(
        UnhealthyError,
        descriptions={503: "The data directory is not usable, or is low on space."},
    ),
)
async def healthz(storage: StorageDep, settings: SettingsDep) -> Health:
    """200 when the data directory can be written, has space and its index reads; 503 otherwise.

    Low on space means less free than `KASTORE_MIN_FREE_BYTES`.

    ```
    curl http://localhost:8000/healthz
    ```
    """
    writable, free = await storage.health()
    if not writable:
        # Where the data lives is the operator's business, not every client's.
        logger.error(
            "unhealthy: files cannot be written or the index read (%s)", storage.describe()
        )
        raise UnhealthyError(
            "the data directory cannot be written or its index read; check that it exists, "
            "is writable and has free space (the server's log names it)"
        )
    if free is not None and free < settings.min_free_bytes:
        logger.error(
            "unhealthy: %s: %d bytes free, less than KASTORE_MIN_FREE_BYTES (%d)",
            storage.describe(),
            free,
            settings.min_free_bytes,
        )
        raise UnhealthyError(
            f"low on space: {free} bytes free, less than the {settings.min_free_bytes} of "
            "KASTORE_MIN_FREE_BYTES; delete stores (DELETE /stores/{name}) or add space"
        )
    return Health(status="ok")


answer_head(router)
