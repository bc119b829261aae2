"""Fixtures shared by the codec tests."""

from __future__ import annotations

from pathlib import Path

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
