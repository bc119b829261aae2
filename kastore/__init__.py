"""kastore: a fast, zero-copy codec for the kastore key-array file format.

A drop-in for the reference ``kastore`` Python API: ``load``, ``loads``,
``dump``, ``dumps`` and ``get_include``, with the same exceptions.
"""

from __future__ import annotations

from ._files import C_ENGINE, PY_ENGINE
from ._reader import ArrayInfo, Store, load, loads
from ._version import __version__
from ._writer import dump, dumps
from .exceptions import (
    FileFormatError,
    KastoreException,
    StoreClosedError,
    VersionTooNewError,
    VersionTooOldError,
)

__all__ = [
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


def get_include() -> str:
    """Return the directory holding the header files of the kastore C API."""
    from pathlib import Path

    return str(Path(__file__).resolve().parent / "include")
