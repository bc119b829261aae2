"""A store of the service as a read-only mapping, and its arrays, fetched when used."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urljoin

import numpy as np
import numpy.typing as npt
from numpy.lib.mixins import NDArrayOperatorsMixin

from .._reader import ArrayInfo
from .._transport import HTTPBrokenAnswerError, Response
from ._codings import DecodedBody
from ._errors import ProtocolError, StoreChangedError

__all__ = ["RemoteArray", "RemoteStore"]

#: ``fetch(url, consume)``: GET ``url`` from the service and return ``consume(answer)``,
#: sent again if the answer breaks off; raises the service's typed errors.
Fetch = Callable[[str, Callable[[Response], None]], None]


class RemoteArray(NDArrayOperatorsMixin):
    """One array of a store on the service, fetched only as far as it is used.

    - ``array[a:b]`` (and any slice with a step) fetches elements ``a`` to
      ``b`` only, in one request (``?start=a&stop=b``); ``array[i]`` fetches
      one element.
    - ``np.asarray(array)``, ``array.read()``, numpy functions, arithmetic
      and ndarray methods (``array.sum()``) fetch the whole array once and
      keep it.

    Every array handed out is read-only, like the arrays of ``kastore.Store``.
    ``dtype``, ``shape``, ``size``, ``nbytes`` and ``len()`` need no request.
    """

    def __init__(self, fetch: Fetch, *, store: str, key: str, dtype: str, length: int, url: str):
        self._fetch_url = fetch
        self.store = store
        self.key = key
        self.dtype: np.dtype[Any] = np.dtype(dtype).newbyteorder("<")
        self.shape = (length,)
        self.url = url
        self._values: npt.NDArray[Any] | None = None

    @property
    def size(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return 1

    def __len__(self) -> int:
        return self.shape[0]

    def read(self) -> npt.NDArray[Any]:
        """The whole array, fetched on the first call."""
        if self._values is None:
            self._values = self._fetch(None, None)
        return self._values

    def __getitem__(self, index: Any) -> Any:
        if self._values is not None:
            return self._values[index]
        length = self.shape[0]
        if isinstance(index, int | np.integer) and not isinstance(index, bool | np.bool_):
            position = int(index) + length if index < 0 else int(index)
            if not 0 <= position < length:
                raise IndexError(
                    f"index {int(index)} is out of bounds for {self.key!r} of length {length}"
                )
            return self._fetch(position, position + 1)[0]
        if isinstance(index, slice):
            wanted = range(*index.indices(length))
            if not wanted:
                return self._fetch(0, 0)
            low, high = min(wanted[0], wanted[-1]), max(wanted[0], wanted[-1]) + 1
            span = self._fetch(low, high)
            return span[wanted[0] - low :: wanted.step][: len(wanted)]
        return self.read()[index]  # masks, lists of indices, Ellipsis...

    def _fetch(self, start: int | None, stop: int | None) -> npt.NDArray[Any]:
        """Elements ``[start, stop)`` (the whole array for ``None``), read-only."""
        whole = start is None or stop is None
        count = self.shape[0] if whole else max(0, stop - start)  # type: ignore[operator]
        out = np.empty(count, self.dtype)
        if count or whole:
            url = self.url if whole else f"{self.url}?start={start}&stop={stop}"

            def consume(response: Response) -> None:
                self._check(response, count)
                body = DecodedBody(response)
                received = body.readinto(memoryview(out.data).cast("B"))
                if received != out.nbytes:
                    raise HTTPBrokenAnswerError(
                        f"{url}: the answer ended after {received} of {out.nbytes} bytes"
                    )
                if not body.at_end():
                    raise ProtocolError(f"{url}: more than the {out.nbytes} bytes expected")

            self._fetch_url(url, consume)
        out.flags.writeable = False
        return out

    def _check(self, response: Response, count: int) -> None:
        """The answer holds the elements asked for, of the dtype the listing gave."""
        dtype = response.headers.get("x-kastore-dtype")
        length = response.headers.get("x-kastore-length")
        total = response.headers.get("x-kastore-total-length")
        if dtype is None or length is None:
            raise ProtocolError(
                f"{response.url}: the answer has no X-Kastore-Dtype or X-Kastore-Length header"
            )
        if dtype != self.dtype.name or (total is not None and total != str(self.shape[0])):
            raise StoreChangedError(
                f"store {self.store!r} has changed on the service since it was opened: "
                f"{self.key!r} was {self.dtype.name} with {self.shape[0]} elements, it is "
                f"{dtype} with {total} elements; open the store again"
            )
        if length != str(count):
            raise ProtocolError(f"{response.url}: asked for {count} elements, got {length}")

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        values = self.read()
        if dtype is not None and np.dtype(dtype) != values.dtype:
            if copy is False:
                raise ValueError(f"{self.key!r} cannot be converted to {dtype} without a copy")
            return values.astype(dtype)
        return values.copy() if copy else values

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        arrays = tuple(x.read() if isinstance(x, RemoteArray) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(
                x.read() if isinstance(x, RemoteArray) else x for x in kwargs["out"]
            )
        return getattr(ufunc, method)(*arrays, **kwargs)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.read())

    def __getattr__(self, name: str) -> Any:
        # ndarray methods (sum, mean, tolist...) on the whole array; private and
        # special names are not forwarded, so probing them never fetches anything.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.read(), name)

    def __repr__(self) -> str:
        return (
            f"<kastore.remote.RemoteArray {self.store}:{self.key} "
            f"dtype={self.dtype.name} shape={self.shape}>"
        )


class RemoteStore(Mapping[str, RemoteArray]):
    """A store of the service as a read-only mapping of keys to ``RemoteArray`` s.

    Behaves like ``kastore.Store``: ``keys()``, ``len()``, ``in``, ``info(key)``
    and ``close()`` answer from the key listing fetched when the store was
    opened; arrays are fetched when they are used (``np.asarray(store[key])``),
    slices of them alone (``store[key][10:20]``).
    """

    def __init__(self, fetch: Fetch, listing: dict[str, Any], *, base_url: str) -> None:
        try:
            self.name: str = listing["store"]
            self.sha256: str = listing["sha256"]
            self._arrays = {
                entry["key"]: RemoteArray(
                    fetch,
                    store=self.name,
                    key=entry["key"],
                    dtype=entry["dtype"],
                    length=int(entry["length"]),
                    url=urljoin(base_url, entry["url"]),
                )
                for entry in listing["keys"]
            }
        except (KeyError, TypeError, ValueError) as err:
            raise ProtocolError(f"the key listing is not what the API documents: {err!r}") from err

    def __getitem__(self, key: str) -> RemoteArray:
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def info(self, key: str) -> ArrayInfo:
        """Dtype, shape and size in bytes of the array under ``key``; ``KeyError`` if none."""
        array = self._arrays[key]
        return ArrayInfo(dtype=array.dtype, shape=array.shape, size=array.nbytes)

    def close(self) -> None:
        """Nothing to release: the connections belong to the ``Service``."""

    def __enter__(self) -> RemoteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<kastore.remote.RemoteStore {self.name!r} with {len(self._arrays)} keys>"
