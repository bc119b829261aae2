"""Byte ranges on raw downloads: resumable files and partial arrays (RFC 9110)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._support import TestClient, arrays_of, error_of

FILE = "/stores/single_population/file"
ARRAY = "/stores/single_population/arrays/edges/left"


@pytest.fixture(scope="module")
def content(library: dict[str, Path]) -> bytes:
    return library["single_population"].read_bytes()


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-99", 0, 99),
        ("bytes=100-", 100, None),
        ("bytes=-50", -50, None),
        ("bytes=1000-99999999", 1000, None),
        ("bytes=-99999999", 0, None),
        ("bytes=7-7", 7, 7),
    ],
)
def test_a_range_of_the_file_is_206_with_those_bytes(
    reader: TestClient, content: bytes, header: str, first: int, last: int | None
) -> None:
    answer = reader.get(FILE, headers={"range": header})
    expected = content[first:] if last is None else content[first : last + 1]
    assert answer.status_code == 206
    assert answer.content == expected
    assert answer.headers["content-length"] == str(len(expected))
    start = first if first >= 0 else len(content) + first
    end = start + len(expected) - 1
    assert answer.headers["content-range"] == f"bytes {start}-{end}/{len(content)}"


def test_downloads_announce_ranges(reader: TestClient, library: dict[str, Path]) -> None:
    assert reader.get(FILE).headers["accept-ranges"] == "bytes"
    assert reader.get(ARRAY).headers["accept-ranges"] == "bytes"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-9", "bytes=9-2", "bytes=-", "x"])
def test_a_range_that_is_not_one_plain_span_gets_the_whole_file(
    reader: TestClient, content: bytes, header: str
) -> None:
    answer = reader.get(FILE, headers={"range": header})
    assert answer.status_code == 200
    assert answer.content == content


@pytest.mark.parametrize("header", ["bytes=99999999-", "bytes=-0"])
def test_a_range_beyond_the_end_is_416_saying_the_size(
    reader: TestClient, content: bytes, header: str
) -> None:
    answer = reader.get(FILE, headers={"range": header})
    body = error_of(answer, 416)
    assert body["error"] == "range_not_satisfiable"
    assert str(len(content)) in body["detail"]
    assert answer.headers["content-range"] == f"bytes */{len(content)}"


def test_if_range_resumes_only_the_same_version(reader: TestClient, content: bytes) -> None:
    etag = reader.head(FILE).headers["etag"]
    same = reader.get(FILE, headers={"range": "bytes=10-", "if-range": etag})
    assert (same.status_code, same.content) == (206, content[10:])
    other = reader.get(FILE, headers={"range": "bytes=10-", "if-range": '"something-else"'})
    assert (other.status_code, other.content) == (200, content)


def test_a_range_of_an_array_gives_those_bytes(
    reader: TestClient, library: dict[str, Path]
) -> None:
    data = arrays_of(library["single_population"])["edges/left"].tobytes()
    answer = reader.get(ARRAY, headers={"range": "bytes=8-23"})
    assert answer.status_code == 206
    assert answer.content == data[8:24]
    assert answer.headers["content-range"] == f"bytes 8-23/{len(data)}"
