"""Who may do what: for now, which web pages may write.

A multipart POST is a CORS "simple request": a browser sends it from a page of
any site without asking first, so any site could create, replace or delete
stores on a server its visitor can reach (a developer's ``localhost:8000``).
Browsers name the page's origin in the ``Origin`` header of such requests:
unsafe methods whose ``Origin`` is neither this server's own origin nor one
of ``KASTORE_CORS_ORIGINS`` are refused with 403. Requests without ``Origin``
(curl, scripts, same-origin forms of older browsers) pass.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from fastapi import Request

from .deps import SettingsDep
from .errors import CrossOriginWriteError

__all__ = ["check_origin", "origin_key"]

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
