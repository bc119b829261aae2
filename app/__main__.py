"""``python -m app``: run the service with uvicorn, configured by ``KASTORE_*``."""

from __future__ import annotations

import uvicorn

from .config import get_settings
from .server import raise_open_files_limit, uvicorn_options


def main() -> None:
    settings = get_settings()
    raise_open_files_limit()
    uvicorn.run("app.main:create_app", factory=True, **uvicorn_options(settings))


if __name__ == "__main__":
    main()
