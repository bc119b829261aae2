"""Shared lookups for the routes: settings, storage, "this store or 404"."""

from __future__ import annotations

from typing import Annotated, NamedTuple
from urllib.parse import quote

from fastapi import Depends, Path, Request

from .config import Settings
from .index import StoreRecord
from .storage import OpenStore, Storage

__all__ = [
    "Opened",
    "OpenedDep",
    "RecordDep",
    "SettingsDep",
    "StorageDep",
    "array_url",
    "get_opened",
    "get_record",
    "get_settings",
    "get_storage",
    "store_url",
]


# The dependencies are ``async``: FastAPI runs plain functions in its thread
# pool, which costs more than these lookups themselves.


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]


async def get_record(
    storage: StorageDep, name: Annotated[str, Path(description="The store's name.")]
) -> StoreRecord:
    """The named store, or a 404 naming it."""
    return storage.get(name)


RecordDep = Annotated[StoreRecord, Depends(get_record)]


class Opened(NamedTuple):
    record: StoreRecord
    store: OpenStore


async def get_opened(
    request: Request, name: Annotated[str, Path(description="The store's name.")]
) -> Opened:
    """The named store, parsed and mapped, or a 404 naming it.

    One flat dependency: the key and array routes are the hot ones, and each
    nested dependency costs FastAPI more than the lookup itself.
    """
    storage: Storage = request.app.state.storage
    record = storage.get(name)
    return Opened(record, storage.open(record))


OpenedDep = Annotated[Opened, Depends(get_opened)]


def store_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/stores/{name}"


def array_url(request: Request, name: str, key: str) -> str:
    """The download URL of a key: every character but letters, digits and ``_.-~`` encoded."""
    encoded = quote(key, safe="")
    if encoded in (".", ".."):  # would be taken as a relative path step
        encoded = encoded.replace(".", "%2E")
    return f"{store_url(request, name)}/arrays/{encoded}"
