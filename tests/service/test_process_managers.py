"""The app run by uvicorn's own command line, with several workers, as process managers do."""

from __future__ import annotations

from pathlib import Path

import pytest

from ._server import Server
from ._support import upload


@pytest.mark.parametrize(
    "target",
    [
        ["app.main:app", "--http", "app.server:EnvironmentProtocol"],
        ["app.main:create_app", "--factory"],
    ],
    ids=["app", "factory"],
)
def test_uvicorn_with_two_workers_serves_one_storage(
    tmp_path: Path, tskit_file: Path, target: list[str]
) -> None:
    args = ["-m", "uvicorn", *target, "--workers", "2", "--port", "{port}"]
    server = Server(tmp_path / "data", tmp_path / "server.log", args=args)
    try:
        server.start()
        upload(server.client, tskit_file, name="sim")
        # New connections land on either worker: every one finds the store.
        for _ in range(20):
            server.client.headers["connection"] = "close"
            answer = server.client.get("/stores/sim/file")
            assert answer.status_code == 200
            assert answer.content == tskit_file.read_bytes()
    finally:
        server.close()
    assert "Traceback" not in server.output()
