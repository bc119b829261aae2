"""Baseline endpoints for ``service_bench.py``, served by the same uvicorn as ``python -m app``.

    BENCH_SINK_DIR=/tmp/sink python -m uvicorn benchmarks._trivial_app:app

``GET /ping`` is the least a FastAPI async endpoint can do. ``PUT /sink/{name}``
writes the request body to ``$BENCH_SINK_DIR/name`` as it arrives, with no
hashing, validation or fsync: the naive upload. ``POST /form`` is FastAPI's own
multipart handling (``UploadFile``, spooled to a temporary file under
``$TMPDIR``), with nothing done to the file afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Request, UploadFile

app = FastAPI()


def _sink_dir() -> Path:
    return Path(os.environ.get("BENCH_SINK_DIR", "."))


@app.get("/ping")
async def ping() -> dict[str, bool]:
    return {"ok": True}


@app.put("/sink/{name}")
async def sink(name: str, request: Request) -> dict[str, int]:
    size = 0
    with open(_sink_dir() / Path(name).name, "wb") as out:
        async for chunk in request.stream():
            out.write(chunk)
            size += len(chunk)
    return {"size": size}


@app.post("/form")
async def form(file: UploadFile) -> dict[str, int | None]:
    return {"size": file.size}
