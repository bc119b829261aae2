"""A generated client: schemathesis, with all its checks, against a live server.

``schemathesis run`` tests every operation of the OpenAPI document with
generated cases (examples, coverage, fuzzing and stateful phases): no 500s,
every status, header, content type and body as documented, schema-violating
requests refused, 405 with an exact ``Allow`` for undocumented methods, and
more. It runs seeded and bounded (``MAX_EXAMPLES`` per operation, one worker),
so every run sends the same few thousand requests in a few seconds.

The server is ``python -m app`` started here: schemathesis's in-process
loader for a pytest fixture does not run under this pytest. The hooks in
``_schemathesis_hooks`` point path parameters at stores uploaded here, so the
cases reach the handlers instead of stopping at 404.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import _schemathesis_hooks as hooks
from ._server import ROOT, Server
from ._support import upload

pytestmark = pytest.mark.e2e

SEED = 20261126
MAX_EXAMPLES = 40
TIMEOUT = 120.0

#: The uploads' bodies can be schema-valid and still not be kastore files, and
#: an array asked for as text or rows may hold no UTF-8 or have no offsets:
#: what the data is, no schema can say. For those operations 422 is an
#: expected answer to valid data too. Everything else is schemathesis's defaults.
CONFIG = """
[[operations]]
include-name = ["POST /stores", "PUT /stores/{name}", "GET /stores/{name}/arrays/{key}"]
checks.positive_data_acceptance.expected-statuses = [
    "2xx", "3xx", "401", "403", "404", "409", "422", "429",
]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, testdata: Path) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("schemathesis")
    running = Server(folder / "data", folder / "server.log")
    try:
        running.start()
        for name in (hooks.READ_STORE, hooks.WRITE_STORE):
            upload(running.client, hooks.UPLOAD, name=name)
        listed = running.client.get(f"/stores/{hooks.READ_STORE}/keys").json()["keys"]
        assert set(hooks.KEYS) <= {entry["key"] for entry in listed}
        yield running
    finally:
        running.close()


def run_schemathesis(server: Server, folder: Path, *extra: str) -> str:
    """Run schemathesis with every check against ``server``; its report (stdout, stderr).

    ``extra`` options go after ``run``, such as ``--header`` with a key.
    """
    config = folder / "schemathesis.toml"
    config.write_text(CONFIG)
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.service._schemathesis_hooks",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--no-color",
        "--config-file",
        str(config),
        "run",
        f"{server.client.base_url}/openapi.json",
        *extra,
        "--checks=all",
        f"--seed={SEED}",
        f"--max-examples={MAX_EXAMPLES}",
        "--phases=examples,coverage,fuzzing,stateful",
        "--workers=1",
        "--request-timeout=10",
    ]
    result = subprocess.run(
        command, cwd=folder, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    return report


def test_schemathesis_finds_no_failure(server: Server, tmp_path: Path) -> None:
    report = run_schemathesis(server, tmp_path)
    paths = server.client.get("/openapi.json").json()["paths"]
    operations = sum(len(methods) for methods in paths.values())
    assert operations >= 9
    assert f"Tested: {operations}" in report, report  # every operation, none skipped
    assert " passed" in report and "failure" not in report, report
    log = server.output()
    assert "Traceback" not in log, log
