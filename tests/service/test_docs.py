"""The documentation the service serves: /docs, /redoc and /openapi.json, offline."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ._support import TestClient

#: Every route of the API, as the OpenAPI document names them.
ROUTES = [
    ("post", "/stores"),
    ("get", "/stores"),
    ("get", "/stores/{name}"),
    ("put", "/stores/{name}"),
    ("delete", "/stores/{name}"),
    ("get", "/stores/{name}/file"),
    ("get", "/stores/{name}/keys"),
    ("get", "/stores/{name}/arrays/{key}"),
    ("get", "/stores/{name}/summary/{key}"),
    ("get", "/healthz"),
]


@pytest.fixture(scope="module")
def openapi(reader: TestClient) -> dict[str, Any]:
    answer = reader.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def _operations(openapi: dict[str, Any]) -> list[tuple[str, str]]:
    return [(method, path) for path, item in openapi["paths"].items() for method in item]


def _resolve(openapi: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    resolved: dict[str, Any] = openapi
    for part in ref.removeprefix("#/").split("/"):
        resolved = resolved[part]
    return resolved


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_another_host(reader: TestClient, page: str) -> None:
    answer = reader.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    html = answer.text
    assert re.findall(r"(?i)(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html) == []
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(asset.endswith(".js") for asset in assets), assets
    for asset in assets:
        assert asset.startswith("/"), asset
        served = reader.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 1000, asset
    assert "/openapi.json" in html


def test_openapi_lists_every_route(openapi: dict[str, Any]) -> None:
    assert sorted(_operations(openapi)) == sorted(ROUTES)
    assert openapi["info"]["title"] == "kastore-service"
    assert "curl" in openapi["info"]["description"]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_route_has_a_summary_and_a_curl_example(
    openapi: dict[str, Any], method: str, path: str
) -> None:
    operation = openapi["paths"][path][method]
    assert operation.get("summary", "").strip()
    assert "curl" in operation.get("description", "")
    assert path.split("{")[0].rstrip("/") in operation["description"]


def _responses(openapi: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(operation, status, response)`` for every documented answer."""
    return [
        (f"{method.upper()} {path}", status, response)
        for path, item in openapi["paths"].items()
        for method, operation in item.items()
        for status, response in operation["responses"].items()
    ]


def test_every_json_answer_has_a_typed_schema(openapi: dict[str, Any]) -> None:
    """A client generated from the document knows the shape of each JSON answer."""
    untyped = []
    checked = 0
    for operation, status, response in _responses(openapi):
        content = response.get("content", {})
        if "application/json" not in content:
            continue
        checked += 1
        schema = _resolve(openapi, content["application/json"].get("schema", {}))
        # One shape, or one of several (an array's JSON: its data, or its rows).
        shapes = [_resolve(openapi, one) for one in schema.get("anyOf", [schema])]
        if any(shape.get("type") != "object" or not shape.get("properties") for shape in shapes):
            untyped.append(f"{operation} {status}")
    assert checked > 0, "no JSON answer in the document"
    assert untyped == []


def test_every_error_answer_is_documented_as_sent(openapi: dict[str, Any]) -> None:
    """Errors are sent as ``{"error", "detail"}``: the document must say so, 422 included."""
    expected = {"$ref": "#/components/schemas/ErrorAnswer"}
    errors = [
        (operation, status, response)
        for operation, status, response in _responses(openapi)
        if status.startswith(("4", "5"))
    ]
    assert errors, "no error answer in the document"
    wrong = [
        f"{operation} {status}: {response['content']['application/json']['schema']}"
        for operation, status, response in errors
        if response["content"]["application/json"]["schema"] != expected
    ]
    assert wrong == []


