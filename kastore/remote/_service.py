"""The client of the service's API: list, upload, replace, delete, and open stores."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

from .._http import HTTPFile
from .._reader import Store, load
from .._transport import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    Body,
    HTTPConnectionError,
    HTTPProtocolError,
    HTTPStatusError,
    HTTPTimeoutError,
    Response,
    Transport,
    origin_of,
)
from ._arrays import RemoteStore
from ._codings import ACCEPT_ENCODING
from ._errors import (
    ProtocolError,
    StoreChangedError,
    StoreNotFoundError,
    error_from,
    transport_error,
    typed,
)
from ._upload import FileBody

__all__ = ["Service", "StoreInfo", "connect"]


@dataclass(frozen=True, slots=True)
class StoreInfo:
    """A stored file, as the service describes it."""

    name: str
    size: int
    """Size of the file in bytes."""
    sha256: str
    num_keys: int
    created: datetime
    url: str
    """The store's address on the service; ``url + "/file"`` is the whole file."""

    @classmethod
    def _parse(cls, document: Any, base_url: str) -> StoreInfo:
        try:
            return cls(
                name=document["name"],
                size=int(document["size"]),
                sha256=document["sha256"],
                num_keys=int(document["num_keys"]),
                created=datetime.fromisoformat(document["created"]),
                url=urljoin(base_url, document["url"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ProtocolError(
                f"a store's description is not what the API documents: {err!r}"
            ) from err


class Service:
    """A kastore service, reached at ``url`` (``connect()`` makes one).

    Parameters:
        url: the service's address, ``http(s)://host[:port][/prefix]``.
        api_key: sent as ``Authorization: Bearer KEY`` with every request
            (and never to another origin, should the service redirect).
        timeout: seconds to wait to connect, and for each read.
        retries: further attempts after a connection error or a timeout,
            with backoff; uploads of a new store (POST) are retried only when
            the request cannot have reached the service.

    Every method raises a ``RemoteError``: a ``ServiceError`` subclass carrying
    the service's ``error`` and ``detail`` when it answered with an error,
    ``ServiceUnreachableError`` or ``ServiceTimeoutError`` when it did not
    answer.
    """

    #: Stores, and keys, asked for per page of their listings (the most the API gives).
    _page_size = 1000
    _keys_page_size = 10_000

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        origin_of(url)  # raises ValueError for anything but http(s)://host
        self.url = url.rstrip("/")
        self._credentials = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout, self._retries = timeout, retries
        self._transport = Transport(timeout=timeout, retries=retries, headers=self._credentials)

    # --- requests ---

    def _request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
    ) -> Response:
        try:
            response = self._transport.request(method, url, headers=headers, body=body)
        except (HTTPConnectionError, HTTPTimeoutError) as err:
            raise transport_error(err, url) from err
        except HTTPProtocolError as err:
            raise ProtocolError(str(err)) from err
        if response.status >= 400:
            raise error_from(response, method)
        return response

    def _read(self, url: str, consume: Callable[[Response], None]) -> None:
        """GET ``url`` (raw, compressed where it pays), ``consume`` it; again if it breaks off."""
        headers = {"Accept": "application/octet-stream", "Accept-Encoding": ACCEPT_ENCODING}

        def attempt() -> None:
            with self._request("GET", url, headers=headers) as got:
                consume(got)

        try:
            self._transport.retrying(url, attempt)
        except (HTTPConnectionError, HTTPTimeoutError) as err:
            raise transport_error(err, url) from err

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        url = path if "://" in path else f"{self.url}{path}"

        def attempt() -> bytes:
            with self._request(method, url, **kwargs) as response:
                return response.read()

        try:
            # A GET cut off midway is sent again; an upload's answer is not worth a resend.
            body = self._transport.retrying(url, attempt) if method == "GET" else attempt()
        except (HTTPConnectionError, HTTPTimeoutError) as err:
            raise transport_error(err, url) from err
        try:
            return json.loads(body)
        except ValueError as err:
            raise ProtocolError(f"{url}: the answer is not JSON: {body[:100]!r}") from err

    @staticmethod
    def _path(name: str) -> str:
        return f"/stores/{quote(name, safe='')}"

    # --- the API ---

    def stores(self) -> list[StoreInfo]:
        """Every store, sorted by name (every page of ``GET /stores``)."""
        found: list[StoreInfo] = []
        path: str | None = f"/stores?limit={self._page_size}"
        while path is not None:
            page = self._json("GET", path)
            if not isinstance(page, dict) or not isinstance(page.get("stores"), list):
                raise ProtocolError(f"{self.url}{path}: not a list of stores")
            found += [StoreInfo._parse(store, self.url) for store in page["stores"]]
            after = page.get("next")
            path = urljoin(f"{self.url}/", after) if isinstance(after, str) else None
        return found

    def info(self, name: str) -> StoreInfo:
        """One store's description. Raises ``StoreNotFoundError``."""
        return StoreInfo._parse(self._json("GET", self._path(name)), self.url)

    def upload(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        progress: bool = True,
        *,
        replace: bool = False,
    ) -> StoreInfo:
        """Upload the file at ``path`` as a store, streamed from disk with a progress bar.

        Parameters:
            path: a kastore (or tskit ``.trees``) file.
            name: the store's name; by default the file's name without its
                extension (``sim.trees`` gives ``sim``).
            progress: show a progress bar (tqdm) of the bytes sent.
            replace: replace a store of that name (``PUT``); without it, a
                name in use raises ``StoreExistsError``.

        Raises:
            StoreExistsError: the name is in use (without ``replace``).
            InvalidRequestError: not a valid kastore file, or not a valid name.
            TooLargeError: larger than the service accepts.
            OSError: the file cannot be read.
        """
        local = Path(path)
        file = FileBody(local, progress=progress, label=name or local.name)
        try:
            if replace:
                body, headers = file.raw()
                url = f"{self.url}{self._path(name or local.stem)}"
                document = self._json("PUT", url, headers=headers, body=body)
            else:
                body, headers = file.form(name)
                document = self._json("POST", "/stores", headers=headers, body=body)
        finally:
            file.close()
        return StoreInfo._parse(document, self.url)

    def replace(
        self, path: str | os.PathLike[str], name: str | None = None, progress: bool = True
    ) -> StoreInfo:
        """Upload ``path`` as the store ``name``, replacing any store of that name."""
        return self.upload(path, name, progress, replace=True)

    def delete(self, name: str) -> None:
        """Delete a store. Raises ``StoreNotFoundError``."""
        self._request("DELETE", f"{self.url}{self._path(name)}").close()

    def __getitem__(self, name: str) -> RemoteStore:
        """Open the store ``name``: its keys now (every page), its arrays when used."""
        path: str | None = f"{self._path(name)}/keys?limit={self._keys_page_size}"
        listing: dict[str, Any] | None = None
        while path is not None:
            page = self._json("GET", path)
            if not isinstance(page, dict) or not isinstance(page.get("keys"), list):
                raise ProtocolError(f"{self.url}{path}: not a list of keys")
            if listing is None:
                listing = page
            elif page.get("sha256") != listing.get("sha256"):
                raise StoreChangedError(
                    f"store {name!r} was replaced on the service while its keys were listed; "
                    "open it again"
                )
            else:
                listing["keys"] += page["keys"]
            after = page.get("next")
            path = urljoin(f"{self.url}/", after) if isinstance(after, str) else None
        assert listing is not None
        return RemoteStore(self._read, listing, base_url=self.url)

    def load(self, name: str) -> Store:
        """The whole file of the store ``name`` as a ``kastore.Store``, read lazily by Range.

        Like ``kastore.load(url)`` of the store's file URL, with this service's
        key: the header and keys now, each array when it is first used.
        """
        url = f"{self.url}{self._path(name)}/file"
        try:
            file = HTTPFile(
                url, headers=self._credentials, timeout=self._timeout, retries=self._retries
            )
        except HTTPStatusError as err:
            error = err.code or f"http_{err.status}"
            raise typed(err.status, error, err.detail, "GET", url) from err
        except (HTTPConnectionError, HTTPTimeoutError) as err:
            raise transport_error(err, url) from err
        return load(file)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            self.info(name)
        except StoreNotFoundError:
            return False
        return True

    def close(self) -> None:
        """Close the connections kept open for later requests."""
        self._transport.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kastore.remote.Service {self.url!r}>"


def connect(
    url: str | None = None,
    api_key: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
) -> Service:
    """A client of the kastore service at ``url``.

    Parameters:
        url: the service's address; by default ``KASTORE_URL``.
        api_key: sent as ``Authorization: Bearer KEY``; by default
            ``KASTORE_API_KEY``, if set.
        timeout, retries: see ``Service``.

    Raises:
        ValueError: no URL given and ``KASTORE_URL`` unset, or not an http(s) URL.
    """
    url = url or os.environ.get("KASTORE_URL")
    if not url:
        raise ValueError("no service URL: pass connect(url) or set KASTORE_URL")
    if api_key is None:
        api_key = os.environ.get("KASTORE_API_KEY") or None
    return Service(url, api_key=api_key, timeout=timeout, retries=retries)
