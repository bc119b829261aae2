"""The two engines: both built, interchangeable, and a clear error without the C one."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import kastore
from kastore import _cengine

pytestmark = pytest.mark.python_only  # these tests pick their engines themselves

DATA = {
    "b": np.arange(5.0),
    "a": np.arange(3, dtype=np.int8),
    "big-endian": np.arange(4, dtype=">i4"),
    "strided": np.arange(10, dtype=np.uint16)[::3],
    "list": [1, 2, 3],
    "é/unicode key": np.zeros(0, np.uint64),
}


def test_the_c_engine_is_built() -> None:
    """``make test`` builds the extension: without it the C engine goes untested."""
    assert _cengine.available(), "the C extension was not built (is there a C compiler?)"


@pytest.mark.parametrize("writer", ["python", "c"])
@pytest.mark.parametrize("reader", ["python", "c"])
def test_each_engine_reads_what_the_other_writes(tmp_path: Path, writer: str, reader: str) -> None:
    path = tmp_path / "x.kas"
    kastore.dump(DATA, path, engine=writer)
    assert path.read_bytes() == kastore.dumps(DATA)
    with kastore.load(path, engine=reader) as store:
        assert list(store) == sorted(DATA)
        for key, value in DATA.items():
            assert np.array_equal(store[key], np.asarray(value)), key
            assert not store[key].flags.writeable


@pytest.mark.parametrize("engine", ["python", "c"])
def test_other_key_encodings(tmp_path: Path, engine: str) -> None:
    data = {"\u00e9t\u00e9": np.arange(3), "z": np.arange(2)}
    path = tmp_path / "latin.kas"
    kastore.dump(data, path, key_encoding="latin-1", engine=engine)
    assert path.read_bytes() == kastore.dumps(data, key_encoding="latin-1")
    assert sorted(kastore.load(path, key_encoding="latin-1", engine=engine)) == sorted(data)


def test_the_c_engine_arrays_outlive_the_store(tmp_path: Path) -> None:
    path = tmp_path / "x.kas"
    kastore.dump({"a": np.arange(100_000)}, path)
    store = kastore.load(path, engine="c")
    array = store["a"]
    store.close()
    del store
    assert int(array.sum()) == sum(range(100_000))


WITHOUT_EXTENSION = """
import sys
sys.modules["kastore._ckastore"] = None  # as if built without a C compiler
import numpy as np, kastore
for call in (lambda: kastore.load(sys.argv[1], engine="c"),
             lambda: kastore.dump({"a": np.arange(3)}, sys.argv[1] + ".out", engine="c")):
    try:
        call()
    except RuntimeError as err:
        print(err)
print(sorted(kastore.load(sys.argv[1])))
"""


def test_without_the_extension_the_c_engine_says_so(tmp_path: Path) -> None:
    path = tmp_path / "x.kas"
    kastore.dump({"a": np.arange(3)}, path)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WITHOUT_EXTENSION), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert all(line.startswith("C engine not available: ") for line in lines[:2])
    assert lines[2] == "['a']"
    assert not (tmp_path / "x.kas.out").exists()


def test_importing_the_main_module_runs_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import kastore.__main__; print('imported')"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == "imported\n"


@pytest.mark.parametrize(("read_all", "mapped"), [(False, True), (True, False)])
def test_the_c_engine_maps_a_regular_file_unless_read_all(
    tmp_path: Path, read_all: bool, mapped: bool
) -> None:
    import mmap

    path = tmp_path / "x.kas"
    kastore.dump({"x": np.arange(1000.0)}, path)
    with kastore.load(path, read_all=read_all, engine="c") as store:
        base = store["x"].base
        assert isinstance(base, memoryview)
        assert isinstance(base.obj, mmap.mmap) is mapped
        assert store["x"][-1] == 999.0
