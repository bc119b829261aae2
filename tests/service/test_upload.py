"""Uploading stores: POST multipart, PUT raw, names, refusals, limits."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ._support import (
    NAME_RULE,
    TestClient,
    assert_serves,
    error_of,
    multipart_body,
    multipart_type,
    read_json,
    shared_files,
    stored_names,
    upload,
)
from .conftest import Leftovers

MALFORMED = [name for name in shared_files("reference/malformed", ".kas")]


def _chunked(data: bytes, piece: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, without ``Content-Length``."""
    for start in range(0, len(data), piece):
        yield data[start : start + piece]


# --- POST /stores -----------------------------------------------------------------


def test_post_answers_201_with_the_stored_file_described(
    client: TestClient, tskit_file: Path
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    answer = client.post("/stores", files={"file": (tskit_file.name, tskit_file.read_bytes())})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    content = tskit_file.read_bytes()
    assert body == {
        "name": "single_population",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "num_keys": 62,
        "created": body["created"],
        "url": "/stores/single_population",
        "keys_url": "/stores/single_population/keys",
        "file_url": "/stores/single_population/file",
    }
    created = datetime.fromisoformat(body["created"].replace("Z", "+00:00"))
    assert before <= created <= datetime.now(UTC) + timedelta(seconds=1)
    assert answer.headers["location"] == "/stores/single_population"
    assert client.get(answer.headers["location"]).json() == body


@pytest.mark.parametrize(
    ("filename", "name"),
    [
        ("sim.trees", "sim"),
        ("run-1.2_final.kas", "run-1.2_final"),
        ("archive.tar.kas", "archive.tar"),
        ("no_extension", "no_extension"),
        ("some/dir/sim.trees", "sim"),
        ("C:\\Users\\me\\sim.trees", "sim"),
    ],
)
def test_post_names_the_store_after_the_file(
    client: TestClient, tskit_file: Path, filename: str, name: str
) -> None:
    answer = client.post("/stores", files={"file": (filename, tskit_file.read_bytes())})
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == name
    assert stored_names(client) == [name]


def test_post_name_field_overrides_the_file_name(client: TestClient, tskit_file: Path) -> None:
    info = upload(client, tskit_file, name="run-42")
    assert info["name"] == "run-42"
    assert stored_names(client) == ["run-42"]


def test_post_name_field_after_the_file_part(client: TestClient, tskit_file: Path) -> None:
    """``curl -F file=@sim.trees -F name=run-42`` sends the file first, then the name."""
    body = multipart_body(("file", "sim.trees", tskit_file.read_bytes()), ("name", None, b"run-42"))
    answer = client.post("/stores", content=body, headers=multipart_type())
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "run-42"
    assert_serves(client, "run-42", tskit_file.read_bytes())


@pytest.mark.local_storage  # looks at the data directory's files
def test_post_to_a_taken_name_is_409_and_keeps_the_store(
    client: TestClient, data_dir: Path, tskit_file: Path, unicode_file: Path
) -> None:
    first = upload(client, tskit_file, name="taken")
    answer = client.post(
        "/stores",
        files={"file": (unicode_file.name, unicode_file.read_bytes())},
        data={"name": "taken"},
    )
    detail = error_of(answer, 409)["detail"]
    assert "'taken'" in detail
    assert "PUT /stores/taken" in detail
    assert client.get("/stores/taken").json() == first
    assert_serves(client, "taken", tskit_file.read_bytes())
    assert not list((data_dir / "tmp").iterdir())


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"\x89KAS", {"content-type": "application/octet-stream"}),
        (b'{"file": "x"}', {"content-type": "application/json"}),
        (b"file=x", {"content-type": "application/x-www-form-urlencoded"}),
        (b"", {}),
    ],
    ids=["octet-stream", "json", "urlencoded", "no-body"],
)
def test_post_without_a_multipart_form_is_415(
    client: TestClient, content: bytes, headers: dict[str, str]
) -> None:
    detail = error_of(client.post("/stores", content=content, headers=headers), 415)["detail"]
    assert "curl -F file=@PATH" in detail
    assert stored_names(client) == []


