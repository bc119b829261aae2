"""Helpers shared by the service tests: settings, clients, uploads, shared file names.

``TestClient`` comes from here, imported once: starlette asks for ``httpx2``
instead of ``httpx`` with a ``StarletteDeprecationWarning``, which pytest turns
into an error. Only that warning, and only at this import, is ignored.

Make clients with ``test_client(app)``: starlette's ``TestClient`` decodes the
path twice (starlette#2587), so ``/arrays/a%2520b`` would reach the app as
``a b`` instead of ``a%20b``, which no real server does.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from starlette.exceptions import StarletteDeprecationWarning

import kastore
from app.config import Settings
from kastore._format import ARRAY_ALIGN, HEADER, HEADER_SIZE, ITEM_DESCRIPTOR, MAGIC, TYPE_CODES

from .._testdata import TESTDATA, read_json, shared_files

with warnings.catch_warnings():
    warnings.filterwarnings(
        "ignore",
        message="Using `httpx` with `starlette.testclient` is deprecated",
        category=StarletteDeprecationWarning,
    )
    from fastapi.testclient import TestClient

__all__ = [
    "TESTDATA",
    "TRICKY_KEYS",
    "TestClient",
    "arrays_of",
    "assert_serves",
    "error_of",
    "leftovers",
    "multipart_body",
    "multipart_type",
    "read_json",
    "service_settings",
    "sha256",
    "shared_files",
    "stored_names",
    "test_client",
    "upload",
    "write_big",
    "write_tricky",
    "write_unsorted",
]

#: The rule every invalid store name is answered with.
NAME_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"


def _escape_percent_signs(request: httpx.Request) -> None:
    # TestClient unquotes the already decoded path once more: give it one more
    # level of quoting, so the app sees the path a real server would decode.
    path, mark, query = request.url.raw_path.partition(b"?")
    request.url = request.url.copy_with(raw_path=path.replace(b"%", b"%25") + mark + query)


def test_client(app: Any) -> TestClient:
    """A client of ``app`` that sends paths as a real server receives them.

    Use it as a context manager, so the app's lifespan runs. It asks for
    stored bytes (``Accept-Encoding: identity``) unless a request says
    otherwise: compressed answers are tested on their own.
    """
    client = TestClient(app, headers={"accept-encoding": "identity"})
    client.event_hooks = {"request": [_escape_percent_signs], "response": []}
    return client


test_client.__test__ = False  # type: ignore[attr-defined]


def service_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for one test: every field given, so no ``KASTORE_*`` variable leaks in."""
    values = {name: field.default for name, field in Settings.model_fields.items()}
    # Removed files go at once, so that tests can see that they went.
    values.update(data_dir=data_dir, fsync=False, removal_delay=0.0)
    values.update(overrides)
    return Settings(**values)


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(client: httpx.Client, path: Path, *, name: str | None = None) -> dict[str, Any]:
    """POST ``path`` as ``curl -F file=@path [-F name=NAME]`` does; assert 201."""
    data = {} if name is None else {"name": name}
    answer = client.post("/stores", files={"file": (path.name, path.read_bytes())}, data=data)
    assert answer.status_code == 201, answer.text
    info: dict[str, Any] = answer.json()
    return info


def multipart_body(*parts: tuple[str, str | None, bytes], boundary: str = "b0undary") -> bytes:
    """A ``multipart/form-data`` body with the parts in the given order.

    Each part is ``(field, filename or None, value)``. httpx always puts plain
    fields before files; curl keeps the command line's order, so a test of
    ``curl -F file=@x -F name=y`` needs this.
    """
    out = bytearray()
    for field, filename, value in parts:
        disposition = f'form-data; name="{field}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def multipart_type(boundary: str = "b0undary") -> dict[str, str]:
    return {"content-type": f"multipart/form-data; boundary={boundary}"}


def error_of(answer: httpx.Response, status: int) -> dict[str, str]:
    """Assert an error answer with ``status`` and the documented JSON body; return it."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    body: dict[str, str] = answer.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] and body["detail"], body
    return body


def stored_names(client: httpx.Client) -> list[str]:
    listing = client.get("/stores", params={"limit": 1000}).json()
    return [store["name"] for store in listing["stores"]]


def leftovers(data_dir: Path) -> list[Path]:
    """Files in the data directory's ``tmp/`` and ``blobs/``: a refused upload leaves none."""
    folders = [data_dir / "tmp", data_dir / "blobs"]
    assert all(folder.is_dir() for folder in folders), f"no tmp/ or blobs/ in {data_dir}"
    return sorted(path for folder in folders for path in _files(folder))


