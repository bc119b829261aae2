"""The JSON shapes of the API's answers."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "ArrayData",
    "ArrayRows",
    "Health",
    "KeyEntry",
    "KeyList",
    "StoreInfo",
    "StoreList",
]


class StoreInfo(BaseModel):
    """A stored kastore file."""

    name: str = Field(examples=["sim"])
    size: int = Field(description="Size of the file in bytes.", examples=[43008])
    sha256: str = Field(description="SHA-256 of the whole file, hex.")
    num_keys: int = Field(description="Number of keys (arrays) in the file.", examples=[62])
    created: datetime = Field(description="When this content was stored under this name (UTC).")
    url: str = Field(description="This store.", examples=["/stores/sim"])
    keys_url: str = Field(description="Its keys.", examples=["/stores/sim/keys"])
    file_url: str = Field(description="The whole file.", examples=["/stores/sim/file"])


class StoreList(BaseModel):
    """One page of stores, sorted by name."""

    stores: list[StoreInfo]
    total: int = Field(description="Number of stores in all.")
    offset: int
    limit: int
    next: str | None = Field(description="URL of the next page, or null on the last.")


class KeyEntry(BaseModel):
    """One key of a store and the array it holds."""

    key: str = Field(examples=["edges/left"])
    dtype: str = Field(description="numpy dtype name.", examples=["float64"])
    length: int = Field(description="Number of elements.", examples=[163])
    size: int = Field(description="Size of the array in bytes.", examples=[1304])
    url: str = Field(
        description="Where to download it (percent-encoded key).",
        examples=["/stores/sim/arrays/edges%2Fleft"],
    )


class KeyList(BaseModel):
    """One page of the keys of a store, in file order."""

    store: str
    sha256: str
    keys: list[KeyEntry]
    total: int = Field(description="Number of keys in all.")
    offset: int
    limit: int
    next: str | None = Field(description="URL of the next page, or null on the last.")


class ArrayData(BaseModel):
    """An array as JSON. NaN and ±infinity are written as null."""

    key: str = Field(examples=["sites/position"])
    dtype: str = Field(examples=["float64"])
    length: int = Field(examples=[3])
    data: list[int | float | None] = Field(examples=[[636.0, 865.0, None]])


class ArrayRows(BaseModel):
    """A ragged column as rows (``?format=rows``): text where every row is UTF-8."""

    key: str = Field(examples=["provenances/record"])
    dtype: str = Field(examples=["int8"])
    length: int = Field(description="The number of rows.", examples=[2])
    rows: list[str] | list[list[int | float | None]] = Field(
        examples=[['{"software": "msprime"}', '{"software": "tskit"}']]
    )


class Health(BaseModel):
    status: Literal["ok"]
