"""Fixtures of the service tests: an app per test on its own data directory."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from app.main import create_app
from tests._s3 import bucket_contents

from ._support import (
    TestClient,
    service_settings,
    test_client,
    upload,
    write_big,
    write_tricky,
)
from ._support import leftovers as local_leftovers


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: starts the real server in a subprocess (deselect with -m 'not e2e')"
    )
    config.addinivalue_line(
        "markers", "local_storage: looks at the data directory's files; not run on S3 storage"
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


ClientFactory = Callable[..., TestClient]


#: The storage configurations every app-level test runs against.
STORAGES = ["local", "s3+postgres"]


@pytest.fixture(params=STORAGES)
def storage_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings of the storage under test: the data directory (local folder and SQLite),
    or a fresh bucket of a real S3 server and a fresh PostgreSQL database."""
    if request.param == "local":
        return {}
    return {
        "blob_url": request.getfixturevalue("s3_blob_url"),
        "s3_endpoint_url": request.getfixturevalue("s3_endpoint"),
        "index_url": request.getfixturevalue("postgres_db_url"),
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``local_storage`` (they look at the data directory's files) run on it alone."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        remote = (
            callspec is not None and callspec.params.get("storage_settings", "local") != "local"
        )
        (dropped if remote and item.get_closest_marker("local_storage") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


#: The files (or objects) under the storage's temporary and blob folders.
Leftovers = Callable[[], list[PurePosixPath]]


@pytest.fixture
def leftovers(data_dir: Path, storage_settings: dict[str, Any]) -> Leftovers:
    """What the storage holds besides its index: staged uploads and blobs, sorted.

    A refused upload leaves none; a stored file leaves exactly its blob.
    """
    blob_url = storage_settings.get("blob_url")
    if blob_url is None:
        return lambda: [PurePosixPath(path) for path in local_leftovers(data_dir)]
    bucket, _, prefix = blob_url.removeprefix("s3://").partition("/")
    endpoint = storage_settings["s3_endpoint_url"]

    def remote() -> list[PurePosixPath]:
        contents = bucket_contents(endpoint, bucket, prefix)
        return sorted(PurePosixPath(key) for key in [*contents.objects, *contents.uploads])

    return remote


@pytest.fixture
def make_client(data_dir: Path, storage_settings: dict[str, Any]) -> Iterator[ClientFactory]:
    """``make_client(**settings)``: a started client of a new app on ``data_dir``, or on
    the S3 and PostgreSQL storage of ``storage_settings``.

    Every client made is shut down (lifespan and all) when the test ends.
    """
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            app = create_app(service_settings(data_dir, **{**storage_settings, **overrides}))
            return stack.enter_context(test_client(app))

        yield make


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


@pytest.fixture
def tskit_file(testdata: Path) -> Path:
    return testdata / "tskit" / "single_population.trees"


@pytest.fixture
def tskit_store(client: TestClient, tskit_file: Path) -> dict[str, Any]:
    """``single_population.trees`` uploaded as the store ``single_population``."""
    return upload(client, tskit_file)


@pytest.fixture
def unicode_file(testdata: Path) -> Path:
    return testdata / "written-by-reference" / "unicode_keys.kas"


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    return write_big(tmp_path / "big.kas")


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One client for a module's read-only tests: they must not change its stores."""
    app = create_app(service_settings(tmp_path_factory.mktemp("reader")))
    with test_client(app) as client:
        yield client


@pytest.fixture(scope="module")
def library(
    reader: TestClient, testdata: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Files stored in ``reader``, by store name (the file's stem).

    Every shared tskit and written-by-reference file, ``big`` (see ``write_big``)
    and ``tricky`` (``TRICKY_KEYS``).
    """
    generated = tmp_path_factory.mktemp("generated")
    trees = sorted((testdata / "tskit").glob("*.trees"))
    written = sorted((testdata / "written-by-reference").glob("*.kas"))
    assert trees and written, f"no .trees or .kas files under {testdata}"
    paths = [
        *trees,
        *written,
        write_big(generated / "big.kas"),
        write_tricky(generated / "tricky.kas"),
    ]
    for path in paths:
        upload(reader, path)
    return {path.stem: path for path in paths}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, for a module's browser tests."""
    from ._browser import chromium

    with chromium() as launched:
        yield launched
