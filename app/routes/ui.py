"""The web UI's pages: the stores, one store's keys, one array.

The pages are shells: they hold no stored data, and their scripts read
everything through the API itself, sending the API key the user gave (kept
for the tab). So they are open to all, like ``/docs``, and a server whose
reads need a key shows nothing to a visitor who has none. Every asset is
served from ``/ui/static`` (uPlot vendored from npm, with its licence), and
the Content-Security-Policy lets the pages reach this server only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from ..config import Settings
from ..deps import SettingsDep, StoreName
from ..keytable import quote_key
from . import answer_head, arrays

#: ``arrays`` registers the ``anypath`` convertor that keys are matched with.
_ = arrays

__all__ = ["STATIC_PATH", "THRESHOLD_ELEMENTS", "router", "static_files"]

_HERE = Path(__file__).resolve().parents[1]
STATIC_PATH = "/ui/static"
#: Arrays longer than this are plotted from the summary's buckets, not downloaded.
THRESHOLD_ELEMENTS = 1_000_000

_templates = Jinja2Templates(directory=_HERE / "templates")

#: The pages load scripts, styles, images and data from this server alone.
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)


def static_files() -> StaticFiles:
    """The UI's scripts, styles and vendored library, to mount at ``STATIC_PATH``."""
    return StaticFiles(directory=_HERE / "static")


def _page(request: Request, template: str, settings: Settings, **context: Any) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _templates.TemplateResponse(
        request,
        template,
        {
            "root": root,
            "base_url": str(request.base_url).rstrip("/"),
            "static": f"{root}{STATIC_PATH}",
            "max_json_bytes": settings.max_json_bytes,
            "threshold": THRESHOLD_ELEMENTS,
            **context,
        },
        headers=_SECURITY_HEADERS,
    )


@router.get("/")
async def stores_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    """The stores: list, filter, sort, upload, delete."""
    return _page(request, "stores.html", settings)


@router.get("/ui/stores/{name}")
async def store_page(request: Request, name: StoreName, settings: SettingsDep) -> HTMLResponse:
    """The keys of one store, grouped by prefix, with downloads and snippets."""
    return _page(request, "store.html", settings, name=name)


@router.get("/ui/stores/{name}/arrays/{key:anypath}")
async def array_page(
    request: Request, name: StoreName, key: str, settings: SettingsDep
) -> HTMLResponse:
    """One array: statistics, plot, histogram, and its values as text or rows."""
    return _page(request, "array.html", settings, name=name, key=key, quoted_key=quote_key(key))


answer_head(router)
