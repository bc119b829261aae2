"""Agreement with files written by the reference kastore and by tskit."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kastore

from .._testdata import read_json, shared_stems
from ._support import assert_same_bytes, assert_store_equals, check_layout

WRITTEN = shared_stems("written-by-reference", ".kas")
V1 = shared_stems("reference/v1", ".kas")
TSKIT = shared_stems("tskit", ".trees")


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(array.tobytes()).hexdigest()


def _npz(path: Path) -> dict[str, np.ndarray]:
    """The input dict of a written-by-reference case; a zero-byte file means ``{}``."""
    if path.stat().st_size == 0:
        return {}
    with np.load(path) as npz:
        return dict(npz)


# --- written by the reference implementation ------------------------------------


@pytest.fixture
def written(testdata: Path) -> Path:
    return testdata / "written-by-reference"


@pytest.mark.parametrize("name", WRITTEN)
def test_dumps_is_byte_identical_to_the_reference(written: Path, name: str) -> None:
    data = _npz(written / f"{name}.npz")
    assert_same_bytes(kastore.dumps(data), (written / f"{name}.kas").read_bytes())


@pytest.mark.parametrize("name", WRITTEN)
def test_dump_to_a_path_is_byte_identical_to_the_reference(
    written: Path, name: str, tmp_path: Path
) -> None:
    kastore.dump(_npz(written / f"{name}.npz"), tmp_path / "out.kas")
    assert_same_bytes((tmp_path / "out.kas").read_bytes(), (written / f"{name}.kas").read_bytes())


@pytest.mark.parametrize("read_all", [False, True])
@pytest.mark.parametrize("name", WRITTEN)
def test_loading_the_reference_file_gives_the_arrays_back(
    written: Path, name: str, read_all: bool
) -> None:
    data = _npz(written / f"{name}.npz")
    with kastore.load(written / f"{name}.kas", read_all=read_all) as store:
        assert_store_equals(store, data)


@pytest.mark.parametrize("name", WRITTEN)
def test_reference_file_matches_the_manifest(written: Path, name: str) -> None:
    case = read_json(written / "manifest.json")[name]
    encoded = (written / f"{name}.kas").read_bytes()
    assert len(encoded) == case["size"]
    assert hashlib.sha256(encoded).hexdigest() == case["kas_sha256"]
    check_layout(encoded, _npz(written / f"{name}.npz"))
    with kastore.loads(encoded) as store:
        assert list(store) == sorted(case["keys"])
        for key, expected in case["keys"].items():
            assert str(store[key].dtype) == expected["dtype"], key
            assert len(store[key]) == expected["length"], key
            assert _sha256(store[key]) == expected["sha256"], key


def test_the_manifest_lists_every_written_case(written: Path) -> None:
    assert sorted(read_json(written / "manifest.json")) == WRITTEN


def test_extremes_survive_bit_for_bit(written: Path) -> None:
    data = _npz(written / "extremes.npz")
    floats = np.concatenate([v for v in data.values() if v.dtype.kind == "f"])
    # The case is only worth having if it holds what it says it does.
    assert np.isnan(floats).any() and np.isinf(floats).any()
    assert np.signbit(floats[floats == 0]).any()
    with kastore.loads(kastore.dumps(data)) as store:
        assert_store_equals(store, data)


# --- the reference implementation's own test files --------------------------------


@pytest.mark.parametrize("name", V1)
def test_reference_v1_files_hold_the_expected_values(testdata: Path, name: str) -> None:
    folder = testdata / "reference" / "v1"
    expected: dict[str, dict[str, Any]] = read_json(folder / "expected.json")[f"{name}.kas"]
    with kastore.load(folder / f"{name}.kas") as store:
        assert sorted(store) == sorted(expected)
        for key, case in expected.items():
            assert str(store[key].dtype) == case["dtype"], key
            assert len(store[key]) == case["length"], key
            assert store[key].tolist() == case["values"], key


def test_reference_v1_expected_json_covers_every_file(testdata: Path) -> None:
    folder = testdata / "reference" / "v1"
    assert sorted(read_json(folder / "expected.json")) == [f"{name}.kas" for name in V1]


# --- tskit ------------------------------------------------------------------------


@pytest.mark.parametrize("read_all", [False, True])
@pytest.mark.parametrize("name", TSKIT)
def test_tskit_files_match_the_manifest(testdata: Path, name: str, read_all: bool) -> None:
    case = read_json(testdata / "tskit" / "manifest.json")[f"{name}.trees"]
    path = testdata / "tskit" / f"{name}.trees"
    assert path.stat().st_size == case["size"]
    with kastore.load(path, read_all=read_all) as store:
        assert len(store) == case["num_keys"] == len(case["keys"])
        assert sorted(store) == sorted(case["keys"])
        for key, expected in case["keys"].items():
            assert str(store[key].dtype) == expected["dtype"], key
            assert len(store[key]) == expected["length"], key
            assert _sha256(store[key]) == expected["sha256"], key


@pytest.mark.parametrize("name", TSKIT)
def test_tskit_files_are_rewritten_byte_for_byte(testdata: Path, name: str) -> None:
    encoded = (testdata / "tskit" / f"{name}.trees").read_bytes()
    with kastore.loads(encoded) as store:
        assert_same_bytes(kastore.dumps(dict(store)), encoded)


@pytest.mark.parametrize("name", TSKIT)
def test_tskit_files_load_and_dump_to_the_same_bytes(
    testdata: Path, tmp_path: Path, name: str
) -> None:
    path = testdata / "tskit" / f"{name}.trees"
    with kastore.load(path) as store:
        kastore.dump(store, tmp_path / "again.trees")
    assert_same_bytes((tmp_path / "again.trees").read_bytes(), path.read_bytes())
