"""Compression on the wire: downloads in every form and whole files, and compressed uploads."""

from __future__ import annotations

import gzip
import io
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import numpy as np
import pytest
import zstandard

import kastore
from app.compression import choose_encoding
from app.decoding import OUT_PIECE_BYTES
from app.decoding import decoded as decoded_pieces

from ._support import (
    TestClient,
    arrays_of,
    assert_serves,
    error_of,
    multipart_body,
    multipart_type,
    sha256,
    stored_names,
)
from .conftest import Leftovers

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


def test_small_bodies_are_sent_as_they_are(reader: TestClient, library: dict[str, Path]) -> None:
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
    reader: TestClient, library: dict[str, Path], url: str, encoding: str
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
def test_head_headers_match_get(
    reader: TestClient, library: dict[str, Path], url: str, encoding: str
) -> None:
    got, _ = fetch(reader, url, **{"accept-encoding": encoding})
    head, raw = fetch(reader, url, "HEAD", **{"accept-encoding": encoding})
    assert raw == b""
    names = ["etag", "content-encoding", "content-length", "vary", "content-type"]
    assert [head.headers.get(n) for n in names] == [got.headers.get(n) for n in names]


# --- JSON, CSV, text and rows -------------------------------------------------------

#: Each text form, on an array large enough to be compressed: (label, URL).
TEXT_FORMS = [
    ("json", ARRAY + "?format=json"),
    ("json streamed", "/stores/big/arrays/floats?format=json"),
    ("csv", ARRAY + "?format=csv"),
    ("csv streamed", "/stores/big/arrays/floats?format=csv"),
    ("text", "/stores/single_population/arrays/provenances/record?format=text"),
    ("rows", "/stores/single_population/arrays/provenances/record?format=rows"),
]


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
@pytest.mark.parametrize(("form", "url"), TEXT_FORMS, ids=[form for form, _ in TEXT_FORMS])
def test_text_forms_are_compressed_and_decode_to_the_identity_answer(
    reader: TestClient, library: dict[str, Path], form: str, url: str, encoding: str
) -> None:
    plain, expected = fetch(reader, url, **{"accept-encoding": "identity"})
    assert plain.status_code == 200
    assert len(expected) > 1024
    answer, raw = fetch(reader, url, **{"accept-encoding": f"{encoding}, identity;q=0.5"})
    assert answer.status_code == 200
    assert answer.headers["content-encoding"] == encoding
    assert "content-length" not in answer.headers
    assert decoded(encoding, raw) == expected
    assert len(raw) < 0.9 * len(expected)
    assert answer.headers["content-type"] == plain.headers["content-type"]
    assert answer.headers["vary"] == "Accept, Accept-Encoding"
    assert answer.headers["etag"] == plain.headers["etag"][:-1] + f'-{encoding}"'
    again, body = fetch(
        reader, url, **{"accept-encoding": encoding, "if-none-match": answer.headers["etag"]}
    )
    assert (again.status_code, body) == (304, b"")


@pytest.mark.parametrize(("form", "url"), TEXT_FORMS, ids=[form for form, _ in TEXT_FORMS])
def test_text_forms_head_headers_match_get(
    reader: TestClient, library: dict[str, Path], form: str, url: str
) -> None:
    got, _ = fetch(reader, url, **{"accept-encoding": "zstd"})
    head, raw = fetch(reader, url, "HEAD", **{"accept-encoding": "zstd"})
    assert raw == b""
    names = ["etag", "content-encoding", "content-length", "vary", "content-type"]
    assert [head.headers.get(n) for n in names] == [got.headers.get(n) for n in names]


@pytest.mark.parametrize("form", ["json", "csv", "text", "rows"])
def test_small_text_answers_are_sent_as_they_are(
    reader: TestClient, library: dict[str, Path], form: str
) -> None:
    key = "sites/ancestral_state" if form in ("text", "rows") else "edges/left"
    url = f"/stores/single_population/arrays/{key}?format={form}&start=0&stop=2"
    plain, expected = fetch(reader, url, **{"accept-encoding": "identity"})
    assert 0 < len(expected) < 1024
    answer, raw = fetch(reader, url, **{"accept-encoding": "zstd, gzip"})
    assert answer.status_code == 200
    assert "content-encoding" not in answer.headers
    assert raw == expected
    assert answer.headers["etag"] == plain.headers["etag"]
    assert answer.headers["content-length"] == str(len(raw))


