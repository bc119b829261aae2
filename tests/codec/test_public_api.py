"""The public surface: exactly the intended names, the reference signatures, the docs example."""

from __future__ import annotations

import inspect
import io
import os
import types
from pathlib import Path

import numpy as np
import pytest

import kastore

#: In isort-style order (constants, then classes, then functions), as ruff keeps it.
EXPECTED_ALL = [
    "C_ENGINE",
    "PY_ENGINE",
    "ArrayInfo",
    "FileFormatError",
    "KastoreException",
    "Store",
    "StoreClosedError",
    "VersionTooNewError",
    "VersionTooOldError",
    "__version__",
    "dump",
    "dumps",
    "get_include",
    "load",
    "loads",
]


def test_all_is_exactly_the_intended_names_in_order() -> None:
    assert kastore.__all__ == EXPECTED_ALL


@pytest.mark.parametrize("name", EXPECTED_ALL)
def test_every_exported_name_exists(name: str) -> None:
    assert getattr(kastore, name) is not None


def test_nothing_public_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(kastore).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        # `from __future__ import annotations` leaves a harmless `annotations` behind.
        and type(value).__module__ != "__future__"
    }
    assert public == set(EXPECTED_ALL) - {"__version__"}


def test_engine_names_are_the_references() -> None:
    assert (kastore.PY_ENGINE, kastore.C_ENGINE) == ("python", "c")


def test_version_is_a_string() -> None:
    assert isinstance(kastore.__version__, str) and kastore.__version__


def test_get_include_is_a_directory() -> None:
    include = kastore.get_include()
    assert isinstance(include, str)
    assert os.path.isabs(include)
    assert os.path.isdir(include)


@pytest.mark.parametrize(
    ("function", "parameters"),
    [
        (
            kastore.load,
            [("file", None), ("read_all", False), ("key_encoding", "utf-8"), ("engine", "python")],
        ),
        (kastore.loads, [("encoded_data", None), ("key_encoding", "utf-8")]),
        (
            kastore.dump,
            [("data", None), ("file", None), ("key_encoding", "utf-8"), ("engine", "python")],
        ),
        (kastore.dumps, [("data", None), ("key_encoding", "utf-8")]),
        (kastore.get_include, []),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_signatures_match_the_reference(
    function: object, parameters: list[tuple[str, object]]
) -> None:
    """Positional order and defaults as the reference API documents them."""
    signature = inspect.signature(function)  # type: ignore[arg-type]
    found = [
        (p.name, None if p.default is inspect.Parameter.empty else p.default)
        for p in signature.parameters.values()
    ]
    assert found == parameters
    assert all(
        p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in signature.parameters.values()
    )


@pytest.mark.parametrize(
    ("exception", "bases"),
    [
        (kastore.KastoreException, (Exception,)),
        (kastore.FileFormatError, (kastore.KastoreException, ValueError)),
        (kastore.VersionTooOldError, (kastore.FileFormatError,)),
        (kastore.VersionTooNewError, (kastore.FileFormatError,)),
        (kastore.StoreClosedError, (kastore.KastoreException,)),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_exception_tree(exception: type, bases: tuple[type, ...]) -> None:
    assert all(issubclass(exception, base) for base in bases)


def test_store_closed_error_is_not_a_file_format_error() -> None:
    assert not issubclass(kastore.StoreClosedError, (kastore.FileFormatError, ValueError))


def test_a_format_error_is_caught_as_a_value_error() -> None:
    with pytest.raises(ValueError):
        kastore.loads(b"x" * 64)


@pytest.mark.parametrize("exception", [kastore.VersionTooOldError, kastore.VersionTooNewError])
def test_version_errors_can_be_raised_without_arguments(exception: type[Exception]) -> None:
    assert "version" in str(exception())


def test_the_documentation_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = {"one": np.arange(5, dtype=np.int8), "two": np.arange(5, dtype=np.uint64)}
    kastore.dump(data, "tmp.kas")
    kas = kastore.load("tmp.kas")
    assert repr(list(kas.items())) == (
        "[('one', array([0, 1, 2, 3, 4], dtype=int8)), "
        "('two', array([0, 1, 2, 3, 4], dtype=uint64))]"
    )
    kas_dict = dict(kas)
    assert repr(kas_dict) == (
        "{'one': array([0, 1, 2, 3, 4], dtype=int8), 'two': array([0, 1, 2, 3, 4], dtype=uint64)}"
    )
    kas_dict["three"] = np.array([0.5772, 2.7818, 3.1415])
    kastore.dump(kas_dict, "tmp2.kas")
    kas.close()
    with kastore.load("tmp2.kas") as kas2:
        assert list(kas2) == ["one", "three", "two"]
        assert kas2["three"].tolist() == [0.5772, 2.7818, 3.1415]


@pytest.mark.python_only
def test_a_store_can_be_dumped_directly(tmp_path: Path) -> None:
    """Loaded stores are Mappings, so they go straight back into dump."""
    data = {"a": np.arange(4, dtype=np.int16)}
    with kastore.loads(kastore.dumps(data)) as store:
        sink = io.BytesIO()
        kastore.dump(store, sink)
    assert sink.getvalue() == kastore.dumps(data)
