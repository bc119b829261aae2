"""Fixtures shared by the codec and service tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ._postgres import PostgresMissingError, find_bin_dir, fresh_database, postgres_server
from ._s3 import create_bucket, s3_credentials, s3_server
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


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto, in a subprocess) for the session: its URL.

    Started on first use only; clients get its credentials from ``s3_blob_url``.
    """
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_blob_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://BUCKET/prefix`` in a new bucket, with the AWS_* variables set for this test."""
    for name, value in s3_credentials(s3_endpoint).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return f"s3://{create_bucket(s3_endpoint)}/prefix"
