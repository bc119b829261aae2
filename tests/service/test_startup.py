"""``python -m app`` as an operator meets it: --help, and every start-up failure in one line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._server import ROOT, Server

pytestmark = pytest.mark.e2e

TIMEOUT = 30


def run_app(
    *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m app ARGS`` with only the given ``KASTORE_*`` variables."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("KASTORE_")}
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env={**clean, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the process failed with one line on stderr, and no traceback; return the line."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("kastore-service: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_help_prints_usage_and_the_settings_instead_of_serving() -> None:
    result = run_app("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: python -m app")
    for words in ["keys", "KASTORE_DATA_DIR", "KASTORE_API_KEYS_FILE", "KASTORE_CORS_ORIGINS"]:
        assert words in result.stdout
    keys_help = run_app("keys", "create", "--help")
    assert "--scope {read,write,admin}" in keys_help.stdout


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("KASTORE_PORT", "eighty", ["KASTORE_PORT='eighty'", "integer"]),
        ("KASTORE_LOG_LEVEL", "loud", ["KASTORE_LOG_LEVEL='loud'", "'info'"]),
        ("KASTORE_MAX_UPLOAD_BYTES", "-1", ["KASTORE_MAX_UPLOAD_BYTES"]),
        ("KASTORE_CORS_ORIGINS", "evil.example", ["KASTORE_CORS_ORIGINS", "scheme://host"]),
        ("KASTORE_PUBLIC_READ", "maybe", ["KASTORE_PUBLIC_READ", "boolean"]),
    ],
)
def test_an_invalid_setting_is_one_line(
    tmp_path: Path, variable: str, value: str, words: list[str]
) -> None:
    result = run_app(env={"KASTORE_DATA_DIR": str(tmp_path / "data"), variable: value})
    line = one_line_failure(result)
    assert "invalid setting" in line
    for word in words:
        assert word in line
    assert not (tmp_path / "data").exists()  # nothing touched


def test_a_taken_port_is_one_line(tmp_path: Path, taken_port: int) -> None:
    env = {"KASTORE_DATA_DIR": str(tmp_path / "data"), "KASTORE_PORT": str(taken_port)}
    line = one_line_failure(run_app(env=env))
    assert f"127.0.0.1:{taken_port}" in line
    assert "address already in use" in line
    assert "KASTORE_PORT" in line


def _unprivileged() -> list[str]:
    """A command prefix that runs without the powers to write where one may not."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv (util-linux) cannot drop its file permissions")
    return [setpriv, "--bounding-set=-all"]  # root, but without CAP_DAC_OVERRIDE


def test_a_data_dir_owned_by_another_user_says_to_chown_or_use_user(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    if os.geteuid() == 0:
        os.chown(data, 10001, 10001)  # a host folder of another user, as bind-mounted
    data.chmod(0o755 if os.geteuid() == 0 else 0o555)
    line = one_line_failure(run_app(env={"KASTORE_DATA_DIR": str(data)}, prefix=_unprivileged()))
    assert "not writable" in line
    assert f"{data}/" in line  # the file or folder that could not be made
    assert "chown -R 10001" in line
    assert "--user" in line


def test_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory")
    line = one_line_failure(run_app(env={"KASTORE_DATA_DIR": str(data)}))
    assert str(data) in line
    assert "KASTORE_DATA_DIR" in line


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"KASTORE_API_KEYS_FILE": "/nonexistent/keys"}, ["/nonexistent/keys", "cannot read"]),
        ({"KASTORE_API_KEYS": "0123 write"}, ["KASTORE_API_KEYS, line 1", "SHA-256"]),
    ],
    ids=["missing-file", "bad-line"],
)
def test_unusable_keys_are_one_line(tmp_path: Path, env: dict[str, str], words: list[str]) -> None:
    line = one_line_failure(run_app(env={"KASTORE_DATA_DIR": str(tmp_path / "data"), **env}))
    for word in words:
        assert word in line


def test_listening_on_all_interfaces_without_a_key_refuses_writes_and_says_so(
    tmp_path: Path, tskit_file: Path
) -> None:
    server = Server(tmp_path / "data", tmp_path / "server.log", env={"KASTORE_HOST": "0.0.0.0"})
    server.start()
    try:
        answer = server.client.put("/stores/sim", content=tskit_file.read_bytes())
        assert answer.status_code == 401
        assert answer.json()["error"] == "anonymous_write_refused"
        assert "0.0.0.0" in answer.json()["detail"]
        assert server.client.get("/stores").status_code == 200
        server.stop(signal.SIGTERM)
        start = [
            line
            for line in map(json.loads, server.output().splitlines())
            if line["logger"] == "app" and "API key" in line["message"]
        ]
        assert len(start) == 1, server.output()
        assert start[0]["level"] == "WARNING"
        assert "KASTORE_ANONYMOUS_WRITE=true" in start[0]["message"]
    finally:
        server.close()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        (
            {"KASTORE_INDEX_URL": "postgresql://nobody@127.0.0.1:1/none"},
            ["cannot connect to the index", "127.0.0.1:1"],
        ),
        (
            {
                "KASTORE_BLOB_URL": "s3://no-such-bucket/p",
                "KASTORE_S3_ENDPOINT_URL": "http://127.0.0.1:1",
                "AWS_ACCESS_KEY_ID": "x",
                "AWS_SECRET_ACCESS_KEY": "x",
                "AWS_REGION": "us-east-1",
            },
            ["no-such-bucket", "127.0.0.1:1", "KASTORE_S3_ENDPOINT_URL"],
        ),
        ({"KASTORE_INDEX_URL": "mysql://db/x"}, ["KASTORE_INDEX_URL"]),
        ({"KASTORE_BLOB_URL": "/data/blobs"}, ["KASTORE_BLOB_URL"]),
    ],
    ids=["postgres-unreachable", "s3-unreachable", "index-not-postgres", "blobs-not-s3"],
)
def test_unusable_backends_are_one_line(
    tmp_path: Path, env: dict[str, str], words: list[str]
) -> None:
    line = one_line_failure(run_app(env={"KASTORE_DATA_DIR": str(tmp_path / "data"), **env}))
    for word in words:
        assert word in line