def test_a_range_does_not_keep_a_json_answer_from_being_compressed(
    reader: TestClient, library: dict[str, Path]
) -> None:
    url = ARRAY + "?format=json"
    answer, raw = fetch(reader, url, range="bytes=0-9", **{"accept-encoding": "gzip"})
    assert answer.status_code == 200  # Range is for raw and npy
    assert answer.headers["content-encoding"] == "gzip"
    assert decoded("gzip", raw) == fetch(reader, url)[1]


# --- compressed uploads --------------------------------------------------------------

GiB = 1 << 30
#: The upload limit of the tests that send a decompression bomb.
BOMB_LIMIT = 4 << 20


def compressed(encoding: str, data: bytes) -> bytes:
    if encoding == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if encoding == "zstd-frames":  # two frames, one after the other (cat a.zst b.zst)
        half = len(data) // 2
        return compressed("zstd", data[:half]) + compressed("zstd", data[half:])
    return gzip.compress(data, compresslevel=6)


def coding_of(encoding: str) -> str:
    return encoding.removesuffix("-frames")


def send_compressed(
    client: TestClient, method: str, data: bytes, *, encoding: str, name: str = "sim"
) -> Any:
    headers = {"content-encoding": coding_of(encoding)}
    if method == "PUT":
        body = compressed(encoding, data)
        return client.put(f"/stores/{name}", content=body, headers=headers)
    form = multipart_body(("name", None, name.encode()), ("file", f"{name}.trees", data))
    body = compressed(encoding, form)
    return client.post("/stores", content=body, headers={**multipart_type(), **headers})


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("encoding", ["zstd", "gzip", "zstd-frames"])
def test_compressed_uploads_are_stored_byte_for_byte(
    client: TestClient, tskit_file: Path, method: str, encoding: str
) -> None:
    content = tskit_file.read_bytes()
    answer = send_compressed(client, method, content, encoding=encoding)
    assert answer.status_code == 201, answer.text
    assert answer.json()["sha256"] == sha256(content)
    stored = client.get("/stores/sim/file")
    assert stored.content == content
    assert_serves(client, "sim", content)