def test_post_form_without_a_file_field_is_415(client: TestClient, tskit_file: Path) -> None:
    answer = client.post("/stores", files={"upload": ("sim.trees", tskit_file.read_bytes())})
    detail = error_of(answer, 415)["detail"]
    assert "'file'" in detail
    assert stored_names(client) == []


@pytest.mark.parametrize(
    ("method", "path", "parts", "named"),
    [
        ("POST", "/stores", [("name", None, b"a"), ("comment", None, b"hi")], "'comment'"),
        ("POST", "/stores", [("", None, b"x")], "''"),
        ("POST", "/stores", [("name", None, b"a"), ("name", None, b"b")], "one 'name'"),
        ("PUT", "/stores/sim", [("name", None, b"other")], "'name'"),
    ],
    ids=["unknown field", "nameless field", "repeated name", "name in a PUT form"],
)
def test_a_form_field_that_is_not_asked_for_is_415(
    client: TestClient,
    data_dir: Path,
    tskit_file: Path,
    method: str,
    path: str,
    parts: list[tuple[str, str | None, bytes]],
    named: str,
    leftovers: Leftovers,
) -> None:
    """The form takes ``file`` (and ``name`` for POST) once each, as the document says."""
    body = multipart_body(*parts, ("file", "sim.trees", tskit_file.read_bytes()))
    answer = client.request(method, path, content=body, headers=multipart_type())
    assert named in error_of(answer, 415)["detail"]
    assert stored_names(client) == []
    assert leftovers() == []


def test_post_form_with_only_a_name_is_415(client: TestClient) -> None:
    answer = client.post(
        "/stores", content=multipart_body(("name", None, b"sim")), headers=multipart_type()
    )
    assert "'file'" in error_of(answer, 415)["detail"]
    assert stored_names(client) == []


@pytest.mark.parametrize(
    "name",
    ["../x", ".hidden", "a/b", "x" * 129, "-dash", "_under", "a b", "é", "a\\b", "a:b", "..", "."],
    ids=lambda name: name if len(name) < 20 else f"{len(name)} chars",
)
def test_post_with_an_invalid_name_is_422_with_the_rule(
    client: TestClient, tskit_file: Path, name: str, leftovers: Leftovers
) -> None:
    answer = client.post(
        "/stores", files={"file": ("sim.trees", tskit_file.read_bytes())}, data={"name": name}
    )
    body = error_of(answer, 422)
    assert body["error"] == "invalid_store_name"
    assert repr(name) in body["detail"]
    assert NAME_RULE in body["detail"]
    assert stored_names(client) == []
    assert leftovers() == []


def test_post_with_an_empty_name_field_is_422(
    client: TestClient, tskit_file: Path, leftovers: Leftovers
) -> None:
    """An explicit but empty name is a mistake, not a request for the file's name."""
    answer = client.post(
        "/stores", files={"file": ("sim.trees", tskit_file.read_bytes())}, data={"name": ""}
    )
    assert error_of(answer, 422)["error"] == "invalid_store_name"
    assert stored_names(client) == []
    assert leftovers() == []


def test_post_of_a_file_whose_name_is_not_a_store_name_says_to_add_one(
    client: TestClient, tskit_file: Path, leftovers: Leftovers
) -> None:
    answer = client.post("/stores", files={"file": ("été 1.trees", tskit_file.read_bytes())})
    body = error_of(answer, 422)
    assert "'été 1'" in body["detail"]
    assert "-F name=NAME" in body["detail"]
    assert stored_names(client) == []
    assert leftovers() == []


@pytest.mark.parametrize("name", ["a", "A.b_c-1", "0" * 128, "sim.trees"])
def test_post_accepts_every_valid_name(client: TestClient, tskit_file: Path, name: str) -> None:
    info = upload(client, tskit_file, name=name)
    assert info["name"] == name
    assert client.get(info["url"]).status_code == 200


