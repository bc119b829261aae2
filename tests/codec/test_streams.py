"""Reading from streams: short reads, and stores back to back on one source."""

from __future__ import annotations

import io
import itertools
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import kastore

from ._support import FAST, assert_store_equals, stores


class ShortReads(io.RawIOBase):
    """A stream that hands out only a few bytes per read, as pipes and sockets may."""

    def __init__(self, data: bytes, sizes: Sequence[int]) -> None:
        self._data = memoryview(data)
        self._position = 0
        self._sizes = itertools.cycle(sizes)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), next(self._sizes), len(self._data) - self._position)
        buffer[:size] = self._data[self._position : self._position + size]
        self._position += size
        return size


#: Stores to send one after another: an odd size (so the next one starts
#: unaligned), an empty store, one larger than a pipe's buffer, unicode keys.
SEQUENCE: list[dict[str, Any]] = [
    {"a": np.arange(3, dtype=np.int8)},
    {},
    {"x/y": np.linspace(0, 1, 10_000), "z": np.arange(5, dtype=">u4")},
    {"é": np.array([-1], dtype=np.int16), "b": np.array([], dtype=np.uint64)},
]


def _encoded_sequence() -> bytes:
    return b"".join(kastore.dumps(data) for data in SEQUENCE)


def _load_all_then_eof(load: Callable[[], kastore.Store]) -> None:
    """Load every store of SEQUENCE in turn, then expect a clean end."""
    loaded = [load() for _ in SEQUENCE]
    for store, data in zip(loaded, SEQUENCE, strict=True):
        with store:
            assert_store_equals(store, data)
    with pytest.raises(EOFError):
        load()


SIZES = [(1,), (3,), (7,), (1, 2, 3, 4, 5, 6, 7), (7, 1, 5)]


@pytest.mark.python_only
@pytest.mark.parametrize("sizes", SIZES, ids=str)
@pytest.mark.parametrize("read_all", [False, True])
def test_short_reads_load_every_store_in_turn(sizes: tuple[int, ...], read_all: bool) -> None:
    stream = ShortReads(_encoded_sequence(), sizes)
    _load_all_then_eof(lambda: kastore.load(stream, read_all=read_all))


@pytest.mark.python_only
@FAST
@given(data=stores, sizes=st.lists(st.integers(1, 7), min_size=1, max_size=5))
def test_short_reads_round_trip(data: dict[str, np.ndarray], sizes: list[int]) -> None:
    with kastore.load(ShortReads(kastore.dumps(data), sizes)) as store:
        assert_store_equals(store, data)


@pytest.mark.parametrize("read_all", [False, True])
def test_back_to_back_in_a_file_object(tmp_path: Path, read_all: bool) -> None:
    path = tmp_path / "many.kas"
    with path.open("wb") as out:
        for data in SEQUENCE:
            kastore.dump(data, out)
    assert path.read_bytes() == _encoded_sequence()
    with path.open("rb") as source:
        _load_all_then_eof(lambda: kastore.load(source, read_all=read_all))
        assert source.tell() == path.stat().st_size


@pytest.mark.parametrize("read_all", [False, True])
def test_back_to_back_through_a_file_descriptor(tmp_path: Path, read_all: bool) -> None:
    path = tmp_path / "many.kas"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        for data in SEQUENCE:
            kastore.dump(data, fd)
    finally:
        os.close(fd)
    assert path.read_bytes() == _encoded_sequence()
    fd = os.open(path, os.O_RDONLY)
    try:
        _load_all_then_eof(lambda: kastore.load(fd, read_all=read_all))
        # Still ours, still open, positioned at the end.
        assert os.lseek(fd, 0, os.SEEK_CUR) == path.stat().st_size
    finally:
        os.close(fd)


@pytest.fixture
def in_thread() -> Iterator[Callable[[Callable[[], None]], Callable[[], None]]]:
    """Start a function in a thread; returns a ``join`` that re-raises its error.

    Every thread is joined at teardown too, with a timeout, so a test that
    fails half-way neither hangs nor hides the thread's own error.
    """
    joins: list[Callable[[], None]] = []

    def start(target: Callable[[], None]) -> Callable[[], None]:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                target()
            except BaseException as err:
                errors.append(err)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()

        def join() -> None:
            thread.join(timeout=30)
            assert not thread.is_alive(), "the thread did not finish"
            if errors:
                raise errors.pop()

        joins.append(join)
        return join

    yield start
    for join in joins:
        join()


@pytest.mark.parametrize("reader", ["fd", "file-object"])
@pytest.mark.parametrize("sink", ["fd", "file-object"])
def test_back_to_back_through_a_pipe(in_thread: Any, sink: str, reader: str) -> None:
    read_end, write_end = os.pipe()

    def write() -> None:
        with open(write_end, "wb") as out:
            for data in SEQUENCE:
                kastore.dump(data, write_end if sink == "fd" else out)

    try:
        join = in_thread(write)
        if reader == "fd":
            _load_all_then_eof(lambda: kastore.load(read_end))
        else:
            with open(read_end, "rb", closefd=False) as source:
                _load_all_then_eof(lambda: kastore.load(source))
        join()
    finally:
        # Closing our end also unblocks a writer left stuck by a failed test.
        os.close(read_end)


@pytest.mark.parametrize("reader", ["fd", "makefile"])
def test_back_to_back_through_a_socket(in_thread: Any, reader: str) -> None:
    ours, theirs = socket.socketpair()

    def write() -> None:
        with theirs:
            for data in SEQUENCE:
                theirs.sendall(kastore.dumps(data))
            theirs.shutdown(socket.SHUT_WR)

    with ours:
        join = in_thread(write)
        if reader == "fd":
            _load_all_then_eof(lambda: kastore.load(ours.fileno()))
        else:
            with ours.makefile("rb") as source:
                _load_all_then_eof(lambda: kastore.load(source))
        join()


def test_dump_to_a_socket(in_thread: Any) -> None:
    ours, theirs = socket.socketpair()
    received = bytearray()

    def receive() -> None:
        with theirs:
            while chunk := theirs.recv(65536):
                received.extend(chunk)

    with ours:
        join = in_thread(receive)
        with ours.makefile("wb") as out:
            for data in SEQUENCE:
                kastore.dump(data, out)
        ours.shutdown(socket.SHUT_WR)
        join()
    assert bytes(received) == _encoded_sequence()