def test_an_identity_content_encoding_is_no_coding(client: TestClient, tskit_file: Path) -> None:
    content = tskit_file.read_bytes()
    answer = client.put("/stores/sim", content=content, headers={"content-encoding": "identity"})
    assert answer.status_code == 201, answer.text
    assert client.get("/stores/sim/file").content == content


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """1 GiB of zeros, compressed: a few tens of kilobytes with zstd, a megabyte with gzip."""
    zeros = bytes(64 << 20)
    zstd = zstandard.ZstdCompressor(level=3).compressobj(size=GiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    zstd_out, gzip_out = bytearray(), bytearray()
    for _ in range(GiB // len(zeros)):
        zstd_out += zstd.compress(zeros)
        gzip_out += deflate.compress(zeros)
    return {"zstd": bytes(zstd_out + zstd.flush()), "gzip": bytes(gzip_out + deflate.flush())}


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_a_decompression_bomb_gets_413_and_nothing_is_kept(
    make_client: Any,
    data_dir: Path,
    bombs: dict[str, bytes],
    method: str,
    encoding: str,
    leftovers: Leftovers,
) -> None:
    client = make_client(max_upload_bytes=BOMB_LIMIT)
    bomb = bombs[encoding]
    assert len(bomb) < BOMB_LIMIT // 2  # the body on the wire fits well under the limit
    if method == "PUT":
        answer = client.put("/stores/sim", content=bomb, headers={"content-encoding": encoding})
    else:
        # The form, compressed whole: its opening, then the bomb's zeros as the file.
        opening = multipart_body(("file", "sim.trees", b"")).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
        form = compressed(encoding, opening) + bomb
        headers = {**multipart_type(), "content-encoding": encoding}
        answer = client.post("/stores", content=form, headers=headers)
    body = error_of(answer, 413)
    assert body["error"] == "upload_too_large"
    assert str(BOMB_LIMIT) in body["detail"]
    assert stored_names(client) == []
    assert leftovers() == []


def test_decompression_gives_bounded_pieces(bombs: dict[str, bytes]) -> None:
    """However much a piece expands to, memory holds at most one output piece of it."""

    async def sizes(encoding: str) -> list[int]:
        async def pieces() -> AsyncIterator[bytes]:
            yield bombs[encoding][:16]  # small: a first call in the event loop
            yield bombs[encoding][16:]

        out: list[int] = []
        async for piece in decoded_pieces(pieces(), "zstd" if encoding == "zstd" else "gzip"):
            out.append(len(piece))
            if sum(out) > 64 * OUT_PIECE_BYTES:
                break
        return out

    for encoding in ("zstd", "gzip"):
        found = anyio.run(sizes, encoding)
        assert sum(found) > 64 * OUT_PIECE_BYTES
        assert max(found) <= OUT_PIECE_BYTES


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize(
    ("encoding", "damage"),
    [
        ("zstd", "garbage"),
        ("gzip", "garbage"),
        ("zstd", "truncated"),
        ("gzip", "truncated"),
        ("gzip", "empty"),
    ],
)
def test_a_corrupt_compressed_body_gets_400_and_nothing_is_kept(
    client: TestClient,
    data_dir: Path,
    tskit_file: Path,
    method: str,
    encoding: str,
    damage: str,
    leftovers: Leftovers,
) -> None:
    content = tskit_file.read_bytes()
    if method == "POST":
        content = multipart_body(("file", "sim.trees", content))
    body = {
        "garbage": b"this is not compressed at all" * 100,
        "truncated": compressed(encoding, content)[:-100],
        "empty": b"",
    }[damage]
    headers = {"content-encoding": encoding}
    if method == "PUT":
        answer = client.put("/stores/sim", content=body, headers=headers)
    else:
        answer = client.post("/stores", content=body, headers={**multipart_type(), **headers})
    error = error_of(answer, 400)
    assert error["error"] == "corrupt_body"
    assert f"not valid {encoding} data" in error["detail"]
    assert stored_names(client) == []
    assert leftovers() == []


@pytest.mark.parametrize("method", ["PUT", "POST"])
@pytest.mark.parametrize("header", ["br", "deflate", "gzip, zstd", "compress"])
def test_an_unknown_content_encoding_gets_415_listing_the_supported_ones(
    client: TestClient, tskit_file: Path, method: str, header: str
) -> None:
    content = tskit_file.read_bytes()
    headers = {"content-encoding": header}
    if method == "PUT":
        answer = client.put("/stores/sim", content=content, headers=headers)
    else:
        form = multipart_body(("file", "sim.trees", content))
        answer = client.post("/stores", content=form, headers={**multipart_type(), **headers})
    error = error_of(answer, 415)
    assert error["error"] == "unsupported_content_encoding"
    assert "zstd, gzip" in error["detail"]
    assert answer.headers["accept-encoding"] == "zstd, gzip"
    assert stored_names(client) == []


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_summaries_are_compressed_too(
    reader: TestClient, library: dict[str, Path], encoding: str
) -> None:
    url = "/stores/big/summary/floats?buckets=1000&bins=100"
    plain, expected = fetch(reader, url, **{"accept-encoding": "identity"})
    assert plain.status_code == 200 and len(expected) > 1024
    answer, raw = fetch(reader, url, **{"accept-encoding": encoding})
    assert answer.headers["content-encoding"] == encoding
    assert decoded(encoding, raw) == expected
    assert answer.headers["etag"] == plain.headers["etag"][:-1] + f'-{encoding}"'
    assert "Accept-Encoding" in answer.headers["vary"]
    again, body = fetch(
        reader, url, **{"accept-encoding": encoding, "if-none-match": answer.headers["etag"]}
    )
    assert (again.status_code, body) == (304, b"")
