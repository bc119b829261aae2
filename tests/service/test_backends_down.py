"""A backend that goes away: requests get 503 with a JSON body, never a traceback."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from app.main import create_app
from tests._postgres import postgres_server
from tests._s3 import create_bucket, s3_credentials, s3_server

from ._support import error_of, service_settings, test_client, upload


def test_postgresql_down_answers_503(tmp_path: Path, tskit_file: Path) -> None:
    with contextlib.ExitStack() as app_running:
        with postgres_server() as url:
            settings = service_settings(tmp_path / "data", index_url=url, index_timeout=1.0)
            client = app_running.enter_context(test_client(create_app(settings)))
            upload(client, tskit_file, name="sim")
        # The server has stopped under the running app.
        for path in ["/stores/sim/keys", "/stores", "/stores/sim/file"]:
            body = error_of(client.get(path), 503)
            assert body["error"] == "storage_unavailable"
            assert "PostgreSQL" in body["detail"]
        assert error_of(client.delete("/stores/sim"), 503)["error"] == "storage_unavailable"
        assert client.get("/healthz").status_code == 503


def test_s3_down_answers_503(
    tmp_path: Path, tskit_file: Path, unicode_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with contextlib.ExitStack() as app_running:
        with s3_server() as endpoint:
            for name, value in s3_credentials(endpoint).items():
                monkeypatch.setenv(name, value)
            settings = service_settings(
                tmp_path / "data",
                blob_url=f"s3://{create_bucket(endpoint)}/p",
                s3_endpoint_url=endpoint,
            )
            client = app_running.enter_context(test_client(create_app(settings)))
            upload(client, tskit_file, name="sim")
            # Another store, never opened: reading its header needs the S3 server.
            upload(client, unicode_file, name="cold")
            client.get("/stores/sim/keys")
        # The S3 server has stopped; the index (SQLite) still answers.
        assert client.get("/stores").status_code == 200
        for path in ["/stores/sim/file", "/stores/cold/keys", "/stores/sim/arrays/edges/left"]:
            body = error_of(client.get(path), 503)
            assert body["error"] == "storage_unavailable"
            assert "S3" in body["detail"]
        assert client.get("/healthz").status_code == 503
