"""Settings, read from ``KASTORE_*`` environment variables."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "get_settings"]

MiB = 1 << 20
GiB = 1 << 30


class Settings(BaseSettings):
    """How the service runs. Every field is set by ``KASTORE_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="KASTORE_", frozen=True)

    data_dir: Path = Field(
        default=Path("kastore-data"),
        description="Directory holding the stored files and their index; created on start.",
    )
    host: str = Field(default="127.0.0.1", description="Interface the server listens on.")
    blob_url: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$",
        description=(
            "Where stored files live instead of the data directory: `s3://bucket/prefix` in "
            "any S3-compatible store (endpoint, region and credentials from the AWS_* "
            "variables and KASTORE_S3_ENDPOINT_URL)."
        ),
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        pattern=r"^https?://\S+$",
        description="The S3-compatible server's URL (MinIO, Ceph...); default: AWS's.",
    )
    index_url: str | None = Field(
        default=None,
        pattern=r"^postgres(ql)?://\S*$",
        description=(
            "The index in PostgreSQL instead of SQLite in the data directory: "
            "`postgresql://user:password@host:5432/db`."
        ),
    )
    index_pool_size: int = Field(
        default=10, ge=1, description="Connections to PostgreSQL each process keeps at most."
    )
    index_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a request waits for a PostgreSQL connection (503 beyond).",
    )
    gc_grace_seconds: float = Field(
        default=3600.0,
        gt=0,
        description=(
            "Age after which what a crash left (staged uploads, unnamed files, leases) is "
            "collected; longer than any upload takes."
        ),
    )
    removal_delay: float = Field(
        default=5.0,
        ge=0,
        description=(
            "Seconds the file of a replaced or deleted store is kept, for requests "
            "that looked its name up just before (at most half of KASTORE_GC_GRACE_SECONDS)."
        ),
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=512,
        description="Server processes sharing the port and the storage (uvicorn's --workers).",
    )

    port: int = Field(default=8000, ge=0, le=65535, description="Port the server listens on.")
    max_upload_bytes: int = Field(
        default=4 * GiB, gt=0, description="Largest file accepted by an upload (413 beyond)."
    )
    max_json_bytes: int = Field(
        default=64 * MiB,
        gt=0,
        description="Largest array, in stored bytes, served as JSON (413 beyond).",
    )
    compress_min_bytes: int = Field(
        default=1024,
        ge=0,
        description="Smallest download sent compressed when the client accepts zstd or gzip.",
    )
    open_stores: int = Field(
        default=128, ge=1, description="How many parsed files are kept open in memory."
    )
    fsync: bool = Field(default=True, description="Flush each upload to disk before answering 201.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "Origins (`scheme://host[:port]`, or `*` for any) of web pages allowed to write; "
            "comma-separated. Writes from pages of other origins get 403."
        ),
    )
    min_free_bytes: int = Field(
        default=64 * MiB,
        ge=0,
        description="`/healthz` answers 503 when the data directory has less free space than this.",
    )
    cache_bytes: int = Field(
        default=256 * MiB,
        gt=0,
        description=(
            "Memory for parsed stores and their key listings, shared by all stores and "
            "kept by content (sha256); the least recently used go beyond it."
        ),
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Largest request line and headers together (431 beyond, connection closed).",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a connection may take to send a request's line and headers, from its "
            "first byte or from connecting (408 beyond, connection closed)."
        ),
    )
    keep_alive_timeout: float = Field(
        default=5.0, gt=0, description="Seconds an idle kept-alive connection stays open."
    )
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds an upload may go without sending a byte (408 beyond; the partial upload "
            "is dropped)."
        ),
    )
    max_connections: int = Field(
        default=256,
        ge=1,
        description="Connections (and requests) served at once; requests beyond get 503.",
    )
    shutdown_timeout: float = Field(
        default=10.0,
        ge=0,
        description="Seconds requests under way get to finish after SIGTERM before they are cut.",
    )
    root_path: str = Field(
        default="",
        pattern=r"^(/[^\s/]+)*$",
        description="Path prefix the service is mounted under behind a proxy, e.g. `/kastore`.",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description=(
            "Comma-separated addresses (or `*`) of proxies whose X-Forwarded-For and "
            "X-Forwarded-Proto headers are believed."
        ),
    )
    api_keys_file: Path | None = Field(
        default=None,
        description=(
            "File of API keys, one a line: the key's SHA-256 in hex, then its scopes "
            "(`read`, `write`, `admin`, comma-separated); `#` starts a comment. "
            "`python -m app keys create` makes a key and its line."
        ),
    )
    api_keys: str = Field(
        default="",
        description="API keys as in KASTORE_API_KEYS_FILE, the lines given in the variable itself.",
    )
    public_read: bool = Field(
        default=True, description="Reads need no key; false: reads need a key with `read`."
    )
    anonymous_write: bool = Field(
        default=False,
        description=(
            "With no API key configured, accept writes from anyone even when listening on "
            "another address than loopback."
        ),
    )
    metrics: bool = Field(
        default=True,
        description="Count requests and serve them at /metrics (admin scope when keys exist).",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = Field(
        default="info",
        description="Least severe log lines written, in any case; `info` logs every request.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_level(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        """``KASTORE_CORS_ORIGINS=http://a.example,http://b.example`` (or a JSON list)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [origin.strip() for origin in text.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s]+/?", origin):
                raise ValueError(f"{origin!r} is not an origin: write it as scheme://host[:port]")
        return origins


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()