def test_post_file_named_only_by_an_invalid_stem_is_422(
    client: TestClient, tskit_file: Path
) -> None:
    answer = client.post("/stores", files={"file": ("été.trees", tskit_file.read_bytes())})
    assert "'été'" in error_of(answer, 422)["detail"]


# --- PUT /stores/{name} -----------------------------------------------------------


def test_put_raw_creates_then_replaces(
    client: TestClient, tskit_file: Path, unicode_file: Path, leftovers: Leftovers
) -> None:
    created = client.put("/stores/sim", content=tskit_file.read_bytes())
    assert created.status_code == 201, created.text
    assert created.headers["location"] == "/stores/sim"
    assert created.json()["sha256"] == hashlib.sha256(tskit_file.read_bytes()).hexdigest()

    replaced = client.put("/stores/sim", content=unicode_file.read_bytes())
    assert replaced.status_code == 200, replaced.text
    info = replaced.json()
    assert info["sha256"] == hashlib.sha256(unicode_file.read_bytes()).hexdigest()
    assert info["size"] == unicode_file.stat().st_size
    assert info["num_keys"] == 6
    assert client.get("/stores/sim").json() == info
    assert_serves(client, "sim", unicode_file.read_bytes())
    keys = [entry["key"] for entry in client.get("/stores/sim/keys").json()["keys"]]
    assert "edges/left" not in keys
    assert "a/b/c" in keys
    assert error_of(client.get("/stores/sim/arrays/edges/left"), 404)["error"] == "key_not_found"
    assert stored_names(client) == ["sim"]
    # The replaced content is not kept on disk.
    assert [path.stem for path in leftovers()] == [info["sha256"]]


def test_put_the_same_content_again_is_200_and_still_readable(
    client: TestClient, tskit_file: Path
) -> None:
    assert client.put("/stores/sim", content=tskit_file.read_bytes()).status_code == 201
    assert client.put("/stores/sim", content=tskit_file.read_bytes()).status_code == 200
    assert_serves(client, "sim", tskit_file.read_bytes())


def test_put_chunked_body_is_stored(client: TestClient, tskit_file: Path) -> None:
    answer = client.put("/stores/sim", content=_chunked(tskit_file.read_bytes(), 1000))
    assert answer.status_code == 201, answer.text
    assert_serves(client, "sim", tskit_file.read_bytes())


def test_put_multipart_form_is_stored_under_the_path_name(
    client: TestClient, tskit_file: Path
) -> None:
    answer = client.put("/stores/other", files={"file": ("sim.trees", tskit_file.read_bytes())})
    assert answer.status_code == 201, answer.text
    assert answer.json()["name"] == "other"
    assert_serves(client, "other", tskit_file.read_bytes())


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/stores/.hidden", ".hidden"),
        ("/stores/-x", "-x"),
        ("/stores/a%20b", "a b"),
        (f"/stores/{'x' * 129}", "x" * 129),
    ],
    ids=[".hidden", "-x", "a b", "129 chars"],
)
def test_put_with_an_invalid_name_is_422(
    client: TestClient, tskit_file: Path, path: str, name: str, leftovers: Leftovers
) -> None:
    body = error_of(client.put(path, content=tskit_file.read_bytes()), 422)
    assert repr(name) in body["detail"]
    assert NAME_RULE in body["detail"]
    assert leftovers() == []


def test_two_names_for_one_content_are_independent(client: TestClient, tskit_file: Path) -> None:
    upload(client, tskit_file, name="one")
    upload(client, tskit_file, name="two")
    assert client.delete("/stores/one").status_code == 204
    assert_serves(client, "two", tskit_file.read_bytes())
    assert client.put("/stores/two", content=b"").status_code == 422
    assert_serves(client, "two", tskit_file.read_bytes())


