"""Who may do what: API keys and their scopes, the loopback rule, and which pages may write.

**Keys.** A key is a random string given to a client once; the server keeps
only its SHA-256, with the scopes it grants, one key a line
(``KASTORE_API_KEYS_FILE``, or the same lines in ``KASTORE_API_KEYS``)::

    # sha256 of the key                                              scopes
    9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 read,write

Clients send ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. The key's
hash is compared with every configured hash in constant time. Scopes nest:
``admin`` grants ``write``, which grants ``read``.

**What needs which scope** (``required_scope``, used both to check requests
and to document them): reads (GET, HEAD) need ``read`` unless
``KASTORE_PUBLIC_READ`` (the default); every other method needs ``write``;
``/metrics`` needs ``admin`` once keys exist; ``/healthz``, the
documentation pages and the web UI's pages (``/``, ``/ui/...``) are open to all.

**No key configured.** Reads are public. Writes are accepted from anyone only
while the server listens on a loopback address (``KASTORE_HOST``) and the
request was not relayed by a proxy (no ``Forwarded`` or ``X-Forwarded-For``),
or with ``KASTORE_ANONYMOUS_WRITE=true``; otherwise they get 401 saying how to
set a key.

**Pages of other sites.** A multipart POST is a CORS "simple request": a
browser sends it from a page of any site without asking first, so any site
could create, replace or delete stores on a server its visitor can reach (a
developer's ``localhost:8000``). Browsers name the page's origin in the
``Origin`` header of such requests: unsafe methods whose ``Origin`` is
neither this server's own origin nor one of ``KASTORE_CORS_ORIGINS`` are
refused with 403 (``check_origin``). Requests without ``Origin`` (curl,
scripts, same-origin forms of older browsers) pass.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.responses import Response

from .config import Settings
from .deps import SettingsDep
from .errors import (
    AnonymousWriteRefusedError,
    CORSRefusedError,
    CrossOriginWriteError,
    InsufficientScopeError,
    InvalidKeyError,
    MissingKeyError,
    ServiceError,
    documented,
    error_body,
    note_error,
)

__all__ = [
    "METRICS_PATH",
    "AccessMiddleware",
    "CORSPolicy",
    "KeyConfigError",
    "KeyRing",
    "Scope",
    "check_origin",
    "describe_access",
    "document_security",
    "hash_key",
    "new_key",
    "origin_key",
    "required_scope",
]

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


class Scope(IntEnum):
    """What a key may do; each scope grants the ones below it."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


_SCOPE_NAMES = {scope.label: scope for scope in Scope}

#: Paths open to everyone whatever the settings: liveness, the documentation, and the
#: web UI's pages and assets (shells that read every stored byte through the API, with
#: the visitor's key).
_OPEN_PREFIXES = ("/docs", "/redoc", "/openapi.json", "/static-offline-docs", "/ui/")
_OPEN_PATHS = frozenset({"/healthz", "/"})
METRICS_PATH = "/metrics"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_scope(method: str, path: str, *, public_read: bool, has_keys: bool) -> Scope | None:
    """The scope a request needs (None: anyone may), from its method and route path."""
    if path in _OPEN_PATHS or path.startswith(_OPEN_PREFIXES):
        return None
    if path == METRICS_PATH:
        return Scope.ADMIN if has_keys else None
    if method in _SAFE_METHODS:
        return None if public_read else Scope.READ
    return Scope.WRITE


# --- keys ---------------------------------------------------------------------------


class KeyConfigError(ValueError):
    """The configured keys cannot be read; the message names the setting and the line."""


def hash_key(key: str) -> str:
    """The SHA-256 of a key in hex: what the configuration holds."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A new random key: 256 bits, URL-safe, with a prefix that makes it recognisable."""
    return "kst_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class _Entry:
    digest: bytes
    scope: Scope


