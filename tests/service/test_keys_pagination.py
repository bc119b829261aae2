"""The key listing: pages, next links, and a cache kept by content within its limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

import kastore
from app.main import create_app
from app.storage import Storage
from kastore._format import ITEM_DESCRIPTOR

from ._support import (
    TRICKY_KEYS,
    TestClient,
    error_of,
    service_settings,
    upload,
    write_unsorted,
)
from .conftest import ClientFactory

NUM_KEYS = 2500
DTYPES = ["int8", "uint16", "float64", "int32"]


def _many_keys(path: Path, n: int = NUM_KEYS) -> Path:
    kastore.dump(
        {f"k{i:05d}": np.arange(i % 7, dtype=DTYPES[i % len(DTYPES)]) for i in range(n)}, path
    )
    return path


def _expected(path: Path, name: str, root: str = "") -> list[dict[str, Any]]:
    with kastore.load(path) as store:
        return [
            {
                "key": key,
                "dtype": str(store[key].dtype),
                "length": len(store[key]),
                "size": store[key].nbytes,
                "url": f"{root}/stores/{name}/arrays/{quote(key, safe='')}",
            }
            for key in store
        ]


def _storage(client: TestClient) -> Storage:
    storage: Storage = client.app.state.storage  # type: ignore[attr-defined]
    return storage


def _walk(client: TestClient, url: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Follow ``next`` links from ``url``; return the keys and the pages."""
    keys: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url is not None:
        answer = client.get(next_url)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages.append(page)
        keys += page["keys"]
        next_url = page["next"]
        assert len(pages) <= NUM_KEYS, "the next links go round in circles"
    return keys, pages


def test_next_links_walk_every_key_once_in_file_order(client: TestClient, tmp_path: Path) -> None:
    path = _many_keys(tmp_path / "many.kas")
    info = upload(client, path)
    keys, pages = _walk(client, info["keys_url"])
    assert keys == _expected(path, "many")
    assert [len(page["keys"]) for page in pages] == [1000, 1000, 500]
    assert [page["offset"] for page in pages] == [0, 1000, 2000]
    assert {(page["store"], page["sha256"], page["total"], page["limit"]) for page in pages} == {
        ("many", info["sha256"], NUM_KEYS, 1000)
    }
    assert pages[0]["next"] == "/stores/many/keys?offset=1000&limit=1000"
    assert pages[-1]["next"] is None


@pytest.mark.parametrize(("offset", "limit"), [(0, 1), (7, 333), (2499, 10), (0, 10_000)])
def test_any_page_is_the_slice_of_the_keys(
    client: TestClient, tmp_path: Path, offset: int, limit: int
) -> None:
    path = _many_keys(tmp_path / "many.kas")
    upload(client, path)
    page = client.get("/stores/many/keys", params={"offset": offset, "limit": limit}).json()
    assert page["keys"] == _expected(path, "many")[offset : offset + limit]
    more = offset + limit < NUM_KEYS
    assert page["next"] == (
        f"/stores/many/keys?offset={offset + limit}&limit={limit}" if more else None
    )


def test_a_page_past_the_end_is_empty(client: TestClient, tskit_store: dict[str, Any]) -> None:
    page = client.get(tskit_store["keys_url"], params={"offset": 10**12}).json()
    assert (page["keys"], page["next"]) == ([], None)
    assert page["total"] == tskit_store["num_keys"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 10_001}, {"offset": -1}])
def test_page_bounds_are_checked(
    client: TestClient, tskit_store: dict[str, Any], params: dict[str, int]
) -> None:
    answer = client.get(tskit_store["keys_url"], params=params)
    assert error_of(answer, 422)["error"] == "invalid_request"


def test_urls_and_next_links_carry_the_root_path(
    make_client: ClientFactory, data_dir: Path, tmp_path: Path
) -> None:
    path = _many_keys(tmp_path / "many.kas")
    with TestClient(create_app(service_settings(data_dir)), root_path="/kastore") as client:
        upload(client, path)
        page = client.get("/stores/many/keys").json()
    assert page["keys"] == _expected(path, "many", root="/kastore")[:1000]
    assert page["next"] == "/kastore/stores/many/keys?offset=1000&limit=1000"


def test_names_sharing_content_share_one_parsed_copy(client: TestClient, tmp_path: Path) -> None:
    path = _many_keys(tmp_path / "many.kas")
    upload(client, path, name="first")
    first = client.get("/stores/first/keys").json()
    held = _storage(client).cached_bytes
    assert held > NUM_KEYS * ITEM_DESCRIPTOR.itemsize  # the descriptors, and the page
    for name in ["second", "third"]:
        upload(client, path, name=name)
        page = client.get(f"/stores/{name}/keys").json()
        assert page["keys"] == _expected(path, name)[:1000]
        assert page["store"] == name
    assert _storage(client).cached_bytes == held
    assert client.delete("/stores/first").status_code == 204
    assert client.get("/stores/second/keys").json()["keys"][5]["key"] == first["keys"][5]["key"]


def test_the_cache_stays_within_its_limit(make_client: ClientFactory, tmp_path: Path) -> None:
    limit = 600_000
    client = make_client(cache_bytes=limit)
    for i in range(6):
        path = _many_keys(tmp_path / f"s{i}.kas", n=NUM_KEYS + i)
        upload(client, path)
        keys, _ = _walk(client, f"/stores/s{i}/keys")
        assert len(keys) == NUM_KEYS + i
        assert 0 < _storage(client).cached_bytes <= limit
    # Evicted stores are parsed again when asked for.
    assert (
        client.get("/stores/s0/keys").json()["keys"] == _expected(tmp_path / "s0.kas", "s0")[:1000]
    )


def test_keys_of_a_file_that_does_not_sort_them_are_found(
    client: TestClient, tmp_path: Path
) -> None:
    keys = ["zeta", "alpha", "mid/dle", *reversed(TRICKY_KEYS), "Alpha", ""]
    path = write_unsorted(tmp_path / "unsorted.kas", keys)
    with kastore.load(path) as store:
        assert list(store) == keys  # the codec takes it, in this order
    upload(client, path)
    listing = client.get("/stores/unsorted/keys").json()["keys"]
    assert [entry["key"] for entry in listing] == keys
    for i, entry in enumerate(listing):
        answer = client.get(entry["url"])
        assert answer.status_code == 200, (entry, answer.text)
        assert answer.content == np.arange(i + 1, dtype=np.int32).tobytes(), entry
    assert client.get("/stores/unsorted/arrays/beta").status_code == 404


def test_a_store_keeps_pages_up_to_the_size_of_its_descriptors(
    client: TestClient, tmp_path: Path
) -> None:
    """However many pages are asked for, a store holds at most twice its descriptors."""
    n = 40_000
    path = _many_keys(tmp_path / "wide.kas", n=n)
    upload(client, path)
    walked = 0
    for offset in range(0, n, 100):
        page = client.get("/stores/wide/keys", params={"offset": offset, "limit": 100}).json()
        walked += len(page["keys"])
    assert walked == n
    descriptors = n * ITEM_DESCRIPTOR.itemsize
    held = _storage(client).cached_bytes
    assert descriptors < held <= 2 * descriptors + n * len("k00000")
