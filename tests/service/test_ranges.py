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


# --- If-None-Match, on every raw route ------------------------------------------------


@pytest.mark.parametrize("path", [FILE, ARRAY, f"{ARRAY}?start=3&stop=9", f"{ARRAY}?format=json"])
def test_if_none_match_with_the_etag_is_304_without_a_body(
    reader: TestClient, library: dict[str, Path], path: str
) -> None:
    etag = reader.get(path).headers["etag"]
    for if_none_match in [etag, f'"other", W/{etag}', "*"]:
        answer = reader.get(path, headers={"if-none-match": if_none_match})
        assert answer.status_code == 304, if_none_match
        assert answer.content == b""
        assert answer.headers["etag"] == etag
    changed = reader.get(path, headers={"if-none-match": '"other"'})
    assert changed.status_code == 200


def test_if_none_match_comes_before_range(reader: TestClient) -> None:
    etag = reader.get(FILE).headers["etag"]
    answer = reader.get(FILE, headers={"if-none-match": etag, "range": "bytes=0-9"})
    assert answer.status_code == 304


# --- numbers longer than any position -------------------------------------------------

LONG = "9" * 5000


def test_a_first_byte_thousands_of_digits_long_is_416(reader: TestClient, content: bytes) -> None:
    answer = reader.get(FILE, headers={"range": f"bytes={LONG}-"})
    body = error_of(answer, 416)
    assert answer.headers["content-range"] == f"bytes */{len(content)}"
    assert len(body["detail"]) < 300, "the header is not echoed whole"


@pytest.mark.parametrize(
    ("header", "expected_status", "first"),
    [
        (f"bytes=10-{LONG}", 206, 10),  # the last byte is clipped to the end
        (f"bytes=-{LONG}", 206, 0),  # a suffix longer than the file is the whole file
        (f"bytes={'0' * 5000}7-", 206, 7),  # leading zeros are just zeros
        (f"bytes={LONG}-10", 200, 0),  # last before first: not a range, ignored
    ],
)
def test_long_numbers_in_a_range_read_as_past_the_end(
    reader: TestClient, content: bytes, header: str, expected_status: int, first: int
) -> None:
    answer = reader.get(FILE, headers={"range": header})
    assert answer.status_code == expected_status
    assert answer.content == content[first:]
