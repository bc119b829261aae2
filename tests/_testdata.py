"""Where the shared reference files are, and how tests name them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

__all__ = ["TESTDATA", "read_json", "shared_files", "shared_stems"]

#: Beside the project root, never inside it (see its README).
TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def shared_files(folder: str, suffix: str) -> list[Any]:
    """Names of the shared files in ``folder`` ending in ``suffix``, for parametrize.

    Without the shared folder there is one skipped case, so the report says why.
    """
    directory = TESTDATA / folder
    names = sorted(path.name for path in directory.glob(f"*{suffix}"))
    if not names:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {directory}"))]
    return names


def shared_stems(folder: str, suffix: str) -> list[Any]:
    """Like ``shared_files``, without the suffix."""
    return [
        name.removesuffix(suffix) if isinstance(name, str) else name
        for name in shared_files(folder, suffix)
    ]
