"""Parts of an array (``?start=&stop=``), and ``HEAD`` for the headers alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._support import TestClient, arrays_of, error_of, upload
from .conftest import ClientFactory

URL = "/stores/single_population/arrays/edges/left"


@pytest.mark.parametrize(
    ("start", "stop"),
    [(0, 10), (10, 20), (1450, None), (None, 3), (5, 5), (1400, 99_999), (99_999, None), (7, 2)],
)
def test_a_slice_gives_those_elements_raw_and_as_json(
    reader: TestClient, library: dict[str, Path], start: int | None, stop: int | None
) -> None:
    whole = arrays_of(library["single_population"])["edges/left"]
    expected = whole[start:stop]
    params = {k: v for k, v in {"start": start, "stop": stop}.items() if v is not None}

    raw = reader.get(URL, params=params)
    assert raw.status_code == 200
    assert raw.content == expected.tobytes()
    assert raw.headers["x-kastore-length"] == str(len(expected))
    assert raw.headers["x-kastore-total-length"] == str(len(whole))

    as_json = reader.get(URL, params={**params, "format": "json"}).json()
    assert as_json["length"] == len(expected)
    assert as_json["data"] == expected.tolist()


def test_each_slice_has_its_own_etag(reader: TestClient, library: dict[str, Path]) -> None:
    tags = {
        reader.get(URL, params=params).headers["etag"]
        for params in ({}, {"start": 0, "stop": 10}, {"start": 10, "stop": 20}, {"start": 10})
    }
    assert len(tags) == 4
    first = reader.get(URL, params={"start": 0, "stop": 10})
    again = reader.get(
        URL, params={"start": 0, "stop": 10}, headers={"if-none-match": first.headers["etag"]}
    )
    assert again.status_code == 304


@pytest.mark.parametrize("params", [{"start": -1}, {"stop": -5}, {"start": "x"}])
def test_a_bad_slice_is_422_naming_the_parameter(
    reader: TestClient, library: dict[str, Path], params: dict[str, object]
) -> None:
    body = error_of(reader.get(URL, params=params), 422)
    assert body["error"] == "invalid_request"
    assert next(iter(params)) in body["detail"]


def test_json_too_large_can_be_read_in_the_slices_the_message_offers(
    make_client: ClientFactory, tskit_file: Path
) -> None:
    client = make_client(max_json_bytes=4096)
    upload(client, tskit_file, name="sim")
    whole = arrays_of(tskit_file)["edges/left"]
    detail = error_of(client.get("/stores/sim/arrays/edges/left?format=json"), 413)["detail"]
    assert "at most 512 elements" in detail
    data: list[float] = []
    for start in range(0, len(whole), 512):
        answer = client.get(
            "/stores/sim/arrays/edges/left",
            params={"format": "json", "start": start, "stop": start + 512},
        )
        assert answer.status_code == 200
        data += answer.json()["data"]
    assert data == whole.tolist()


@pytest.mark.parametrize("path", [URL, f"{URL}?format=json", "/stores/single_population/file"])
def test_head_gives_the_headers_of_get_without_a_body(
    reader: TestClient, library: dict[str, Path], path: str
) -> None:
    got = reader.get(path)
    head = reader.head(path)
    assert head.status_code == 200
    assert head.content == b""
    for header in ("etag", "content-type", "x-kastore-dtype", "x-kastore-length"):
        assert head.headers.get(header) == got.headers.get(header)
    if "content-length" in got.headers:
        assert head.headers["content-length"] == str(len(got.content))


@pytest.mark.parametrize(
    "params", [{"start": 5000}, {"start": 99_999, "stop": 100_000}, {"start": 7, "stop": 2}]
)
def test_a_slice_past_the_end_or_reversed_is_empty_in_both_forms(
    reader: TestClient, library: dict[str, Path], params: dict[str, int]
) -> None:
    """Clipped like a Python slice, never an error; same answer raw and as JSON."""
    raw = reader.get(URL, params=params)
    assert (raw.status_code, raw.content) == (200, b"")
    assert raw.headers["x-kastore-length"] == "0"
    as_json = reader.get(URL, params={**params, "format": "json"})
    assert as_json.status_code == 200
    assert as_json.json()["data"] == []
    assert as_json.headers["x-kastore-length"] == "0"


def test_slices_that_clip_to_the_same_elements_share_an_etag(
    reader: TestClient, library: dict[str, Path]
) -> None:
    def etag(**params: int) -> str:
        return reader.get(URL, params=params).headers["etag"]

    assert etag(start=10, stop=99_999) == etag(start=10)
    assert etag(start=5000) == etag(start=99_999, stop=100_000)
    assert etag(start=7, stop=2) == etag(start=7, stop=7)


def test_the_docs_say_how_slices_are_clipped(reader: TestClient) -> None:
    document = reader.get("/openapi.json").json()
    description = document["paths"]["/stores/{name}/arrays/{key}"]["get"]["description"]
    assert "clipped" in description
    assert "empty array (200)" in description
