"""Fixtures shared by the codec and service tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

#: The shared reference files live beside the project root, never inside it.
TESTDATA = Path(__file__).resolve().parents[1].parent / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared test data folder; tests that need it skip when it is absent."""
    if not TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))
