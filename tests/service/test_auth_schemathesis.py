"""schemathesis, with all its checks, against a server whose every operation needs a key.

The OpenAPI document then declares both key schemes on every operation but
``/healthz``; schemathesis sends the key given here, and also cases without
it or with a wrong one, which must get the documented 401s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.security import hash_key

from . import _schemathesis_hooks as hooks
from ._server import Server
from .test_schemathesis import run_schemathesis

pytestmark = pytest.mark.e2e

KEY = "schemathesis-writer"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("schemathesis-keys")
    env = {"KASTORE_API_KEYS": f"{hash_key(KEY)} write", "KASTORE_PUBLIC_READ": "false"}
    running = Server(folder / "data", folder / "server.log", env=env)
    try:
        running.start()
        for name in (hooks.READ_STORE, hooks.WRITE_STORE):
            answer = running.client.put(
                f"/stores/{name}", content=hooks.UPLOAD.read_bytes(), headers=AUTH
            )
            assert answer.status_code == 201, answer.text
        yield running
    finally:
        running.close()


def test_schemathesis_finds_no_failure_with_keys(keyed_server: Server, tmp_path: Path) -> None:
    assert keyed_server.client.get("/stores").status_code == 401  # the key is needed
    report = run_schemathesis(keyed_server, tmp_path, "--header", f"Authorization: Bearer {KEY}")
    assert " passed" in report and "failure" not in report, report
    log = keyed_server.output()
    assert "Traceback" not in log, log
