"""Liveness of the service and its data directory."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import StorageDep
from ..errors import UnhealthyError
from ..models import ErrorAnswer, Health

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Health check",
    responses={503: {"model": ErrorAnswer, "description": "The data directory is not usable."}},
)
async def healthz(storage: StorageDep) -> Health:
    """200 when the data directory can be written and the index read; 503 otherwise.

    ```
    curl http://localhost:8000/healthz
    ```
    """
    if not storage.healthy():
        raise UnhealthyError(
            f"the data directory {storage.data_dir} cannot be written or its index read; "
            "check that it exists, is writable and has free space"
        )
    return Health(status="ok")