def _files(folder: Path) -> Iterator[Path]:
    return (path for path in folder.rglob("*") if path.is_file())


def arrays_of(path: Path) -> dict[str, np.ndarray]:
    """Every array of a kastore file, in file order, copied out of the file."""
    with kastore.load(path) as store:
        return {key: np.array(store[key]) for key in store}


#: How many arrays ``assert_serves`` downloads at most (the tskit files have 62).
ARRAYS_CHECKED = 8


def assert_serves(client: httpx.Client, name: str, content: bytes) -> None:
    """The store ``name`` holds ``content``: its description, keys and arrays.

    Up to ``ARRAYS_CHECKED`` arrays, spread over the file, are downloaded.
    """
    info = client.get(f"/stores/{name}").json()
    assert (info["sha256"], info["size"]) == (sha256(content), len(content)), info
    listing = client.get(info["keys_url"]).json()["keys"]
    with kastore.loads(content) as expected:
        assert [entry["key"] for entry in listing] == list(expected)
        step = max(1, -(-len(listing) // ARRAYS_CHECKED))
        for entry in [*listing[::step], *listing[-1:]]:
            answer = client.get(entry["url"])
            assert answer.status_code == 200, (entry, answer.text)
            assert answer.content == expected[entry["key"]].tobytes(), entry


def write_big(path: Path) -> Path:
    """Arrays larger than one JSON piece (65,536 elements) and one raw piece (1 MiB).

    NaN and ±inf sit on both sides of the JSON pieces' boundary.
    """
    floats = np.linspace(0.0, 1.0, 3 * (1 << 16) + 5)
    floats[[0, (1 << 16) - 1, 1 << 16, (1 << 17) + 1, -1]] = [np.nan, np.inf, -np.inf, np.nan, -0.0]
    data = {
        "floats": floats,
        "ints": np.arange(-(1 << 17), 1 << 17, dtype=np.int64) * 3_000_000_000,
        "bytes": np.arange(3 << 20, dtype=np.uint32).astype(np.uint8),
    }
    kastore.dump(data, path)
    return path


#: Keys a URL could mangle: dot segments, empty segments, percent signs, controls.
TRICKY_KEYS = [
    ".",
    "..",
    "...",
    "a/./b",
    "a/../b",
    "../escape",
    "a//b",
    "/leading",
    "trailing/",
    "%",
    "%2F",
    "%41",
    "100%",
    "+plus+",
    "semi;colon",
    "back\\slash",
    "tab\tkey",
    "new\nline",
    "quote\"s'",
    "<tag>",
    "q?x=1&y#z%20",
    "\u00a0nbsp",
    "\u202eright-to-left",
]


def write_tricky(path: Path) -> Path:
    """A store whose keys are ``TRICKY_KEYS``; key ``i`` holds ``arange(i + 1)``."""
    kastore.dump({key: np.arange(i + 1, dtype=np.int16) for i, key in enumerate(TRICKY_KEYS)}, path)
    return path


def write_unsorted(path: Path, keys: list[str]) -> Path:
    """A valid file whose keys are not in sorted order (the writers always sort them)."""
    encoded = [key.encode() for key in keys]
    arrays = [np.arange(i + 1, dtype=np.int32) for i in range(len(keys))]
    n = len(keys)
    descriptors = np.zeros(n, ITEM_DESCRIPTOR)
    offset = HEADER_SIZE + n * ITEM_DESCRIPTOR.itemsize
    for i, key in enumerate(encoded):
        descriptors[i]["key_start"], descriptors[i]["key_len"] = offset, len(key)
        offset += len(key)
    body = bytearray(b"".join(encoded))
    position = offset
    for i, array in enumerate(arrays):
        position = -(-position // ARRAY_ALIGN) * ARRAY_ALIGN
        descriptors[i]["type"] = TYPE_CODES[(array.dtype.kind, array.dtype.itemsize)]
        descriptors[i]["array_start"], descriptors[i]["array_len"] = position, len(array)
        position += array.nbytes
    out = bytearray(HEADER.pack(MAGIC, 1, 0, n, position))
    out += descriptors.tobytes() + body
    for i, array in enumerate(arrays):
        out += bytes(int(descriptors[i]["array_start"]) - len(out)) + array.tobytes()
    path.write_bytes(bytes(out))
    return path
