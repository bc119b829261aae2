"""Fixtures shared by the codec tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kastore


@pytest.fixture
def docs_example() -> dict[str, np.ndarray]:
    """The data of the example in the reference kastore documentation."""
    return {"one": np.arange(5, dtype=np.int8), "two": np.arange(5, dtype=np.uint64)}


@pytest.fixture
def docs_example_file(tmp_path: Path, docs_example: dict[str, np.ndarray]) -> Path:
    """The documentation's example written to ``tmp.kas``, as the docs do."""
    path = tmp_path / "tmp.kas"
    kastore.dump(docs_example, path)
    return path


def _engines() -> list[str]:
    from kastore import _cengine

    # Without the extension the C runs fail on purpose (see test_engines.py):
    # make test builds it, so its absence is a broken build, not a skip.
    return ["python", "c"] if _cengine.available() else ["python"]


@pytest.fixture(autouse=True, params=_engines())
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run every codec test with each engine as the default of ``load`` and ``dump``.

    Tests (or modules, or parameters) marked ``python_only`` exercise what only
    the Python engine does (memory maps, ``BytesIO``, lazy seekable reading) and
    run once.
    """
    name: str = request.param
    if name != "python":
        load, dump = kastore.load, kastore.dump

        def load_with(
            file: Any, read_all: bool = False, key_encoding: str = "utf-8", engine: str = name
        ) -> kastore.Store:
            return load(file, read_all, key_encoding, engine)

        def dump_with(
            data: Any, file: Any, key_encoding: str = "utf-8", engine: str = name
        ) -> None:
            dump(data, file, key_encoding, engine)

        monkeypatch.setattr(kastore, "load", load_with)
        monkeypatch.setattr(kastore, "dump", dump_with)
    return name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec else None
        if engine not in (None, "python") and item.get_closest_marker("python_only"):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
