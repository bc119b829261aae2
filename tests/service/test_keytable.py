"""The key table of a stored file: keys found, and sorted when the file did not sort them."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import keytable
from app.keytable import OpenStore
from app.storage.local_blobs import LocalReader, map_file

from ._support import write_unsorted


def _open(path: Path) -> OpenStore:
    """A stored file as the service opens it: mapped, and read in place."""
    mapped = map_file(path)
    return OpenStore(mapped, LocalReader("0" * 64, mapped))


#: Characters that make byte order differ from naive orders: NUL, multi-byte ones.
_CHARS = st.sampled_from(["a", "b", "A", "\x00", "\x01", "é", "€", "😀", "/"])
_KEYS = st.lists(
    st.builds(
        lambda text, times: text * times, st.text(_CHARS, max_size=6), st.sampled_from([1, 30])
    ),
    unique=True,
    max_size=40,
)


@pytest.mark.parametrize("block", [1 << 14, 2, 3])
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keys=_KEYS, data=st.data())
def test_keys_are_found_and_ordered_as_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    block: int,
    keys: list[str],
    data: st.DataObject,
) -> None:
    """Short and long keys (compared as rows of bytes or one by one), in blocks of any size."""
    monkeypatch.setattr(keytable, "_SORT_CHECK_BLOCK", block)
    if data.draw(st.booleans(), label="sorted"):
        keys = sorted(keys, key=str.encode)
    else:
        keys = data.draw(st.permutations(keys), label="order")
    path = write_unsorted(tmp_path_factory.mktemp("keys") / "k.kas", keys)
    opened = _open(Path(path))
    expected = sorted(range(len(keys)), key=lambda i: keys[i].encode())
    order = list(range(len(keys))) if opened.order is None else opened.order.tolist()
    assert order == expected
    for i, key in enumerate(keys):
        assert opened.find(key) == i
        assert opened.key(i) == key
    assert opened.find("\x02absent") is None
    assert opened.find("\ud800") is None  # cannot be UTF-8: no stored key is it


@pytest.mark.parametrize("swapped", [0, 2, 3, 5, 8])
def test_keys_out_of_order_at_a_block_boundary_are_noticed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: int
) -> None:
    """Blocks of 3 keys: keys sorted but one neighbouring pair, on or off a block boundary."""
    monkeypatch.setattr(keytable, "_SORT_CHECK_BLOCK", 3)
    keys = [f"key{i}" for i in range(10)]
    keys[swapped], keys[swapped + 1] = keys[swapped + 1], keys[swapped]
    opened = _open(write_unsorted(tmp_path / "k.kas", keys))
    assert opened.order is not None
    for i, key in enumerate(keys):
        assert opened.find(key) == i
