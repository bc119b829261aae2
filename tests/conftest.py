"""Fixtures shared by the codec and service tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._testdata import TESTDATA


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared test data folder; tests that need it skip when it is absent."""
    if not TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA
