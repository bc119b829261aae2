"""Dumping never destroys data: the target is replaced whole, or left as it was.

The first tests run a user's sequence in a subprocess, so a crash (SIGBUS from
an array whose mapped file was cut short) fails one test instead of the run.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kastore
from kastore import _files

#: Element counts of float64 arrays: 80 bytes, 1 MB and 40 MB files.
SIZES = {"10 elements": 10, "1 MB": 125_000, "40 MB": 5_000_000}

#: Load a file lazily, then dump onto the same path: the store itself, or a dict
#: of its arrays with a key added (how a key is usually added to a tskit file).
SEQUENCE = """
import sys, numpy as np, kastore
path, n, variant, engine = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
kastore.dump({"a": np.arange(10), "x": np.arange(float(n)), "z": np.zeros(100)}, path)
store = kastore.load(path, engine=engine)
if variant == "store":
    kastore.dump(store, path, engine=engine)
else:
    data = dict(store)
    data["new"] = np.ones(3)
    kastore.dump(data, path, engine=engine)
again = kastore.load(path, engine=engine)
assert np.array_equal(again["x"], np.arange(float(n))), "x came back changed"
assert np.array_equal(again["a"], np.arange(10)), "a came back changed"
assert ("new" in again) == (variant == "dict"), sorted(again)
assert np.array_equal(store["x"], np.arange(float(n))), "the first store's arrays changed"
print("ok", np.count_nonzero(again["x"]))
"""


@pytest.mark.parametrize("variant", ["store", "dict"])
@pytest.mark.parametrize("n", SIZES.values(), ids=SIZES.keys())
def test_load_then_dump_onto_the_same_path(
    tmp_path: Path, n: int, variant: str, engine: str
) -> None:
    path = tmp_path / "x.kas"
    result = subprocess.run(
        [sys.executable, "-c", SEQUENCE, str(path), str(n), variant, engine],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split() == ["ok", str(n - 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.kas"], "a temporary file stayed"


def test_the_mode_of_a_replaced_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "x.kas"
    kastore.dump({"a": np.arange(3)}, path)
    path.chmod(0o640)
    kastore.dump({"b": np.arange(3)}, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert list(kastore.load(path)) == ["b"]


def test_a_new_file_gets_the_mode_open_would_give(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        kastore.dump({"a": np.arange(3)}, tmp_path / "new.kas")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.kas").stat().st_mode) == 0o640


def test_a_symlink_stays_and_its_target_is_replaced(tmp_path: Path) -> None:
    real = tmp_path / "real.kas"
    link = tmp_path / "link.kas"
    kastore.dump({"a": np.arange(3)}, real)
    link.symlink_to(real)
    kastore.dump({"b": np.arange(4)}, link)
    assert link.is_symlink()
    assert list(kastore.load(real)) == ["b"]


@pytest.mark.python_only
def test_a_failing_dump_leaves_the_old_file_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "x.kas"
    kastore.dump({"old": np.arange(10)}, path)
    before = path.read_bytes()
    calls = 0
    real_write_all = _files.write_all

    def failing(sink: Any, piece: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device")
        real_write_all(sink, piece)

    monkeypatch.setattr(_files, "write_all", failing)
    data = {f"k{i}": np.arange(200_000) for i in range(3)}
    with pytest.raises(OSError, match="No space left"):
        kastore.dump(data, path)
    assert calls == 2, "the failure was not injected mid-write"
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.kas"]


def test_a_killed_dump_leaves_the_old_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "x.kas"
    kastore.dump({"old": np.arange(1000)}, path)
    before = path.read_bytes()
    script = (
        "import sys, numpy as np, kastore\n"
        "data = {f'k{i}': np.arange(4_000_000.) for i in range(40)}\n"
        "print('writing', flush=True)\n"
        "kastore.dump(data, sys.argv[1])\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "writing\n"
        # Wait until the temporary file is growing, then kill the writer.
        deadline = time.monotonic() + 30
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline, "the dump never started writing"
            time.sleep(0.005)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert path.read_bytes() == before


def test_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = {"a": np.arange(100_000)}
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    kastore.dump(data, fifo)
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received == [kastore.dumps(data)]


def test_a_device_is_written_in_place() -> None:
    kastore.dump({"a": np.arange(10)}, os.devnull)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def _slow_reader(fd: int, out: list[bytes]) -> None:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
        time.sleep(0.0005)
    out.append(b"".join(chunks))


@pytest.mark.parametrize("buffering", [0, -1], ids=["raw", "buffered"])
def test_a_non_blocking_pipe_gets_every_byte(buffering: int) -> None:
    data = {"x": np.arange(300_000.0), "y": np.arange(7, dtype=np.int8)}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    received: list[bytes] = []
    reader = threading.Thread(target=_slow_reader, args=(read_fd, received))
    reader.start()
    try:
        with open(write_fd, "wb", buffering=buffering) as sink:
            kastore.dump(data, sink)
    finally:
        reader.join(timeout=60)
        os.close(read_fd)
    expected = kastore.dumps(data)
    assert len(received[0]) == len(expected) > 2_000_000
    assert received[0] == expected


class _WouldBlock:
    """A non-blocking file object with no descriptor to wait on."""

    def write(self, data: Any) -> None:
        return None


@pytest.mark.python_only
def test_a_file_object_that_takes_nothing_is_an_error() -> None:
    with pytest.raises(BlockingIOError):
        kastore.dump({"a": np.arange(10)}, _WouldBlock())
