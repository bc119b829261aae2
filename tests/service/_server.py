"""A real server for tests: ``python -m app`` in a subprocess, killed whatever happens.

Every wait has a timeout, so a server that hangs fails the test instead.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

__all__ = ["ROOT", "Server", "running"]

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """One ``python -m app`` process on a data directory, logging to a file."""

    def __init__(
        self,
        data_dir: Path,
        log: Path,
        *,
        env: dict[str, str] | None = None,
        open_files: int | None = None,
        args: Sequence[str] = ("-m", "app"),
    ) -> None:
        """``open_files``: the process's limit of open files (soft and hard), if given.

        ``args``: Python's arguments, ``{port}`` standing for the port to listen on.
        """
        self.args = list(args)
        self.data_dir = data_dir
        self.log = log
        self.env = env or {}
        self.open_files = open_files
        self.process: subprocess.Popen[bytes] | None = None
        self.client = httpx.Client(timeout=10.0)

    def start(self) -> None:
        for _attempt in range(3):  # another process may take the free port first
            port = _free_port()
            self.client.base_url = httpx.URL(f"http://127.0.0.1:{port}")
            env = {key: value for key, value in os.environ.items() if "KASTORE_" not in key}
            env.update(
                KASTORE_DATA_DIR=str(self.data_dir),
                KASTORE_PORT=str(port),
                KASTORE_LOG_LEVEL="info",
                PYTHONUNBUFFERED="1",
            )
            env.update(self.env)
            with self.log.open("ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, *(arg.format(port=port) for arg in self.args)],
                    cwd=ROOT,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=self._limit if self.open_files else None,
                    # Its own process group: worker processes go with it (``kill``).
                    start_new_session=True,
                )
            if self._wait_until_healthy():
                return
            if "address already in use" not in self.output().lower():
                break
        pytest.fail(f"the server did not start:\n{self.output()}")

    def _limit(self) -> None:
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def _wait_until_healthy(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/healthz", timeout=1.0).status_code == 200:
                    return True
            time.sleep(0.05)
        self.kill()
        return False

    def stop(self, sig: signal.Signals) -> int:
        """Send ``sig`` and wait for the process to end; return its exit status."""
        assert self.process is not None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the server did not stop within {STOP_TIMEOUT} s of {sig.name}")

    def kill(self) -> None:
        """Kill the server and every process it started (uvicorn's workers)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=STOP_TIMEOUT)

    def close(self) -> None:
        self.kill()
        self.client.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@contextlib.contextmanager
def running(folder: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """A started server on ``folder/data``, logging to ``folder/server.log``, closed at the end."""
    server = Server(folder / "data", folder / "server.log", env=env)
    server.start()
    try:
        yield server
    finally:
        server.close()