# --- malformed files --------------------------------------------------------------


@pytest.mark.parametrize("filename", MALFORMED)
def test_malformed_file_is_422_and_not_stored(
    client: TestClient, testdata: Path, filename: str, leftovers: Leftovers
) -> None:
    content = (testdata / "reference" / "malformed" / filename).read_bytes()
    posted = client.post("/stores", files={"file": (filename, content)})
    body = error_of(posted, 422)
    assert body["error"] == "invalid_kastore_file"
    expected = read_json(testdata / "reference" / "malformed" / "expected.json")[filename]
    if expected == "EOFError":
        assert "empty" in body["detail"]
    else:
        assert "not a valid kastore file" in body["detail"]
    assert error_of(client.put("/stores/broken", content=content), 422) == body
    assert stored_names(client) == []
    assert error_of(client.get("/stores/broken"), 404)["error"] == "store_not_found"
    assert leftovers() == []


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not a kastore file at all" * 100, id="text"),
        pytest.param(None, id="truncated-tskit"),
    ],
)
def test_invalid_upload_is_422_and_not_stored(
    client: TestClient,
    data_dir: Path,
    tskit_file: Path,
    content: bytes | None,
    leftovers: Leftovers,
) -> None:
    if content is None:
        content = tskit_file.read_bytes()[: tskit_file.stat().st_size // 2]
    posted = client.post("/stores", files={"file": ("sim.trees", content)})
    assert error_of(posted, 422)["error"] == "invalid_kastore_file"
    assert error_of(client.put("/stores/sim", content=_chunked(content)), 422)
    assert stored_names(client) == []
    assert leftovers() == []


def test_refused_replacement_keeps_the_store(
    client: TestClient, tskit_file: Path, testdata: Path
) -> None:
    info = upload(client, tskit_file, name="sim")
    bad = (testdata / "reference" / "malformed" / "truncated_file.kas").read_bytes()
    error_of(client.put("/stores/sim", content=bad), 422)
    assert client.get("/stores/sim").json() == info
    assert_serves(client, "sim", tskit_file.read_bytes())


# --- size limit -------------------------------------------------------------------

LIMIT = 50_000


def _post_form(client: TestClient, content: bytes, *, chunked: bool) -> Any:
    body = multipart_body(("file", "big.kas", content))
    return client.post(
        "/stores", content=_chunked(body) if chunked else body, headers=multipart_type()
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("method", ["post", "put"])
def test_oversized_upload_is_413_with_the_limit(
    make_client: Any,
    data_dir: Path,
    tskit_file: Path,
    method: str,
    chunked: bool,
    leftovers: Leftovers,
) -> None:
    client = make_client(max_upload_bytes=LIMIT)
    content = tskit_file.read_bytes()
    assert len(content) > LIMIT
    if method == "post":
        answer = _post_form(client, content, chunked=chunked)
    else:
        answer = client.put("/stores/big", content=_chunked(content) if chunked else content)
    assert ("content-length" in answer.request.headers) is not chunked
    body = error_of(answer, 413)
    assert body["error"] == "upload_too_large"
    assert f"{LIMIT} bytes" in body["detail"]
    assert "KASTORE_MAX_UPLOAD_BYTES" in body["detail"]
    assert stored_names(client) == []
    assert leftovers() == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("method", ["post", "put"])
def test_file_of_exactly_the_limit_is_accepted(
    make_client: Any, unicode_file: Path, method: str, chunked: bool
) -> None:
    """The limit is on the file: a file of ``max_upload_bytes`` fits, however it is sent."""
    content = unicode_file.read_bytes()
    client = make_client(max_upload_bytes=len(content))
    if method == "post":
        answer = _post_form(client, content, chunked=chunked)
    else:
        answer = client.put("/stores/big", content=_chunked(content) if chunked else content)
    assert answer.status_code == 201, answer.text
    assert_serves(client, "big", content)