def test_success_schemas_are_typed(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    store = schemas["StoreInfo"]["properties"]
    assert {name: store[name].get("type") for name in ("name", "size", "sha256", "num_keys")} == {
        "name": "string",
        "size": "integer",
        "sha256": "string",
        "num_keys": "integer",
    }
    assert store["created"]["format"] == "date-time"
    assert set(schemas["StoreInfo"]["required"]) >= {"name", "size", "sha256", "url"}
    assert schemas["StoreList"]["properties"]["stores"]["items"] == {
        "$ref": "#/components/schemas/StoreInfo"
    }
    keys = schemas["KeyList"]["properties"]["keys"]["items"]
    assert keys == {"$ref": "#/components/schemas/KeyEntry"}
    entry = schemas["KeyEntry"]["properties"]
    assert entry["length"]["type"] == "integer"
    assert entry["url"]["type"] == "string"
    assert set(schemas["ErrorAnswer"]["required"]) == {"error", "detail"}


def test_documented_json_answers_match_what_is_sent(reader: TestClient, library: Any) -> None:
    """The answers carry exactly the properties their schemas list."""
    schemas = reader.get("/openapi.json").json()["components"]["schemas"]
    samples = {
        "StoreInfo": reader.get("/stores/single_population").json(),
        "StoreList": reader.get("/stores?limit=1").json(),
        "KeyList": reader.get("/stores/single_population/keys").json(),
        "KeyEntry": reader.get("/stores/single_population/keys").json()["keys"][0],
        "Health": reader.get("/healthz").json(),
        "ErrorAnswer": reader.get("/stores/nowhere").json(),
    }
    for name, sample in samples.items():
        assert set(sample) == set(schemas[name]["properties"]), name
    invalid = reader.get("/stores?limit=0").json()
    assert set(invalid) == set(schemas["ErrorAnswer"]["properties"])


def test_uploads_declare_their_bodies_for_the_browser_docs(openapi: dict[str, Any]) -> None:
    """Swagger UI offers a file picker only for a declared binary body or form field."""
    post = openapi["paths"]["/stores"]["post"]["requestBody"]
    assert post["required"] is True
    form = _resolve(openapi, post["content"]["multipart/form-data"]["schema"])
    assert form["required"] == ["file"]
    assert form["properties"]["file"]["format"] == "binary"
    name = form["properties"]["name"]
    assert name["type"] == "string"
    # An example to prefill the field with; without one Swagger UI makes one from the pattern.
    assert re.fullmatch(name["pattern"], name["examples"][0])

    put = openapi["paths"]["/stores/{name}"]["put"]["requestBody"]
    assert put["required"] is True
    assert put["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    put_form = _resolve(openapi, put["content"]["multipart/form-data"]["schema"])
    assert put_form["properties"]["file"]["format"] == "binary"


def test_every_error_status_has_examples_of_its_own_codes(openapi: dict[str, Any]) -> None:
    """Each documented error status shows examples with that status's codes, and only those."""
    from app.errors import ServiceError

    status_of: dict[str, int] = {}
    pending = [ServiceError]
    while pending:
        for error in pending.pop().__subclasses__():
            status_of[error.code] = error.status_code
            pending.append(error)
    errors = [item for item in _responses(openapi) if item[1].startswith(("4", "5"))]
    assert errors
    seen: dict[str, set[str]] = {}
    for operation, status, response in errors:
        examples = response["content"]["application/json"].get("examples", {})
        assert examples, f"{operation} {status} has no example"
        for name, example in examples.items():
            value = example["value"]
            assert set(value) == {"error", "detail"}
            assert value["error"] == name
            assert status_of[name] == int(status), f"{operation} {status}: {name}"
            seen.setdefault(status, set()).add(name)
    # Not one example repeated for every status, as it once was.
    assert seen["409"] == {"store_exists"}
    assert seen["413"] == {"upload_too_large", "json_too_large"}
    assert seen["404"] >= {"store_not_found", "key_not_found"}


def test_the_error_codes_are_listed_in_the_document(openapi: dict[str, Any]) -> None:
    described = openapi["components"]["schemas"]["ErrorAnswer"]["properties"]["error"]
    for code in ["store_not_found", "not_acceptable", "cross_origin_write", "method_not_allowed"]:
        assert f"`{code}`" in described["description"], code
