"""Shared lookups for the routes: settings, storage, "this store or 404"."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Path, Request

from .config import Settings
from .index import StoreRecord
from .storage import Storage

__all__ = [
    "RecordDep",
    "SettingsDep",
    "StorageDep",
    "array_url",
    "get_record",
    "get_settings",
    "get_storage",
    "store_url",
]


def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_storage(request: Request) -> Storage:
    storage: Storage = request.app.state.storage
    return storage


SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]


def get_record(
    storage: StorageDep, name: Annotated[str, Path(description="The store's name.")]
) -> StoreRecord:
    """The named store, or a 404 naming it."""
    return storage.get(name)


RecordDep = Annotated[StoreRecord, Depends(get_record)]


def store_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/stores/{name}"


def array_url(request: Request, name: str, key: str) -> str:
    """The download URL of a key: every character but letters, digits and ``_.-~`` encoded."""
    encoded = quote(key, safe="")
    if encoded in (".", ".."):  # would be taken as a relative path step
        encoded = encoded.replace(".", "%2E")
    return f"{store_url(request, name)}/arrays/{encoded}"
