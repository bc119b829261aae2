"""API keys and scopes, the loopback rule for anonymous writes, and how /docs declares them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from app.__main__ import main
from app.config import Settings
from app.errors import all_errors
from app.security import KeyConfigError, KeyRing, Scope, hash_key

from ._support import TestClient, error_of
from .conftest import ClientFactory

KEYS = {"read": "reader-key-1", "write": "writer-key-22", "admin": "admin-key-333"}
KEY_LINES = "\n".join(
    [
        "# keys of the test server",
        *(f"{hash_key(key)} {scope}  # {scope} key" for scope, key in KEYS.items()),
    ]
)


def _bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _api_key(key: str) -> dict[str, str]:
    return {"x-api-key": key}


HEADER_FORMS = [_bearer, _api_key]


@pytest.fixture
def keyed(make_client: ClientFactory) -> TestClient:
    return make_client(api_keys=KEY_LINES)


def _writes(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    content = path.read_bytes()
    return [
        ("POST", "/stores", {"files": {"file": ("sim.trees", content)}, "data": {"name": "sim"}}),
        ("PUT", "/stores/sim", {"content": content}),
        ("DELETE", "/stores/sim", {}),
    ]


# --- scopes -------------------------------------------------------------------------


@pytest.mark.parametrize("form", HEADER_FORMS, ids=["bearer", "x-api-key"])
@pytest.mark.parametrize("scope", ["write", "admin"])
def test_a_key_with_write_may_create_replace_and_delete(
    keyed: TestClient, tskit_file: Path, scope: str, form: Any
) -> None:
    headers = form(KEYS[scope])
    statuses = [
        keyed.request(method, path, headers=headers, **kwargs).status_code
        for method, path, kwargs in _writes(tskit_file)
    ]
    assert statuses == [201, 200, 204]


@pytest.mark.parametrize("form", HEADER_FORMS, ids=["bearer", "x-api-key"])
def test_a_read_key_cannot_write_403(keyed: TestClient, tskit_file: Path, form: Any) -> None:
    upload_answer = keyed.put(
        "/stores/sim", content=tskit_file.read_bytes(), headers=_bearer(KEYS["write"])
    )
    assert upload_answer.status_code == 201
    for method, path, kwargs in _writes(tskit_file):
        answer = keyed.request(method, path, headers=form(KEYS["read"]), **kwargs)
        body = error_of(answer, 403)
        assert body["error"] == "insufficient_scope"
        assert "'read'" in body["detail"] and "'write'" in body["detail"]
        assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert keyed.get("/stores/sim").status_code == 200  # still there


def test_writes_without_a_key_are_401_with_www_authenticate(
    keyed: TestClient, tskit_file: Path
) -> None:
    for method, path, kwargs in _writes(tskit_file):
        answer = keyed.request(method, path, **kwargs)
        body = error_of(answer, 401)
        assert body["error"] == "missing_api_key"
        assert "Authorization: Bearer KEY" in body["detail"]
        assert "X-API-Key" in body["detail"]
        assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert keyed.get("/stores").json()["total"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        _bearer("not-a-key"),
        _api_key("not-a-key"),
        _bearer(KEYS["write"][:-1]),
        _bearer(KEYS["write"] + "x"),
        {"authorization": f"Basic {KEYS['write']}"},
        {"authorization": "Bearer"},
        _bearer(hash_key(KEYS["write"])),  # the hash is not the key
    ],
    ids=["bearer", "x-api-key", "prefix", "longer", "basic", "empty", "hash"],
)
def test_a_wrong_key_is_401_invalid(
    keyed: TestClient, tskit_file: Path, headers: dict[str, str]
) -> None:
    answer = keyed.put("/stores/sim", content=tskit_file.read_bytes(), headers=headers)
    assert error_of(answer, 401)["error"] == "invalid_api_key"
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert keyed.get("/stores").json()["total"] == 0


def test_x_api_key_is_used_beside_another_authorization_scheme(
    keyed: TestClient, tskit_file: Path
) -> None:
    headers = {"authorization": "Basic cHJveHk6cGFzcw==", **_api_key(KEYS["write"])}
    answer = keyed.put("/stores/sim", content=tskit_file.read_bytes(), headers=headers)
    assert answer.status_code == 201, answer.text


def test_reads_are_public_by_default_with_keys(keyed: TestClient, tskit_file: Path) -> None:
    keyed.put("/stores/sim", content=tskit_file.read_bytes(), headers=_bearer(KEYS["write"]))
    for path in ["/stores", "/stores/sim", "/stores/sim/keys", "/stores/sim/file"]:
        assert keyed.get(path).status_code == 200, path


@pytest.mark.parametrize("form", HEADER_FORMS, ids=["bearer", "x-api-key"])
def test_without_public_read_reads_need_a_read_key(
    make_client: ClientFactory, tskit_file: Path, form: Any
) -> None:
    client = make_client(api_keys=KEY_LINES, public_read=False)
    client.put("/stores/sim", content=tskit_file.read_bytes(), headers=_bearer(KEYS["write"]))
    for path in ["/stores", "/stores/sim", "/stores/sim/keys", "/stores/sim/arrays/edges/left"]:
        body = error_of(client.get(path), 401)
        assert body["error"] == "missing_api_key" and "'read'" in body["detail"]
        assert client.head(path).status_code == 401
        for scope in KEYS:  # every scope grants read
            assert client.get(path, headers=form(KEYS[scope])).status_code == 200, (path, scope)
    # Liveness and the documentation stay open.
    for path in ["/healthz", "/docs", "/openapi.json", "/redoc"]:
        assert client.get(path).status_code == 200, path


# --- no key configured: the loopback rule -------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_anonymous_writes_pass_on_loopback(
    make_client: ClientFactory, tskit_file: Path, host: str
) -> None:
    client = make_client(host=host)
    statuses = [
        client.request(method, path, **kwargs).status_code
        for method, path, kwargs in _writes(tskit_file)
    ]
    assert statuses == [201, 200, 204]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_anonymous_writes_are_refused_elsewhere_with_how_to_fix_it(
    make_client: ClientFactory, tskit_file: Path, host: str
) -> None:
    client = make_client(host=host)
    for method, path, kwargs in _writes(tskit_file):
        answer = client.request(method, path, **kwargs)
        body = error_of(answer, 401)
        assert body["error"] == "anonymous_write_refused"
        assert host in body["detail"]
        for hint in ["keys create", "KASTORE_API_KEYS", "KASTORE_ANONYMOUS_WRITE=true"]:
            assert hint in body["detail"]
        assert "www-authenticate" in answer.headers
    assert client.get("/stores").json()["total"] == 0  # reads stay public


def test_anonymous_writes_through_a_proxy_are_refused_even_on_loopback(
    client: TestClient, tskit_file: Path
) -> None:
    for header in ["x-forwarded-for", "forwarded"]:
        answer = client.put("/stores/sim", content=tskit_file.read_bytes(), headers={header: "x"})
        body = error_of(answer, 401)
        assert body["error"] == "anonymous_write_refused"
        assert "proxy" in body["detail"]


def test_anonymous_write_setting_accepts_writes_anywhere(
    make_client: ClientFactory, tskit_file: Path
) -> None:
    client = make_client(host="0.0.0.0", anonymous_write=True)
    statuses = [
        client.request(method, path, headers={"x-forwarded-for": "1.2.3.4"}, **kwargs).status_code
        for method, path, kwargs in _writes(tskit_file)
    ]
    assert statuses == [201, 200, 204]


def test_with_keys_loopback_gives_no_pass(make_client: ClientFactory, tskit_file: Path) -> None:
    client = make_client(api_keys=KEY_LINES, host="127.0.0.1", anonymous_write=True)
    answer = client.put("/stores/sim", content=tskit_file.read_bytes())
    assert error_of(answer, 401)["error"] == "missing_api_key"


@pytest.mark.parametrize(
    ("settings", "level", "words"),
    [
        ({"host": "0.0.0.0"}, "WARNING", ["refused", "KASTORE_ANONYMOUS_WRITE=true"]),
        ({"host": "127.0.0.1"}, "INFO", ["anonymous writes accepted", "loopback"]),
        ({"host": "0.0.0.0", "anonymous_write": True}, "WARNING", ["anyone"]),
        ({"host": "0.0.0.0", "api_keys": KEY_LINES}, "INFO", ["3 API key(s)"]),
    ],
)
def test_the_start_log_says_who_may_write(
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    settings: dict[str, Any],
    level: str,
    words: list[str],
) -> None:
    with caplog.at_level("INFO", logger="app"):
        make_client(**settings)
    lines = [record for record in caplog.records if record.name == "app"]
    assert len(lines) == 1, lines
    assert lines[0].levelname == level
    for word in words:
        assert word in lines[0].getMessage()


# --- the key configuration ----------------------------------------------------------


def test_keys_come_from_the_file_and_the_variable_together(
    make_client: ClientFactory, tmp_path: Path, tskit_file: Path
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{hash_key('from-file')} write\n")
    client = make_client(api_keys_file=key_file, api_keys=f"{hash_key('from-variable')} read,write")
    for key in ["from-file", "from-variable"]:
        answer = client.put("/stores/sim", content=tskit_file.read_bytes(), headers=_bearer(key))
        assert answer.status_code in (200, 201), answer.text


def test_the_key_file_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(KEY_LINES)
    monkeypatch.setenv("KASTORE_API_KEYS_FILE", str(key_file))
    ring = KeyRing.from_settings(Settings())
    assert len(ring) == 3
    assert ring.scope_of(KEYS["admin"]) is Scope.ADMIN
    assert ring.scope_of(KEYS["read"]) is Scope.READ
    assert ring.scope_of("nope") is None


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("abc write", ["line 2", "SHA-256", "64"]),
        (f"{hash_key('k')}", ["line 2", "no scope"]),
        (f"{hash_key('k')} delete", ["line 2", "unknown scope 'delete'"]),
        (f"{hash_key('k')} read,superuser", ["unknown scope 'superuser'"]),
    ],
    ids=["short-hash", "no-scope", "unknown-scope", "one-unknown"],
)
def test_a_malformed_key_line_names_the_line(line: str, words: list[str]) -> None:
    with pytest.raises(KeyConfigError) as caught:
        KeyRing.parse(f"# comment\n{line}\n", source="KASTORE_API_KEYS")
    for word in ["KASTORE_API_KEYS", *words]:
        assert word in str(caught.value)


def test_scopes_may_be_listed_and_in_any_case() -> None:
    digest = hash_key("k")
    assert KeyRing.parse(f"{digest.upper()} READ, Write", source="x").scope_of("k") is Scope.WRITE
    assert KeyRing.parse(f"  {digest}\tread  # note", source="x").scope_of("k") is Scope.READ


def test_keys_create_prints_a_key_once_and_the_line_that_configures_it(
    capsys: pytest.CaptureFixture[str], make_client: ClientFactory, tskit_file: Path
) -> None:
    assert main(["keys", "create", "--scope", "write"]) == 0
    first = capsys.readouterr().out
    assert main(["keys", "create", "--scope", "write"]) == 0
    second = capsys.readouterr().out
    lines = [line for line in first.splitlines() if line.strip()]
    key = lines[1]
    digest, scope = lines[-1].split()
    assert scope == "write"
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    assert len(key) >= 40 and key not in second
    client = make_client(api_keys=lines[-1], host="0.0.0.0")
    answer = client.put("/stores/sim", content=tskit_file.read_bytes(), headers=_bearer(key))
    assert answer.status_code == 201, answer.text


def test_keys_create_needs_a_known_scope(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keys", "create", "--scope", "root"])
    assert caught.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- the OpenAPI document ------------------------------------------------------------


def test_the_document_declares_both_schemes(keyed: TestClient) -> None:
    document = keyed.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key as `Authorization: Bearer KEY`.",
    }
    assert (schemes["apiKey"]["in"], schemes["apiKey"]["name"]) == ("header", "X-API-Key")
    paths = document["paths"]
    required = [{"bearer": []}, {"apiKey": []}]
    for path, method in [
        ("/stores", "post"),
        ("/stores/{name}", "put"),
        ("/stores/{name}", "delete"),
    ]:
        operation = paths[path][method]
        assert operation["security"] == required, (path, method)
        assert "`write` scope" in operation["description"]
        assert set(operation["responses"]) >= {"401", "403"}
        examples = operation["responses"]["401"]["content"]["application/json"]["examples"]
        assert {"missing_api_key", "invalid_api_key"} <= set(examples)
    assert paths["/stores/{name}/keys"]["get"]["security"] == [{}, *required]


def test_swagger_ui_keeps_the_key_entered_in_authorize(keyed: TestClient) -> None:
    assert '"persistAuthorization": true' in keyed.get("/docs").text


@pytest.mark.parametrize("form", HEADER_FORMS, ids=["bearer", "x-api-key"])
def test_reads_ignore_a_key_when_they_are_public(
    keyed: TestClient, tskit_file: Path, form: Any
) -> None:
    keyed.put("/stores/sim", content=tskit_file.read_bytes(), headers=_bearer(KEYS["write"]))
    assert keyed.get("/stores/sim/keys", headers=form(KEYS["read"])).status_code == 200


def test_the_api_description_lists_every_error_code(keyed: TestClient) -> None:
    description = keyed.get("/openapi.json").json()["info"]["description"]
    table = description.split("## Error codes", 1)[1]
    for error in all_errors():
        row = next(
            line for line in table.splitlines() if line.startswith(f"| {error.status_code} |")
        )
        assert f"`{error.code}`" in row, (error.code, row)
    for code in [
        "missing_api_key",
        "invalid_api_key",
        "insufficient_scope",
        "anonymous_write_refused",
    ]:
        assert f"`{code}`" in table
