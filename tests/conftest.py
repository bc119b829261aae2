"""Fixtures shared by the codec and service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._postgres import PostgresMissingError, find_bin_dir, fresh_database, postgres_server
from ._testdata import TESTDATA


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared test data folder; tests that need it skip when it is absent."""
    if not TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server started for this session, on first use: its superuser's URL."""
    missing = None
    try:
        find_bin_dir()
    except PostgresMissingError as err:
        missing = str(err)
    if missing is not None:  # outside the except: one message, no chained traceback
        pytest.fail(missing, pytrace=False)
    with postgres_server() as url:
        yield url


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """The URL of a new, empty database for this test alone, dropped after it."""
    with fresh_database(postgres_url) as url:
        yield url