class KeyRing:
    """The configured keys, by hash, each with the widest scope it was given."""

    def __init__(self, entries: Iterable[tuple[str, Scope]] = ()) -> None:
        self._entries = tuple(_Entry(bytes.fromhex(digest), scope) for digest, scope in entries)

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def parse(cls, text: str, *, source: str) -> KeyRing:
        """Keys from configuration lines; ``source`` names where they come from, for errors.

        Raises:
            KeyConfigError: a line is not ``SHA256_HEX SCOPE[,SCOPE...]``.
        """
        entries: list[tuple[str, Scope]] = []
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}, line {number}"
            fields = line.split(None, 1)
            digest = fields[0].lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise KeyConfigError(
                    f"{where}: expected the SHA-256 of a key in hex (64 characters), "
                    f"got {fields[0][:70]!r}; `python -m app keys create` prints a valid line"
                )
            if len(fields) < 2:
                raise KeyConfigError(
                    f"{where}: the key has no scope; add read, write or admin after its hash"
                )
            names = [name.strip().lower() for name in fields[1].replace(" ", ",").split(",")]
            unknown = [name for name in names if name and name not in _SCOPE_NAMES]
            if unknown or not any(names):
                raise KeyConfigError(
                    f"{where}: unknown scope {', '.join(unknown) or fields[1]!r}; "
                    "the scopes are read, write and admin"
                )
            entries.append((digest, max(_SCOPE_NAMES[name] for name in names if name)))
        return cls(entries)

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The keys of ``KASTORE_API_KEYS_FILE`` and ``KASTORE_API_KEYS`` together.

        Raises:
            KeyConfigError: the file cannot be read, or a line is malformed.
        """
        ring = cls.parse(settings.api_keys, source="KASTORE_API_KEYS")
        path = settings.api_keys_file
        if path is None:
            return ring
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            raise KeyConfigError(
                f"KASTORE_API_KEYS_FILE={path}: cannot read it ({reason})"
            ) from None
        from_file = cls.parse(text, source=f"KASTORE_API_KEYS_FILE={path}")
        combined = [(entry.digest.hex(), entry.scope) for entry in ring._entries]
        combined += [(entry.digest.hex(), entry.scope) for entry in from_file._entries]
        return cls(combined)

    def scope_of(self, key: str) -> Scope | None:
        """The scope ``key`` grants, or None if it is no configured key.

        Every configured hash is compared, in constant time, whichever matches.
        """
        digest = hashlib.sha256(key.encode()).digest()
        found: Scope | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry.scope if found is None else max(found, entry.scope)
        return found


# --- the middleware -----------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _route_path(scope: Message) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _presented_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The key of ``Authorization: Bearer KEY``, else of ``X-API-Key: KEY``.

    None when neither is sent; "" (no key matches it) when ``Authorization``
    holds another scheme and there is no ``X-API-Key``.
    """
    api_key: str | None = None
    other_scheme = False
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
            other_scheme = True
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    if api_key is None and other_scheme:
        return ""
    return api_key


def _forwarded(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    return any(name in (b"forwarded", b"x-forwarded-for") for name, _ in headers)


class AccessMiddleware:
    """Checks every request's key against the scope it needs (see the module)."""

    def __init__(self, app: ASGIApp, *, settings: Settings, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys
        self.has_keys = len(keys) > 0
        # Without keys there is nothing to read with: reads are public.
        self.public_read = settings.public_read or not self.has_keys
        self.host = settings.host
        self.anonymous_write = settings.anonymous_write or (
            not self.has_keys and _is_loopback(settings.host)
        )
        self.loopback_only = not settings.anonymous_write

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        if method in _SAFE_METHODS and self.public_read:  # the reads, quickly
            path = _route_path(scope)
            if path != METRICS_PATH or not self.has_keys:
                await self.app(scope, receive, send)
                return
        else:
            path = _route_path(scope)
        error = self._refusal(scope, method, path)
        if error is None:
            await self.app(scope, receive, send)
            return
        note_error(scope, error.code)
        await _send_error(send, error)

    def _refusal(self, scope: Message, method: str, path: str) -> ServiceError | None:
        needed = required_scope(method, path, public_read=self.public_read, has_keys=self.has_keys)
        if needed is None:
            return None
        headers = scope["headers"]
        if not self.has_keys:
            # Only writes get here: reads need a scope only when keys exist.
            if self.anonymous_write and not (self.loopback_only and _forwarded(headers)):
                return None
            return AnonymousWriteRefusedError(self.host, forwarded=_forwarded(headers))
        key = _presented_key(headers)
        if key is None:
            return MissingKeyError(needed.label)
        granted = self.keys.scope_of(key) if key else None
        if granted is None:
            return InvalidKeyError()
        if granted < needed:
            return InsufficientScopeError(granted.label, needed.label)
        return None


async def _send_error(send: Callable[[Message], Awaitable[None]], error: ServiceError) -> None:
    body = orjson.dumps(error_body(error.code, error.detail))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.encode(), v.encode()) for k, v in (error.headers or {}).items()]
    await send({"type": "http.response.start", "status": error.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def describe_access(settings: Settings, keys: KeyRing) -> tuple[int, str]:
    """The start-up log's line on who may read and write, with its level."""
    reads = "public" if settings.public_read else "need a key with read"
    if keys:
        return logging.INFO, (
            f"{len(keys)} API key(s) configured; reads {reads}, writes need a key with write"
        )
    if settings.anonymous_write:
        return logging.WARNING, (
            "no API key configured and KASTORE_ANONYMOUS_WRITE=true: anyone who reaches "
            f"{settings.host}:{settings.port} may create, replace and delete stores"
        )
    if _is_loopback(settings.host):
        return logging.INFO, (
            f"no API key configured: anonymous writes accepted, as the server listens on "
            f"{settings.host} (loopback) only; set a key before listening elsewhere"
        )
    return logging.WARNING, (
        f"no API key configured and listening on {settings.host}: writes are refused with 401; "
        "create a key with `python -m app keys create --scope write` and set "
        "KASTORE_API_KEYS or KASTORE_API_KEYS_FILE, or set KASTORE_ANONYMOUS_WRITE=true "
        "to accept anonymous writes on purpose"
    )


# --- the OpenAPI document -------------------------------------------------------------

_SCHEMES: dict[str, dict[str, Any]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key as `Authorization: Bearer KEY`.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key as `X-API-Key: KEY`.",
    },
}
_ANY_SCHEME: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}]


_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorAnswer"}


def document_security(app: FastAPI, settings: Settings, keys: KeyRing) -> None:
    """Declare the key schemes in the OpenAPI document, and each operation's needs.

    Operations that need a scope list both schemes (so `Authorize` in `/docs`
    sends the key) and their 401 and 403 answers; the others (and writes, while
    anonymous writes are accepted) list them as optional, so a key entered in
    `/docs` is sent with them too.
    """
    build = app.openapi
    anonymous = settings.anonymous_write or _is_loopback(settings.host)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = _SCHEMES
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                needed = required_scope(
                    method.upper(),
                    path,
                    public_read=settings.public_read or not keys,
                    has_keys=bool(keys),
                )
                if needed is None or (not keys and anonymous):
                    operation["security"] = [{}, *_ANY_SCHEME]
                    continue
                operation["security"] = _ANY_SCHEME
                note = f"Needs an API key with the `{needed.label}` scope."
                operation["description"] = f"{note}\n\n{operation.get('description', '')}"
                errors = [MissingKeyError, InvalidKeyError, InsufficientScopeError]
                if needed is Scope.WRITE:
                    errors.append(AnonymousWriteRefusedError)
                for status, entry in documented(*errors).items():
                    del entry["model"]  # FastAPI's shorthand; the document names the schema
                    entry["content"]["application/json"]["schema"] = _ERROR_SCHEMA
                    operation["responses"].setdefault(str(status), entry)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- origins of web pages -----------------------------------------------------------


class CORSPolicy(CORSMiddleware):
    """Starlette's CORS, with refused preflights answered in the JSON error body."""

    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code != 400:
            return answer
        refused = bytes(answer.body).decode(errors="replace")
        error = CORSRefusedError(request_headers["origin"], refused)
        body = orjson.dumps(error_body(error.code, error.detail))
        headers = {k: v for k, v in answer.headers.items() if k.lower() != "content-length"}
        headers["content-type"] = "application/json"
        return Response(body, status_code=error.status_code, headers=headers)


_DEFAULT_PORTS = {"http": 80, "https": 443}

#: An origin as compared: scheme, host and port, with the scheme's default port filled in.
Origin = tuple[str, str, int | None]


def origin_key(origin: str) -> Origin | None:
    """``origin`` as ``(scheme, host, port)``, or None when it is no ``scheme://host[:port]``."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or parts.path not in ("", "/"):
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS.get(scheme)


@lru_cache(maxsize=8)
def _allowed(origins: tuple[str, ...]) -> frozenset[Origin | None]:
    return frozenset(origin_key(origin) for origin in origins)


async def check_origin(request: Request, settings: SettingsDep) -> None:
    """Refuse a write sent by a page of another origin than this server or an allowed one.

    Raises:
        CrossOriginWriteError: ``Origin`` is present and not allowed (403).
    """
    origin = request.headers.get("origin")
    if origin is None or "*" in settings.cors_origins:
        return
    key = origin_key(origin)
    if key is not None:
        url = request.url  # scheme and Host as the client addressed this server
        own = (url.scheme, (url.hostname or "").lower(), url.port or _DEFAULT_PORTS.get(url.scheme))
        if key == own or key in _allowed(tuple(settings.cors_origins)):
            return
    raise CrossOriginWriteError(origin)
