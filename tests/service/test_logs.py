"""One JSON log line per request, with a request id that the answer carries back."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._server import Server
from ._support import TestClient, upload

#: What every request's line holds.
FIELDS = {
    "time",
    "level",
    "logger",
    "message",
    "method",
    "path",
    "route",
    "status",
    "bytes_sent",
    "bytes_received",
    "duration_ms",
    "request_id",
    "client",
}


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [record.__dict__["fields"] for record in caplog.records if record.name == "app.access"]


def test_each_request_logs_one_line_with_its_facts(
    client: TestClient, tskit_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = tskit_file.read_bytes()
    with caplog.at_level("INFO", logger="app.access"):
        client.put("/stores/sim", content=content)
        answer = client.get("/stores/sim/arrays/edges/left")
        client.get("/stores/nope")
    put, get, missing = access_lines(caplog)
    assert put["method"] == "PUT" and put["route"] == "/stores/{name}"
    assert (put["status"], put["bytes_received"]) == (201, len(content))
    assert get["path"] == "/stores/sim/arrays/edges/left"
    assert get["route"] == "/stores/{name}/arrays/{key}"
    assert (get["status"], get["bytes_sent"]) == (200, len(answer.content))
    assert get["request_id"] == answer.headers["x-request-id"]
    assert get["duration_ms"] > 0
    assert (missing["status"], missing["error"]) == (404, "store_not_found")
    assert "error" not in get


def test_the_request_id_is_taken_from_the_client_or_made(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="app.access"):
        given = client.get("/healthz", headers={"x-request-id": "trace-42.a_b"})
        made = [client.get("/healthz") for _ in range(2)]
        bad = client.get("/healthz", headers={"x-request-id": "has space"})
        long = client.get("/healthz", headers={"x-request-id": "x" * 129})
    assert given.headers["x-request-id"] == "trace-42.a_b"
    ids = [answer.headers["x-request-id"] for answer in [*made, bad, long]]
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) for rid in ids), ids
    assert len(set(ids)) == len(ids)
    assert [line["request_id"] for line in access_lines(caplog)] == ["trace-42.a_b", *ids]


def test_errors_carry_the_request_id_too(client: TestClient) -> None:
    answer = client.get("/stores/nope", headers={"x-request-id": "abc"})
    assert answer.status_code == 404
    assert answer.headers["x-request-id"] == "abc"


def test_nothing_is_logged_per_request_above_info(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="app.access"):
        client.get("/healthz")
    assert access_lines(caplog) == []


# --- the real server's output ---------------------------------------------------------


@pytest.fixture
def running(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    server = Server(tmp_path / "data", tmp_path / "server.log", env=request.param)
    server.start()
    try:
        yield server
    finally:
        server.close()


def _json_lines(output: str) -> list[dict[str, Any]]:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, "the server wrote nothing"
    parsed = []
    for line in lines:
        entry = json.loads(line)  # every line is JSON
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        parsed.append(entry)
    return parsed


@pytest.mark.e2e
@pytest.mark.parametrize("running", [{"KASTORE_LOG_LEVEL": "INFO"}], indirect=True)
def test_the_server_writes_json_lines_only_and_no_uvicorn_access_log(
    running: Server, tskit_file: Path
) -> None:
    upload(running.client, tskit_file, name="sim")
    answer = running.client.get("/stores/sim/keys", headers={"x-request-id": "from-client"})
    assert answer.headers["x-request-id"] == "from-client"
    running.client.get("/stores/sim/keys")
    running.stop(signal.SIGTERM)  # lets the last lines be written
    entries = _json_lines(running.output())
    requests = [entry for entry in entries if entry["logger"] == "app.access"]
    keys = [entry for entry in requests if entry["route"] == "/stores/{name}/keys"]
    assert len(keys) == 2, requests
    assert set(keys[0]) >= FIELDS
    assert keys[0]["request_id"] == "from-client"
    assert [entry["status"] for entry in keys] == [200, 200]
    assert keys[0]["bytes_sent"] == len(answer.content)
    assert "HTTP/1.1" not in running.output()  # uvicorn's own access line
    assert any(entry["message"] == "Application startup complete." for entry in entries)


@pytest.mark.e2e
@pytest.mark.parametrize("running", [{"KASTORE_LOG_LEVEL": "Warning"}], indirect=True)
def test_the_log_level_takes_any_case(running: Server) -> None:
    running.client.get("/healthz")
    running.client.get("/stores")
    running.stop(signal.SIGTERM)  # lets the last lines be written
    entries = _json_lines(running.output()) if running.output().strip() else []
    assert [entry for entry in entries if entry["level"] in ("INFO", "DEBUG")] == []
