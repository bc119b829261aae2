"""Keys holding any character reach their array through a URL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest

from ._support import TESTDATA, TRICKY_KEYS, TestClient, arrays_of

UNICODE_KEYS = sorted(
    arrays_of(TESTDATA / "written-by-reference" / "unicode_keys.kas")
    if (TESTDATA / "written-by-reference").is_dir()
    else []
)

#: How a client may write a key into the path.
ENCODINGS: dict[str, Callable[[str], str]] = {
    "all encoded": lambda key: quote(key, safe=""),
    "slash kept": lambda key: quote(key, safe="/"),
}


@pytest.fixture(scope="module")
def unicode_arrays(library: dict[str, Path]) -> dict[str, np.ndarray]:
    return arrays_of(library["unicode_keys"])


@pytest.fixture(scope="module")
def unicode_listing(reader: TestClient, library: dict[str, Path]) -> dict[str, str]:
    """Key to listed URL, for the store ``unicode_keys``."""
    answer = reader.get("/stores/unicode_keys/keys")
    return {entry["key"]: entry["url"] for entry in answer.json()["keys"]}


def test_unicode_keys_are_all_listed(
    unicode_listing: dict[str, str], unicode_arrays: dict[str, np.ndarray]
) -> None:
    assert list(unicode_listing) == list(unicode_arrays)
    assert sorted(unicode_listing) == UNICODE_KEYS
    assert all(url.isascii() for url in unicode_listing.values())


@pytest.mark.parametrize("key", UNICODE_KEYS)
def test_unicode_key_through_its_listed_url(
    reader: TestClient,
    unicode_listing: dict[str, str],
    unicode_arrays: dict[str, np.ndarray],
    key: str,
) -> None:
    raw = reader.get(unicode_listing[key])
    assert raw.status_code == 200, raw.text
    assert raw.content == unicode_arrays[key].tobytes()
    as_json = reader.get(unicode_listing[key], params={"format": "json"})
    assert as_json.json()["key"] == key
    assert as_json.json()["data"] == unicode_arrays[key].tolist()


@pytest.mark.parametrize("encoding", list(ENCODINGS))
@pytest.mark.parametrize("key", UNICODE_KEYS)
def test_unicode_key_through_a_url_written_by_hand(
    reader: TestClient, unicode_arrays: dict[str, np.ndarray], key: str, encoding: str
) -> None:
    answer = reader.get("/stores/unicode_keys/arrays/" + ENCODINGS[encoding](key))
    assert answer.status_code == 200, answer.text
    assert answer.content == unicode_arrays[key].tobytes()
    assert answer.headers["x-kastore-length"] == str(len(unicode_arrays[key]))


def test_unknown_unicode_key_is_404_naming_it(reader: TestClient, library: dict[str, Path]) -> None:
    answer = reader.get("/stores/unicode_keys/arrays/" + quote("🦀 lobster", safe=""))
    assert answer.status_code == 404
    assert "'🦀 lobster'" in answer.json()["detail"]


@pytest.mark.parametrize("key", TRICKY_KEYS, ids=ascii)
def test_tricky_key_through_its_listed_url(
    reader: TestClient, library: dict[str, Path], key: str
) -> None:
    listing = reader.get("/stores/tricky/keys").json()["keys"]
    assert [entry["key"] for entry in listing] == sorted(TRICKY_KEYS)
    (url,) = [entry["url"] for entry in listing if entry["key"] == key]
    answer = reader.get(url)
    assert answer.status_code == 200, (url, answer.text)
    expected = np.arange(TRICKY_KEYS.index(key) + 1, dtype=np.int16)
    assert answer.content == expected.tobytes()
