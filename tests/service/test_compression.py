"""Compressed downloads: Content-Encoding from Accept-Encoding, for arrays and whole files."""

from __future__ import annotations

import io
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import zstandard

import kastore
from app.compression import choose_encoding

from ._support import TestClient, arrays_of

TSKIT = ["single_population", "island_model_with_metadata"]
FILE = "/stores/single_population/file"
ARRAY = "/stores/single_population/arrays/edges/left"


def fetch(client: TestClient, url: str, method: str = "GET", **headers: str) -> Any:
    """The answer, and its body as it crossed the wire (not decoded)."""
    with client.stream(method, url, headers=headers) as answer:
        raw = b"".join(answer.iter_raw())
    return answer, raw


def decoded(encoding: str | None, raw: bytes) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(raw)
    if encoding == "gzip":
        return zlib.decompress(raw, 31)
    assert encoding is None
    return raw


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
@pytest.mark.parametrize("store", TSKIT)
def test_every_array_round_trips_byte_exact(
    reader: TestClient, library: dict[str, Path], store: str, encoding: str
) -> None:
    wire = raw_total = 0
    for key, array in arrays_of(library[store]).items():
        url = f"/stores/{store}/arrays/{quote(key, safe='')}"
        answer, raw = fetch(reader, url, **{"accept-encoding": encoding})
        assert answer.status_code == 200
        body = decoded(answer.headers.get("content-encoding"), raw)
        assert body == array.tobytes(), key
        assert answer.headers["vary"] == "Accept, Accept-Encoding"
        if answer.headers.get("content-encoding"):
            assert answer.headers["content-encoding"] == encoding
            assert "content-length" not in answer.headers
            assert len(raw) < 0.9 * array.nbytes
        wire += len(raw)
        raw_total += array.nbytes
    assert wire < 0.8 * raw_total  # arrays under 1 KiB go as they are


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_the_whole_file_round_trips(
    reader: TestClient, library: dict[str, Path], encoding: str
) -> None:
    content = library["single_population"].read_bytes()
    answer, raw = fetch(reader, FILE, **{"accept-encoding": encoding})
    assert answer.headers["content-encoding"] == encoding
    assert answer.headers["etag"].endswith(f'-{encoding}"')
    assert answer.headers["vary"] == "Accept-Encoding"
    assert decoded(encoding, raw) == content
    assert len(raw) < len(content) / 2


def test_npy_is_compressed_too(reader: TestClient, library: dict[str, Path]) -> None:
    answer, raw = fetch(reader, ARRAY + "?format=npy", **{"accept-encoding": "zstd"})
    assert answer.headers["content-encoding"] == "zstd"
    array = arrays_of(library["single_population"])["edges/left"]
    assert np.array_equal(np.load(io.BytesIO(decoded("zstd", raw))), array)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("zstd;q=0, gzip", "gzip"),
        ("gzip, zstd", "zstd"),
        ("gzip;q=1, zstd;q=0.5", "gzip"),
        ("zstd;q=0.5, identity", None),
        ("*", "zstd"),
        ("*;q=0.2, gzip;q=0.5", "gzip"),
        ("br, deflate", None),
        ("identity", None),
        ("", None),
        ("zstd;q=nonsense, gzip", "gzip"),
        ("identity;q=0", None),  # nothing else acceptable: the stored bytes anyway
    ],
)
def test_accept_encoding_is_read_with_q_values(
    reader: TestClient, library: dict[str, Path], header: str, expected: str | None
) -> None:
    answer, raw = fetch(reader, FILE, **{"accept-encoding": header})
    assert answer.status_code == 200
    assert answer.headers.get("content-encoding") == expected
    assert decoded(expected, raw) == library["single_population"].read_bytes()


def test_a_client_refusing_identity_gets_small_bodies_compressed() -> None:
    assert choose_encoding("gzip, identity;q=0") == ("gzip", True)
    assert choose_encoding("gzip, *;q=0") == ("gzip", True)
    assert choose_encoding("gzip") == ("gzip", False)


def test_a_range_is_never_compressed(reader: TestClient, library: dict[str, Path]) -> None:
    content = library["single_population"].read_bytes()
    answer, raw = fetch(reader, FILE, range="bytes=100-4195", **{"accept-encoding": "zstd"})
    assert answer.status_code == 206
    assert "content-encoding" not in answer.headers
    assert raw == content[100:4196]
    assert answer.headers["etag"] == answer.headers["etag"].removesuffix('-zstd"')


def test_small_bodies_are_sent_as_they_are(reader: TestClient) -> None:
    url = "/stores/single_population/arrays/edges/left?start=0&stop=10"
    answer, raw = fetch(reader, url, **{"accept-encoding": "zstd, gzip"})
    assert "content-encoding" not in answer.headers
    assert answer.headers["content-length"] == str(len(raw)) == "80"


def test_incompressible_data_is_sent_as_it_is(client: TestClient, tmp_path: Path) -> None:
    noise = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8)
    path = tmp_path / "noise.kas"
    kastore.dump({"noise": noise}, path)
    client.post("/stores", files={"file": ("noise.kas", path.read_bytes())})
    for url in ("/stores/noise/arrays/noise", "/stores/noise/file"):
        answer, raw = fetch(client, url, **{"accept-encoding": "zstd"})
        assert "content-encoding" not in answer.headers
        assert answer.headers["content-length"] == str(len(raw))
        assert not answer.headers["etag"].endswith('-zstd"')
    answer, raw = fetch(client, "/stores/noise/arrays/noise", **{"accept-encoding": "gzip"})
    assert "content-encoding" not in answer.headers
    assert raw == noise.tobytes()


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
@pytest.mark.parametrize("url", [FILE, ARRAY])
def test_each_encoding_has_its_etag_and_gets_304(
    reader: TestClient, url: str, encoding: str
) -> None:
    plain, _ = fetch(reader, url, **{"accept-encoding": "identity"})
    coded, _ = fetch(reader, url, **{"accept-encoding": encoding})
    assert coded.headers["etag"] == plain.headers["etag"][:-1] + f'-{encoding}"'
    again, raw = fetch(
        reader, url, **{"accept-encoding": encoding, "if-none-match": coded.headers["etag"]}
    )
    assert again.status_code == 304
    assert raw == b""
    assert again.headers["etag"] == coded.headers["etag"]
    # The same content under another coding, or a piece of it, has not changed either.
    for asked in ({"accept-encoding": "identity"}, {"range": "bytes=0-9"}):
        other, _ = fetch(reader, url, **asked, **{"if-none-match": coded.headers["etag"]})
        assert other.status_code == 304
    changed, _ = fetch(
        reader, url, **{"accept-encoding": encoding, "if-none-match": '"0" , "1-zstd"'}
    )
    assert changed.status_code == 200


@pytest.mark.parametrize("encoding", ["zstd", "gzip", "identity"])
@pytest.mark.parametrize("url", [FILE, ARRAY, ARRAY + "?format=npy"])
def test_head_headers_match_get(reader: TestClient, url: str, encoding: str) -> None:
    got, _ = fetch(reader, url, **{"accept-encoding": encoding})
    head, raw = fetch(reader, url, "HEAD", **{"accept-encoding": encoding})
    assert raw == b""
    names = ["etag", "content-encoding", "content-length", "vary", "content-type"]
    assert [head.headers.get(n) for n in names] == [got.headers.get(n) for n in names]
