"""kastore.remote and load(url) against the app with API keys: the key is what lets them in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import kastore
import kastore.remote as remote
from app.security import hash_key
from kastore._http import HTTPFile

from .conftest import Live, serving

WRITER, READER = "writer-key-0123456789", "reader-key-0123456789"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Keys required for reads and writes: one that writes, one that only reads."""
    keys = f"{hash_key(WRITER)} write\n{hash_key(READER)} read\n"
    with serving(tmp_path_factory.mktemp("keyed"), api_keys=keys, public_read=False) as live:
        yield live


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.kas"
    kastore.dump({"a": np.arange(10, dtype=np.int16)}, path)
    return path


def test_a_key_that_writes_does_everything(keyed: Live, small: Path) -> None:
    with remote.connect(keyed.url, WRITER) as service:
        info = service.upload(small, "keyed", progress=False)
        assert np.asarray(service["keyed"]["a"]).tolist() == list(range(10))
        assert [store.name for store in service.stores()] == ["keyed"]
        service.delete(info.name)


def test_without_a_key_nothing_is_let_in(
    keyed: Live, small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KASTORE_API_KEY", raising=False)
    with remote.connect(keyed.url) as service:
        with pytest.raises(remote.AuthenticationError) as reading:
            service.stores()
        assert reading.value.status == 401 and reading.value.error == "missing_api_key"
        with pytest.raises(remote.AuthenticationError):
            service.upload(small, progress=False)


def test_an_unknown_key_is_refused(keyed: Live) -> None:
    with (
        remote.connect(keyed.url, "not-a-key") as service,
        pytest.raises(remote.AuthenticationError) as err,
    ):
        service.stores()
    assert err.value.error == "invalid_api_key"


def test_a_key_that_reads_cannot_write(keyed: Live, small: Path) -> None:
    with remote.connect(keyed.url, READER) as service:
        assert isinstance(service.stores(), list)
        with pytest.raises(remote.PermissionDeniedError) as err:
            service.upload(small, progress=False)
    assert err.value.status == 403 and err.value.error == "insufficient_scope"


def test_the_key_comes_from_the_environment(
    keyed: Live, small: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KASTORE_URL", keyed.url)
    monkeypatch.setenv("KASTORE_API_KEY", WRITER)
    with remote.connect() as service:
        service.replace(small, "from-env", progress=False)
        service.delete("from-env")


def test_load_of_a_url_that_needs_a_key(keyed: Live, small: Path) -> None:
    with remote.connect(keyed.url, WRITER) as service:
        url = f"{service.upload(small, 'by-url', progress=False).url}/file"
    with pytest.raises(PermissionError, match="401"):
        kastore.load(url)
    with HTTPFile(url, headers={"Authorization": f"Bearer {READER}"}) as file:
        assert kastore.load(file)["a"].tolist() == list(range(10))
    with remote.connect(keyed.url, WRITER) as service:
        service.delete("by-url")


def test_the_service_loads_a_whole_file_lazily_with_its_key(keyed: Live, small: Path) -> None:
    with remote.connect(keyed.url, WRITER) as service:
        service.upload(small, "lazy", progress=False)
        keyed.clear()
        store = service.load("lazy")
        assert store["a"].tolist() == list(range(10))
        assert [seen.headers.get("range", "")[:6] for seen in keyed.seen] == ["bytes="]
        assert keyed.seen[0].headers["authorization"] == f"Bearer {WRITER}"
        with pytest.raises(remote.StoreNotFoundError) as err:
            service.load("no-such-store")
        assert err.value.error == "store_not_found" and err.value.status == 404
        service.delete("lazy")
