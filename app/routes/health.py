"""Liveness of the service and its data directory."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from ..deps import StorageDep
from ..errors import UnhealthyError, documented
from ..models import Health
from . import answer_head

__all__ = ["router"]

router = APIRouter(tags=["health"])
logger = logging.getLogger(__name__)


@router.get(
    "/healthz",
    summary="Health check",
    responses=documented(UnhealthyError, descriptions={503: "The data directory is not usable."}),
)
async def healthz(storage: StorageDep) -> Health:
    """200 when the data directory can be written and the index read; 503 otherwise.

    ```
    curl http://localhost:8000/healthz
    ```
    """
    if not storage.healthy():
        # Where the data lives is the operator's business, not every client's.
        logger.error(
            "unhealthy: the data directory %s cannot be written or its index read",
            storage.data_dir.resolve(),
        )
        raise UnhealthyError(
            "the data directory cannot be written or its index read; check that it exists, "
            "is writable and has free space (the server's log names it)"
        )
    return Health(status="ok")


answer_head(router)
