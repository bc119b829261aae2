"""The real app, served by uvicorn on 127.0.0.1 in a thread, for the client tests.

A middleware in front of it records every request (method, path, query and
headers), the headers of every answer and the bytes of its body, so tests
can see what the client sent and what it was sent.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from app.main import create_app

from ..service._support import service_settings

START_TIMEOUT = 30.0


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_bytes: int = 0
    answer_headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorder:
    """An ASGI middleware that records requests, the answers' headers and their body bytes."""

    app: Any
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        entry = Seen(
            method=scope["method"],
            path=scope["path"],
            query=scope["query_string"].decode(),
            headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
        )
        self.seen.append(entry)

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry.answer_headers = {
                    k.decode().lower(): v.decode() for k, v in message.get("headers", [])
                }
            if message["type"] == "http.response.body":
                entry.body_bytes += len(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, counting_send)


@dataclass
class Live:
    url: str
    recorder: Recorder
    port: int

    @property
    def seen(self) -> list[Seen]:
        return self.recorder.seen

    def clear(self) -> None:
        self.recorder.seen.clear()


@contextlib.contextmanager
def serving(data_dir: Path, **settings: Any) -> Iterator[Live]:
    """The app with ``settings`` on ``data_dir``, listening on a free port of 127.0.0.1."""
    recorder = Recorder(create_app(service_settings(data_dir, **settings)))
    config = uvicorn.Config(
        recorder, host="127.0.0.1", port=0, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the app did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Live(url=f"http://127.0.0.1:{port}", recorder=recorder, port=port)
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The app with no API keys (anyone on loopback may write)."""
    with serving(tmp_path_factory.mktemp("client-data")) as live:
        yield live


@pytest.fixture
def tskit_file(testdata: Path) -> Path:
    return testdata / "tskit" / "single_population.trees"
