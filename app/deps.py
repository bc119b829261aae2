"""Shared lookups for the routes: settings, storage, "this store or 404"."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, NamedTuple

from fastapi import Depends, Path, Query, Request

from .config import Settings
from .errors import InvalidRequestError
from .keytable import quote_key
from .storage import OpenStore, Storage, StoreRecord

__all__ = [
    "MAX_QUERY_INT",
    "Opened",
    "RecordDep",
    "SettingsDep",
    "SliceStart",
    "SliceStop",
    "StorageDep",
    "StoreName",
    "array_url",
    "get_record",
    "get_settings",
    "get_storage",
    "open_store",
    "query_int",
    "storage_of",
    "store_url",
]


# The dependencies are ``async``: FastAPI runs plain functions in its thread
# pool, which costs more than these lookups themselves.


async def get_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def storage_of(request: Request) -> Storage:
    """The storage the app opened at start."""
    storage: Storage = request.app.state.storage
    return storage


async def get_storage(request: Request) -> Storage:
    return storage_of(request)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[Storage, Depends(get_storage)]


StoreName = Annotated[str, Path(description="The store's name.")]

#: The largest value of an integer query parameter: the largest signed 64-bit
#: integer, as far as SQLite's and numpy's indices go.
MAX_QUERY_INT = 2**63 - 1

#: The ``start`` and ``stop`` of a slice of an array, elements ``[start, stop)``.
SliceStart = Annotated[
    int | None, Query(ge=0, le=MAX_QUERY_INT, description="First element (default 0).")
]
SliceStop = Annotated[
    int | None,
    Query(ge=0, le=MAX_QUERY_INT, description="Element to stop before (default: the end)."),
]


def query_int(query: Mapping[str, str], name: str, *, default: int, ge: int, le: int) -> int:
    """An integer query parameter in ``[ge, le]``, checked as FastAPI checks declared ones.

    For handlers that read their parameters themselves; the errors read the
    same as for declared parameters (422, ``query.NAME: ...``).
    """
    text = query.get(name)
    if text is None:
        return default
    text = text.strip()
    if not re.fullmatch(r"[+-]?\d{1,30}", text):
        problem = "Input should be a valid integer, unable to parse string as an integer"
        raise InvalidRequestError(f"query.{name}: {problem}")
    value = int(text)
    if value < ge:
        raise InvalidRequestError(f"query.{name}: Input should be greater than or equal to {ge}")
    if value > le:
        raise InvalidRequestError(f"query.{name}: Input should be less than or equal to {le}")
    return value


async def get_record(storage: StorageDep, name: StoreName) -> StoreRecord:
    """The named store, or a 404 naming it."""
    return await storage.get(name)


RecordDep = Annotated[StoreRecord, Depends(get_record)]


class Opened(NamedTuple):
    record: StoreRecord
    store: OpenStore


async def open_store(request: Request, name: str) -> Opened:
    """The named store, parsed and mapped, or a 404 naming it.

    The key and array routes, the ones read most, call this directly instead
    of declaring it as a dependency: FastAPI's dependency solving costs more
    than the lookup itself (key listing went from 0.67x to 0.78x the
    requests/s of a trivial endpoint).
    """
    storage = storage_of(request)
    return Opened(*await storage.current(await storage.get(name), storage.open))


def store_url(request: Request, name: str) -> str:
    return f"{request.scope.get('root_path', '')}/stores/{name}"


def array_url(request: Request, name: str, key: str) -> str:
    """The download URL of a key: every character but letters, digits and ``_.-~`` encoded."""
    return f"{store_url(request, name)}/arrays/{quote_key(key)}"
