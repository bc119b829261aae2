"""Reading stores: the listing, one store, its keys, its arrays (raw and JSON), its file."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from ._support import (
    TestClient,
    arrays_of,
    error_of,
    read_json,
    sha256,
    shared_files,
    upload,
)

WRITTEN = shared_files("written-by-reference", ".kas")
TSKIT = shared_files("tskit", ".trees")


def _json_values(array: np.ndarray) -> list[Any]:
    """What the JSON answer must hold: the values, with NaN and ±inf as null."""
    if array.dtype.kind == "f":
        return [None if not math.isfinite(value) else value for value in array.tolist()]
    return list(array.tolist())


def _assert_json_array(body: dict[str, Any], key: str, array: np.ndarray) -> None:
    assert body["key"] == key
    assert body["dtype"] == str(array.dtype)
    assert body["length"] == len(array)
    data = body["data"]
    assert len(data) == len(array)
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        assert [value is None for value in data] == (~finite).tolist(), key
        got = np.array([0.0 if value is None else value for value in data], dtype=array.dtype)
        assert got[finite].tobytes() == array[finite].tobytes(), key  # -0.0 included
    else:
        assert data == array.tolist(), key  # exact, int64 and uint64 extremes included


# --- GET /stores ------------------------------------------------------------------


def test_empty_service_lists_no_stores(client: TestClient) -> None:
    answer = client.get("/stores")
    assert answer.status_code == 200
    assert answer.json() == {"stores": [], "total": 0, "offset": 0, "limit": 100, "next": None}


def test_listing_is_sorted_and_paginated(client: TestClient, unicode_file: Path) -> None:
    names = ["zeta", "Alpha", "beta", "10", "9", "b.2", "b-1", "b_3"]
    infos = {name: upload(client, unicode_file, name=name) for name in names}

    everything = client.get("/stores").json()
    assert [store["name"] for store in everything["stores"]] == sorted(names)
    assert everything["stores"] == [infos[name] for name in sorted(names)]
    assert (everything["total"], everything["next"]) == (len(names), None)

    seen, url, pages = [], "/stores?limit=3", 0
    while url is not None:
        page = client.get(url).json()
        assert page["total"] == len(names)
        assert page["limit"] == 3
        assert len(page["stores"]) <= 3
        seen += [store["name"] for store in page["stores"]]
        url, pages = page["next"], pages + 1
    assert seen == sorted(names)
    assert pages == 3

    middle = client.get("/stores", params={"offset": 2, "limit": 2}).json()
    assert [store["name"] for store in middle["stores"]] == sorted(names)[2:4]
    assert middle["offset"] == 2
    assert middle["next"] == "/stores?offset=4&limit=2"

    beyond = client.get("/stores", params={"offset": 50}).json()
    assert (beyond["stores"], beyond["total"], beyond["next"]) == ([], len(names), None)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "ten"}, "limit"),
    ],
)
def test_listing_with_bad_paging_is_422_naming_the_parameter(
    client: TestClient, params: dict[str, Any], field: str
) -> None:
    body = error_of(client.get("/stores", params=params), 422)
    assert body["error"] == "invalid_request"
    assert f"query.{field}" in body["detail"]


# --- GET /stores/{name} and /keys ---------------------------------------------------


def test_store_description_matches_the_upload(
    client: TestClient, tskit_store: dict[str, Any]
) -> None:
    answer = client.get("/stores/single_population")
    assert answer.status_code == 200
    assert answer.json() == tskit_store
    assert client.get("/stores").json()["stores"] == [tskit_store]


@pytest.mark.parametrize(
    ("folder", "filename"),
    [("written-by-reference", name) for name in WRITTEN] + [("tskit", name) for name in TSKIT],
)
def test_keys_list_every_array_in_file_order(
    reader: TestClient, library: dict[str, Path], folder: str, filename: str
) -> None:
    name = Path(filename).stem
    path = library[name]
    info = reader.get(f"/stores/{name}").json()
    listing = reader.get(info["keys_url"])
    assert listing.status_code == 200
    body = listing.json()
    assert (body["store"], body["sha256"]) == (name, sha256(path.read_bytes()))
    arrays = arrays_of(path)
    assert info["num_keys"] == len(arrays)
    assert [entry["key"] for entry in body["keys"]] == list(arrays)
    for entry, (key, array) in zip(body["keys"], arrays.items(), strict=True):
        assert entry == {
            "key": key,
            "dtype": str(array.dtype),
            "length": len(array),
            "size": array.nbytes,
            "url": f"/stores/{name}/arrays/{quote(key, safe='')}",
        }


# --- GET /stores/{name}/arrays/{key}, raw ------------------------------------------


@pytest.mark.parametrize("filename", TSKIT)
def test_every_tskit_array_downloads_raw_as_in_the_manifest(
    reader: TestClient, library: dict[str, Path], testdata: Path, filename: str
) -> None:
    name = Path(filename).stem
    manifest = read_json(testdata / "tskit" / "manifest.json")[filename]["keys"]
    arrays = arrays_of(library[name])
    listing = reader.get(f"/stores/{name}/keys").json()["keys"]
    assert {entry["key"] for entry in listing} == set(manifest)
    for entry in listing:
        key = entry["key"]
        answer = reader.get(entry["url"])
        assert answer.status_code == 200, answer.text
        assert sha256(answer.content) == manifest[key]["sha256"], key
        assert answer.content == arrays[key].tobytes(), key
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-length"] == str(len(answer.content))
        assert answer.headers["x-kastore-dtype"] == manifest[key]["dtype"]
        assert answer.headers["x-kastore-length"] == str(manifest[key]["length"])
        downloaded = np.frombuffer(answer.content, dtype=answer.headers["x-kastore-dtype"])
        assert len(downloaded) == manifest[key]["length"]


def test_raw_download_names_the_file(reader: TestClient, library: dict[str, Path]) -> None:
    edges = reader.get("/stores/unicode_keys/arrays/a/b/c")
    assert edges.headers["content-disposition"] == (
        "attachment; filename=\"a_b_c.uint64.bin\"; filename*=UTF-8''a_b_c.uint64.bin"
    )
    crab = reader.get("/stores/unicode_keys/arrays/" + quote("🦀 crab", safe=""))
    disposition = crab.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="')
    assert disposition.isascii()
    assert disposition.endswith("filename*=UTF-8''" + quote("🦀 crab.float64.bin", safe=""))


def test_array_etag_answers_304_when_unchanged(
    client: TestClient, tskit_store: dict[str, Any], tskit_file: Path
) -> None:
    url = "/stores/single_population/arrays/edges/left"
    first = client.get(url)
    etag = first.headers["etag"]
    assert re.fullmatch(r'"[^"]+"', etag), "a strong ETag"
    assert client.get(url).headers["etag"] == etag
    assert client.get("/stores/single_population/arrays/edges/right").headers["etag"] != etag

    unchanged = client.get(url, headers={"if-none-match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    assert unchanged.headers["etag"] == etag

    listed = client.get(url, headers={"if-none-match": f'"stale", {etag}'})
    assert listed.status_code == 304
    stale = client.get(url, headers={"if-none-match": '"stale"'})
    assert stale.status_code == 200
    assert stale.content == first.content

    # New content under the same name: the old ETag no longer matches.
    other = tskit_file.parent / "island_model_with_metadata.trees"
    assert client.put("/stores/single_population", content=other.read_bytes()).status_code == 200
    changed = client.get(url, headers={"if-none-match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.content == arrays_of(other)["edges/left"].tobytes()


@pytest.mark.parametrize(
    "condition", ["weak", "star"], ids=["W/ weak comparison", "* any representation"]
)
def test_array_if_none_match_follows_rfc_9110(
    reader: TestClient, library: dict[str, Path], condition: str
) -> None:
    """If-None-Match uses the weak comparison, and ``*`` matches any current representation.

    Proxies that compress (nginx with gzip) turn strong ETags into weak ones,
    so browsers behind them send ``W/"..."`` back.
    """
    url = "/stores/single_population/arrays/edges/left"
    etag = reader.get(url).headers["etag"]
    value = f"W/{etag}" if condition == "weak" else "*"
    assert reader.get(url, headers={"if-none-match": value}).status_code == 304


def test_raw_and_json_answers_have_different_etags(
    reader: TestClient, library: dict[str, Path]
) -> None:
    """A strong ETag names one representation: a cached raw body must not validate JSON."""
    url = "/stores/single_population/arrays/edges/left"
    raw = reader.get(url)
    as_json = reader.get(url, headers={"accept": "application/json"})
    assert raw.headers["etag"] != as_json.headers["etag"]
    revalidated = reader.get(
        url, headers={"accept": "application/json", "if-none-match": raw.headers["etag"]}
    )
    assert revalidated.status_code == 200
    assert revalidated.json()["key"] == "edges/left"


# --- GET /stores/{name}/arrays/{key}, JSON -----------------------------------------


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"format": "json"}, {}),
        ({}, {"accept": "application/json"}),
        ({}, {"accept": "text/html, application/json;q=0.9"}),
        ({"format": "json"}, {"accept": "application/octet-stream"}),
    ],
    ids=["format=json", "accept", "accept-list", "format-beats-accept"],
)
def test_json_answer_holds_the_values(
    reader: TestClient,
    library: dict[str, Path],
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    arrays = arrays_of(library["single_population"])
    for key in ["edges/left", "nodes/time", "nodes/flags", "format/name", "edges/metadata"]:
        url = f"/stores/single_population/arrays/{key}"
        answer = reader.get(url, params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-kastore-dtype"] == str(arrays[key].dtype)
        _assert_json_array(answer.json(), key, arrays[key])


@pytest.mark.parametrize(
    ("params", "headers"),
    [({}, {}), ({}, {"accept": "*/*"}), ({"format": "raw"}, {"accept": "application/json"})],
    ids=["default", "accept-any", "format-raw-beats-accept"],
)
def test_raw_is_the_default(
    reader: TestClient,
    library: dict[str, Path],
    params: dict[str, str],
    headers: dict[str, str],
) -> None:
    answer = reader.get(
        "/stores/single_population/arrays/edges/left", params=params, headers=headers
    )
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.content == arrays_of(library["single_population"])["edges/left"].tobytes()


def test_unknown_format_is_422(reader: TestClient, library: dict[str, Path]) -> None:
    answer = reader.get("/stores/single_population/arrays/edges/left", params={"format": "xml"})
    assert "query.format" in error_of(answer, 422)["detail"]


def test_json_writes_nan_and_infinities_as_null(
    reader: TestClient, library: dict[str, Path]
) -> None:
    for key, array in arrays_of(library["extremes"]).items():
        answer = reader.get(f"/stores/extremes/arrays/{key}", params={"format": "json"})
        assert answer.status_code == 200, answer.text
        _assert_json_array(answer.json(), key, array)
    floats = reader.get("/stores/extremes/arrays/extremes_float64?format=json").json()["data"]
    assert floats[3:6] == [None, None, None]
    assert math.copysign(1.0, floats[6]) == -1.0, "-0.0 keeps its sign"
    ints = reader.get("/stores/extremes/arrays/extremes_uint64?format=json").json()["data"]
    assert ints == [0, 2**64 - 1, 0]


@pytest.mark.parametrize("key", ["floats", "ints", "bytes"])
def test_large_array_is_streamed_as_json(
    reader: TestClient, library: dict[str, Path], key: str
) -> None:
    array = arrays_of(library["big"])[key]
    assert len(array) > 1 << 16
    with reader.stream("GET", f"/stores/big/arrays/{key}?format=json") as answer:
        assert answer.status_code == 200
        assert "content-length" not in answer.headers, "streamed, not built whole"
        pieces = list(answer.iter_raw())
    assert len(pieces) > 1
    _assert_json_array(json.loads(b"".join(pieces)), key, array)


def test_large_array_downloads_raw(reader: TestClient, library: dict[str, Path]) -> None:
    for key, array in arrays_of(library["big"]).items():
        answer = reader.get(f"/stores/big/arrays/{key}")
        assert answer.headers["content-length"] == str(array.nbytes)
        assert answer.content == array.tobytes(), key


def test_json_over_the_limit_is_413_pointing_to_the_raw_url(
    make_client: Any, tskit_file: Path
) -> None:
    client = make_client(max_json_bytes=5824)
    upload(client, tskit_file, name="sim")
    arrays = arrays_of(tskit_file)
    assert arrays["edges/child"].nbytes == 5824, "exactly the limit"
    assert client.get("/stores/sim/arrays/edges/child?format=json").status_code == 200

    too_big = "edges/left"
    assert arrays[too_big].nbytes == 11_648
    answer = client.get(
        f"/stores/sim/arrays/{quote(too_big, safe='')}", headers={"accept": "application/json"}
    )
    body = error_of(answer, 413)
    assert body["error"] == "json_too_large"
    assert str(arrays[too_big].nbytes) in body["detail"]
    assert "5824" in body["detail"]
    assert "KASTORE_MAX_JSON_BYTES" in body["detail"]
    raw_url = re.search(r"GET (/\S+)", body["detail"])
    assert raw_url is not None, body["detail"]
    raw = client.get(raw_url.group(1))
    assert raw.status_code == 200
    assert raw.content == arrays[too_big].tobytes()


# --- unknown stores and keys ------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/stores/nowhere"),
        ("GET", "/stores/nowhere/keys"),
        ("GET", "/stores/nowhere/file"),
        ("GET", "/stores/nowhere/arrays/edges/left"),
        ("DELETE", "/stores/nowhere"),
    ],
)
def test_unknown_store_is_404_naming_it(client: TestClient, method: str, path: str) -> None:
    body = error_of(client.request(method, path), 404)
    assert body["error"] == "store_not_found"
    assert "'nowhere'" in body["detail"]
    assert "GET /stores" in body["detail"]


@pytest.mark.parametrize("key", ["nokey", "edges", "edges/left/", "Edges/Left", "日本語 ?#"])
def test_unknown_key_is_404_naming_it(
    reader: TestClient, library: dict[str, Path], key: str
) -> None:
    answer = reader.get(f"/stores/single_population/arrays/{quote(key, safe='')}")
    body = error_of(answer, 404)
    assert body["error"] == "key_not_found"
    assert repr(key) in body["detail"]
    assert "GET /stores/single_population/keys" in body["detail"]


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    assert error_of(client.get("/nothing/here"), 404)["error"] == "not_found"


# --- GET /stores/{name}/file --------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "filename"),
    [("tskit", name) for name in TSKIT]
    + [("written-by-reference", "empty.kas"), ("written-by-reference", "mixed_sizes.kas")]
    + [("generated", "big.kas")],
)
def test_file_downloads_byte_for_byte(
    reader: TestClient, library: dict[str, Path], folder: str, filename: str
) -> None:
    name = Path(filename).stem
    content = library[name].read_bytes()
    answer = reader.get(f"/stores/{name}/file")
    assert answer.status_code == 200
    assert answer.content == content
    assert answer.headers["content-length"] == str(len(content))
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["etag"] == f'"{sha256(content)}"'
    # The file keeps the extension it was uploaded with (sim.trees stays sim.trees).
    assert f'filename="{filename}"' in answer.headers["content-disposition"]


# --- DELETE /stores/{name} ----------------------------------------------------------


@pytest.mark.local_storage  # looks at the data directory's files
def test_delete_then_everything_of_the_store_is_404(
    client: TestClient, data_dir: Path, tskit_store: dict[str, Any]
) -> None:
    blob = f"{tskit_store['sha256']}.kas"
    assert [path.name for path in (data_dir / "blobs").rglob("*.kas")] == [blob]
    answer = client.delete("/stores/single_population")
    assert answer.status_code == 204
    assert answer.content == b""
    for path in [
        "/stores/single_population",
        "/stores/single_population/keys",
        "/stores/single_population/file",
        "/stores/single_population/arrays/edges/left",
        "/stores/single_population/arrays/edges%2Fleft",
    ]:
        assert error_of(client.get(path), 404)["error"] == "store_not_found", path
    assert error_of(client.delete("/stores/single_population"), 404)["error"] == "store_not_found"
    assert client.get("/stores").json()["total"] == 0
    assert not list((data_dir / "blobs").rglob("*.kas")), "the file is removed from disk"


def test_delete_leaves_other_stores(
    client: TestClient, tskit_store: dict[str, Any], unicode_file: Path
) -> None:
    other = upload(client, unicode_file, name="other")
    assert client.delete("/stores/single_population").status_code == 204
    assert client.get("/stores").json()["stores"] == [other]
    assert client.get("/stores/other/arrays/a/b/c").status_code == 200
