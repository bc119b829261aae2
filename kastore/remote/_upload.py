"""Request bodies for uploads: a file streamed from disk, raw or as a multipart form.

The file is read a piece at a time as the connection takes it, never whole,
and each attempt reads it afresh, so a retried upload sends it again from the
start. The progress bar follows the bytes of the file sent.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from .._transport import Body

__all__ = ["CHUNK_SIZE", "FileBody"]

CHUNK_SIZE = 1 << 20


def _quoted(text: str) -> str:
    """A form field value as browsers quote it in ``Content-Disposition``."""
    return text.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class FileBody:
    """The bytes of the file at ``path``, as ``body`` (raw) or ``form(name)`` (multipart).

    ``size`` is taken when the upload starts; a file that shrinks while it is
    sent raises ``ValueError`` (a file that grows is sent up to that size).
    """

    def __init__(self, path: str | os.PathLike[str], *, progress: bool, label: str) -> None:
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.bar = tqdm(
            total=self.size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress,
        )

    def _pieces(self) -> Iterator[bytes]:
        self.bar.reset(total=self.size)
        sent = 0
        with self.path.open("rb") as fh:
            while sent < self.size:
                piece = fh.read(min(CHUNK_SIZE, self.size - sent))
                if not piece:
                    raise ValueError(
                        f"{self.path} shrank from {self.size} to {sent} bytes while it was "
                        "being uploaded"
                    )
                sent += len(piece)
                self.bar.update(len(piece))
                yield piece

    def raw(self) -> tuple[Body, dict[str, str]]:
        """The file as the whole body (``PUT /stores/{name}``)."""
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(self.size)}
        return self._pieces, headers

    def form(self, name: str | None) -> tuple[Body, dict[str, str]]:
        """The file as the ``file`` field of a multipart form, with ``name`` if given."""
        boundary = f"kastore-{secrets.token_hex(16)}"
        head = b""
        if name is not None:
            head += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
            ).encode()
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quoted(self.path.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            yield from self._pieces()
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + self.size + len(tail)),
        }
        return body, headers

    def close(self) -> None:
        self.bar.close()
