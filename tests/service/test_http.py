"""HTTP's rules, the same on every route: methods, HEAD, 404s, bounds, Accept, origins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.config import Settings

from ._support import TestClient, error_of, upload
from .conftest import ClientFactory

STORE = "/stores/single_population"
ARRAY = f"{STORE}/arrays/edges/left"

#: Each route, a path that reaches it, and every method it answers.
ROUTE_METHODS = [
    ("/stores", ["GET", "HEAD", "POST"]),
    (STORE, ["GET", "HEAD", "PUT", "DELETE"]),
    (f"{STORE}/keys", ["GET", "HEAD"]),
    (f"{STORE}/file", ["GET", "HEAD"]),
    (ARRAY, ["GET", "HEAD"]),
    ("/healthz", ["GET", "HEAD"]),
]


# --- 405 and Allow ------------------------------------------------------------------


@pytest.mark.parametrize(("path", "methods"), ROUTE_METHODS)
@pytest.mark.parametrize("method", ["OPTIONS", "PATCH", "TRACE"])
def test_405_lists_every_method_of_the_path(
    reader: TestClient, library: dict[str, Path], path: str, methods: list[str], method: str
) -> None:
    answer = reader.request(method, path)
    body = error_of(answer, 405)
    assert body["error"] == "method_not_allowed"
    assert answer.headers["allow"] == ", ".join(methods)
    assert ", ".join(methods) in body["detail"]
    assert method in body["detail"]


def test_405_of_a_write_method_lists_the_reads(reader: TestClient) -> None:
    answer = reader.post(f"{STORE}/keys")
    assert error_of(answer, 405)["error"] == "method_not_allowed"
    assert answer.headers["allow"] == "GET, HEAD"


# --- 404 ----------------------------------------------------------------------------


def test_an_unknown_route_is_a_404_that_lists_the_routes_and_the_docs(reader: TestClient) -> None:
    body = error_of(reader.get("/store/single_population"), 404)
    assert body["error"] == "not_found"
    assert "GET /store/single_population" in body["detail"]
    for route in [
        "GET, POST /stores",
        "GET, PUT, DELETE /stores/{name}",
        "GET /stores/{name}/keys",
        "GET /stores/{name}/arrays/{key}",
        "GET /stores/{name}/file",
        "GET /healthz",
    ]:
        assert route in body["detail"], route
    assert "/docs" in body["detail"]


# --- HEAD ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/healthz",
        "/stores",
        STORE,
        f"{STORE}/keys",
        f"{STORE}/file",
        ARRAY,
        f"{ARRAY}?format=json",
        ARRAY.replace("/arrays/", "/summary/"),
        "/",
        f"/ui{STORE}",
        f"/ui{ARRAY}",
        "/docs",
        "/redoc",
        "/openapi.json",
    ],
)
def test_every_get_route_answers_head_with_the_headers_of_get(
    reader: TestClient, library: dict[str, Path], path: str
) -> None:
    got = reader.get(path)
    head = reader.head(path)
    assert (got.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    for header in ("content-type", "content-length", "etag"):
        assert head.headers.get(header) == got.headers.get(header), header


def test_head_covers_every_documented_get(reader: TestClient) -> None:
    """A GET route added later is in the list above, or this fails."""
    documented = {
        path for path, item in reader.get("/openapi.json").json()["paths"].items() if "get" in item
    }
    assert documented == {
        "/healthz",
        "/stores",
        "/stores/{name}",
        "/stores/{name}/keys",
        "/stores/{name}/file",
        "/stores/{name}/arrays/{key}",
        "/stores/{name}/summary/{key}",
    }


# --- integer parameters -------------------------------------------------------------

TOO_BIG = str(2**63)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [
        ("/stores", "offset"),
        ("/stores", "limit"),
        (ARRAY, "start"),
        (ARRAY, "stop"),
        (f"{ARRAY}?format=json", "start"),
    ],
)
@pytest.mark.parametrize("value", [TOO_BIG, "9" * 5000])
def test_an_integer_beyond_its_bound_is_422_naming_it(
    reader: TestClient, library: dict[str, Path], path: str, parameter: str, value: str
) -> None:
    separator = "&" if "?" in path else "?"
    body = error_of(reader.get(f"{path}{separator}{parameter}={value}"), 422)
    assert body["error"] == "invalid_request"
    assert parameter in body["detail"]


def test_the_largest_offset_is_an_empty_page(reader: TestClient, library: dict[str, Path]) -> None:
    answer = reader.get("/stores", params={"offset": 2**63 - 1})
    assert answer.status_code == 200, answer.text
    assert answer.json()["stores"] == []


def test_every_integer_parameter_has_an_upper_bound(reader: TestClient) -> None:
    document = reader.get("/openapi.json").json()
    integers = [
        (path, parameter["name"], parameter["schema"])
        for path, item in document["paths"].items()
        for operation in item.values()
        for parameter in operation.get("parameters", [])
        if "integer" in str(parameter["schema"])
    ]
    assert {name for _, name, _ in integers} == {
        "offset",
        "limit",
        "start",
        "stop",
        "buckets",
        "bins",
    }
    for path, name, schema in integers:
        assert "maximum" in str(schema), (path, name, schema)


# --- Accept -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/octet-stream"),
        ("*/*", "application/octet-stream"),
        ("application/json", "application/json"),
        ("application/json, */*", "application/json"),
        ("application/*", "application/octet-stream"),
        ("application/json;q=0, */*", "application/octet-stream"),
        ("application/json;q=0.5, application/octet-stream", "application/octet-stream"),
        ("application/octet-stream;q=0.1, application/json;q=0.2", "application/json"),
        ("text/html, */*;q=0.8", "application/octet-stream"),
        ("application/JSON; charset=utf-8", "application/json"),
        ("", "application/octet-stream"),
    ],
)
def test_accept_is_read_with_its_q_values(
    reader: TestClient, library: dict[str, Path], accept: str | None, expected: str
) -> None:
    headers = {} if accept is None else {"accept": accept}
    answer = reader.get(ARRAY, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == expected
    assert answer.headers["vary"] == "Accept, Accept-Encoding"


@pytest.mark.parametrize(
    "accept",
    [
        "application/json;q=0",
        "application/json;q=0, application/octet-stream;q=0, application/x-npy;q=0",
        "image/png",
        "*/*;q=0",
    ],
)
def test_an_accept_that_allows_no_form_is_406(
    reader: TestClient, library: dict[str, Path], accept: str
) -> None:
    body = error_of(reader.get(ARRAY, headers={"accept": accept}), 406)
    assert body["error"] == "not_acceptable"
    assert "format=" in body["detail"]


def test_format_beats_accept(reader: TestClient, library: dict[str, Path]) -> None:
    refused = {"accept": "application/json;q=0"}
    raw = reader.get(ARRAY, params={"format": "raw"}, headers=refused)
    assert raw.headers["content-type"] == "application/octet-stream"
    as_json = reader.get(ARRAY, params={"format": "json"}, headers={"accept": "text/csv"})
    assert as_json.headers["content-type"] == "application/json"


# --- cross-site writes --------------------------------------------------------------


def _writes(tskit_file: Path) -> list[tuple[str, str, dict[str, Any]]]:
    content = tskit_file.read_bytes()
    return [
        ("POST", "/stores", {"files": {"file": ("sim.trees", content)}}),
        ("PUT", "/stores/sim", {"content": content}),
        ("DELETE", "/stores/sim", {}),
    ]


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://testserver:8080"])
def test_a_write_from_a_page_of_another_origin_is_403(
    client: TestClient, tskit_file: Path, origin: str
) -> None:
    upload(client, tskit_file, name="sim")
    for method, path, kwargs in _writes(tskit_file):
        answer = client.request(method, path, headers={"origin": origin}, **kwargs)
        body = error_of(answer, 403)
        assert body["error"] == "cross_origin_write", (method, body)
        assert "KASTORE_CORS_ORIGINS" in body["detail"]
    assert client.get("/stores").json()["total"] == 1


@pytest.mark.parametrize("origin", [None, "http://testserver", "HTTP://TestServer:80"])
def test_writes_without_origin_or_from_the_servers_own_pages_pass(
    client: TestClient, tskit_file: Path, origin: str | None
) -> None:
    headers = {} if origin is None else {"origin": origin}
    statuses = [
        client.request(method, path, headers=headers, **kwargs).status_code
        for method, path, kwargs in _writes(tskit_file)
    ]
    assert statuses == [201, 200, 204]


def test_writes_from_an_allowed_origin_pass(make_client: ClientFactory, tskit_file: Path) -> None:
    client = make_client(cors_origins=["https://app.example", "http://localhost:3000"])
    for origin in ["https://app.example", "http://localhost:3000"]:
        statuses = [
            client.request(method, path, headers={"origin": origin}, **kwargs).status_code
            for method, path, kwargs in _writes(tskit_file)
        ]
        assert statuses == [201, 200, 204], origin
    refused = client.post("/stores", headers={"origin": "https://app.example.evil"})
    assert error_of(refused, 403)["error"] == "cross_origin_write"


def test_reads_from_any_origin_pass(reader: TestClient, library: dict[str, Path]) -> None:
    assert reader.get(ARRAY, headers={"origin": "http://evil.example"}).status_code == 200


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", []),
        ("http://a.example", ["http://a.example"]),
        (
            "http://a.example, https://b.example:8443",
            ["http://a.example", "https://b.example:8443"],
        ),
        ('["http://a.example"]', ["http://a.example"]),
        ("*", ["*"]),
    ],
)
def test_cors_origins_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("KASTORE_CORS_ORIGINS", value)
    assert Settings().cors_origins == expected


def test_a_cors_origin_that_is_not_an_origin_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASTORE_CORS_ORIGINS", "evil.example")
    with pytest.raises(ValueError, match="scheme://host"):
        Settings()
