"""Exceptions raised by kastore.

The hierarchy::

    Exception
    └── KastoreException                 anything kastore itself raises
        ├── FileFormatError (ValueError) the bytes are not a valid kastore file
        │   ├── VersionTooOldError       major version older than this reader
        │   └── VersionTooNewError       major version newer than this reader
        └── StoreClosedError             a Store was used after close()

``FileFormatError`` is also a ``ValueError`` so that generic handlers for bad
input catch it. Reading an empty source raises the built-in ``EOFError``: there
is no store there at all, which is how a sequence of stores ends.
"""

from __future__ import annotations

__all__ = [
    "FileFormatError",
    "KastoreException",
    "StoreClosedError",
    "VersionTooNewError",
    "VersionTooOldError",
]


class KastoreException(Exception):
    """Base class of every exception kastore raises for its own reasons."""


class FileFormatError(KastoreException, ValueError):
    """The data is not a well-formed kastore file."""


class VersionTooOldError(FileFormatError):
    """The file's major version is older than the one this library reads."""

    def __init__(self, found: int | None = None, supported: int | None = None) -> None:
        if found is None:
            super().__init__("kastore file version is too old")
        else:
            super().__init__(
                f"kastore file major version {found} is too old: this library reads "
                f"version {supported}; rewrite the file with a current kastore"
            )


class VersionTooNewError(FileFormatError):
    """The file's major version is newer than the one this library reads."""

    def __init__(self, found: int | None = None, supported: int | None = None) -> None:
        if found is None:
            super().__init__("kastore file version is too new")
        else:
            super().__init__(
                f"kastore file major version {found} is too new: this library reads "
                f"version {supported}; upgrade kastore to read it"
            )


class StoreClosedError(KastoreException):
    """A ``Store`` was accessed after it was closed."""
