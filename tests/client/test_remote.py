"""kastore.remote against the real app: stores, uploads, arrays, slices and errors."""

from __future__ import annotations

import gc
import shutil
import tracemalloc
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import kastore
import kastore.remote as remote

from .conftest import Live, serving


@pytest.fixture
def service(live: Live) -> Iterator[remote.Service]:
    with remote.connect(live.url) as service:
        yield service


@pytest.fixture
def sim(service: remote.Service, tskit_file: Path, tmp_path: Path) -> Iterator[str]:
    """``tskit_file`` stored under a name of this test's own; deleted afterwards."""
    name = f"sim-{tmp_path.name}"[:100]
    service.upload(tskit_file, name, progress=False)
    yield name
    if name in service:
        service.delete(name)


# --- connecting -------------------------------------------------------------------


def test_connect_takes_the_url_and_key_from_the_environment(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KASTORE_URL", live.url)
    monkeypatch.setenv("KASTORE_API_KEY", "k3y-from-env")
    live.clear()
    with remote.connect() as service:
        service.stores()
    assert [seen.headers.get("authorization") for seen in live.seen] == ["Bearer k3y-from-env"]


def test_an_explicit_key_is_sent_with_every_request(
    live: Live, sim: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KASTORE_API_KEY", raising=False)
    live.clear()
    with remote.connect(live.url, api_key="s3cret") as service:
        store = service[sim]
        np.asarray(store["nodes/time"])
        service.info(sim)
    assert len(live.seen) == 3
    assert {seen.headers.get("authorization") for seen in live.seen} == {"Bearer s3cret"}


def test_without_a_key_no_authorization_is_sent(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KASTORE_API_KEY", raising=False)
    live.clear()
    with remote.connect(live.url) as service:
        service.stores()
    assert live.seen and all("authorization" not in seen.headers for seen in live.seen)


def test_connect_without_a_url_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KASTORE_URL", raising=False)
    with pytest.raises(ValueError, match="KASTORE_URL"):
        remote.connect()


def test_requests_share_one_connection(live: Live, sim: str) -> None:
    with remote.connect(live.url) as service:
        store = service[sim]
        for key in list(store)[:5]:
            np.asarray(store[key])
        assert service._transport.connections_opened == 1


# --- stores -----------------------------------------------------------------------


def test_upload_lists_replace_and_delete(
    service: remote.Service, tskit_file: Path, tmp_path: Path
) -> None:
    copy = tmp_path / f"up-{tmp_path.name[:40]}.trees"
    shutil.copyfile(tskit_file, copy)
    info = service.upload(copy, progress=False)
    assert info.name == copy.stem, "the name defaults to the file's stem"
    assert info.size == copy.stat().st_size and info.num_keys == len(kastore.load(copy))
    assert info.url == f"{service.url}/stores/{copy.stem}"
    assert copy.stem in [store.name for store in service.stores()]
    assert service.info(copy.stem) == info

    with pytest.raises(remote.StoreExistsError) as exists:
        service.upload(copy, progress=False)
    assert exists.value.status == 409 and exists.value.error == "store_exists"
    assert "PUT" in exists.value.detail

    other = tmp_path / "other.kas"
    kastore.dump({"x": np.arange(3)}, other)
    replaced = service.replace(other, copy.stem, progress=False)
    assert (replaced.name, replaced.num_keys) == (copy.stem, 1)
    assert list(service[copy.stem]) == ["x"]

    service.delete(copy.stem)
    assert copy.stem not in service
    with pytest.raises(remote.StoreNotFoundError) as gone:
        service.delete(copy.stem)
    assert gone.value.error == "store_not_found" and copy.stem in gone.value.detail


def test_replace_creates_a_store_that_did_not_exist(
    service: remote.Service, tmp_path: Path
) -> None:
    path = tmp_path / "fresh.kas"
    kastore.dump({"a": np.arange(4, dtype=np.int16)}, path)
    name = f"fresh-{tmp_path.name[:40]}"
    try:
        assert service.upload(path, name, progress=False, replace=True).name == name
        assert np.asarray(service[name]["a"]).tolist() == [0, 1, 2, 3]
    finally:
        service.delete(name)


def test_stores_follows_every_page(
    service: remote.Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiny.kas"
    kastore.dump({"a": np.arange(2)}, path)
    names = [f"page-{tmp_path.name[:30]}-{i}" for i in range(5)]
    for name in names:
        service.upload(path, name, progress=False)
    try:
        everything = service.stores()
        monkeypatch.setattr(service, "_page_size", 2)
        assert service.stores() == everything
        assert set(names) <= {store.name for store in everything}
    finally:
        for name in names:
            service.delete(name)


def test_upload_shows_a_progress_bar(
    service: remote.Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bar.kas"
    kastore.dump({"a": np.zeros(3 << 20, np.uint8)}, path)
    name = f"bar-{tmp_path.name[:40]}"
    service.upload(path, name)
    shown = capsys.readouterr().err
    assert "100%" in shown and "3.00M" in shown and name in shown
    service.replace(path, name, progress=False)
    assert capsys.readouterr().err == ""
    service.delete(name)


def test_upload_streams_the_file_without_reading_it_whole(
    service: remote.Service, tmp_path: Path
) -> None:
    path = tmp_path / "large.kas"
    kastore.dump({"a": np.zeros(64 << 20, np.uint8)}, path)
    name = f"large-{tmp_path.name[:40]}"
    tracemalloc.start()
    try:
        service.upload(path, name, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert service.info(name).size == path.stat().st_size
    service.delete(name)
    # The server runs in this process too; both sides go piece by piece.
    assert peak < 16 << 20, f"{peak} bytes allocated at the peak for a 64 MiB upload"


# --- arrays -----------------------------------------------------------------------


def test_a_store_reads_like_the_file(service: remote.Service, sim: str, tskit_file: Path) -> None:
    local = kastore.load(tskit_file)
    store = service[sim]
    assert list(store) == list(local) and len(store) == len(local)
    assert "nodes/time" in store and "nodes/nope" not in store
    for key in local:
        assert store.info(key) == local.info(key), key
        values = np.asarray(store[key])
        assert values.dtype == local[key].dtype and np.array_equal(values, local[key]), key
        assert not values.flags.writeable
    with pytest.raises(KeyError):
        store["nodes/nope"]


def test_every_page_of_keys_is_listed(
    service: remote.Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = {f"k/{i:03d}": np.full(i % 5, i, dtype=np.int64) for i in range(23)}
    path = tmp_path / "keys.kas"
    kastore.dump(data, path)
    name = f"keys-{tmp_path.name[:40]}"
    service.upload(path, name, progress=False)
    monkeypatch.setattr(service, "_keys_page_size", 5)
    store = service[name]
    assert list(store) == sorted(data)
    assert np.array_equal(np.asarray(store["k/022"]), data["k/022"])
    service.delete(name)


def test_slicing_fetches_only_the_slice(
    live: Live, service: remote.Service, sim: str, tskit_file: Path
) -> None:
    local = kastore.load(tskit_file)["edges/left"]
    array = service[sim]["edges/left"]
    assert len(local) > 100
    live.clear()
    part = array[10:30]
    assert np.array_equal(part, local[10:30]) and part.dtype == np.float64
    assert [(s.query, s.body_bytes) for s in live.seen] == [("start=10&stop=30", 20 * 8)]
    assert np.array_equal(array[-20:-5:3], local[-20:-5:3])
    assert np.array_equal(array[50:10:-4], local[50:10:-4])
    assert array[-1] == local[-1] and array[7] == local[7]
    assert array[30:10].shape == (0,)
    with pytest.raises(IndexError):
        array[len(local)]
    assert sum(s.body_bytes for s in live.seen) < local.nbytes / 2, "slices, not the array"


def test_a_remote_array_works_with_numpy(
    service: remote.Service, sim: str, tskit_file: Path
) -> None:
    local = kastore.load(tskit_file)["nodes/time"]
    array = service[sim]["nodes/time"]
    assert (array.dtype, array.shape, array.nbytes) == (local.dtype, local.shape, local.nbytes)
    assert "nodes/time" in repr(array)
    assert array.sum() == local.sum()
    assert np.array_equal(array * 2, local * 2) and np.array_equal(np.sqrt(array), np.sqrt(local))
    assert np.array_equal(np.asarray(array, dtype=np.float32), local.astype(np.float32))
    assert list(array)[:3] == list(local)[:3]


def test_a_replaced_store_is_noticed(service: remote.Service, sim: str, tmp_path: Path) -> None:
    store = service[sim]
    other = tmp_path / "other.kas"
    kastore.dump({"nodes/time": np.arange(5, dtype=np.int32)}, other)
    service.replace(other, sim, progress=False)
    with pytest.raises(remote.StoreChangedError, match="open the store again"):
        np.asarray(store["nodes/time"])


# --- errors -----------------------------------------------------------------------


def test_errors_carry_the_services_code_and_detail(service: remote.Service, tmp_path: Path) -> None:
    with pytest.raises(remote.StoreNotFoundError) as missing:
        service["no-such-store"]
    assert isinstance(missing.value, remote.NotFoundError | LookupError)
    assert missing.value.status == 404 and "GET /stores" in missing.value.detail

    bad = tmp_path / "bad.kas"
    bad.write_bytes(b"not a kastore file at all, not even close" * 3)
    with pytest.raises(remote.InvalidRequestError) as invalid:
        service.upload(bad, progress=False)
    assert invalid.value.error == "invalid_kastore_file" and isinstance(invalid.value, ValueError)
    assert str(invalid.value).startswith("422 invalid_kastore_file: not a valid kastore file")

    good = tmp_path / "good.kas"
    kastore.dump({"a": np.arange(2)}, good)
    with pytest.raises(remote.InvalidRequestError) as name:
        service.upload(good, "-bad name", progress=False)
    assert name.value.error == "invalid_store_name"
    assert "bad" not in service and "good" not in service


def test_a_missing_local_file_is_an_os_error(service: remote.Service, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        service.upload(tmp_path / "absent.kas", progress=False)


def test_an_upload_over_the_limit_gets_the_services_answer(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    path = tmp_path / "large.kas"
    kastore.dump({"a": np.zeros(32 << 20, np.uint8)}, path)
    with (
        serving(tmp_path_factory.mktemp("small-limit"), max_upload_bytes=100_000) as live,
        remote.connect(live.url) as service,
    ):
        for replace in (False, True):
            with pytest.raises(remote.TooLargeError) as err:
                service.upload(path, "large", progress=False, replace=replace)
            assert err.value.status == 413 and err.value.error == "upload_too_large"
            assert "100000 bytes" in err.value.detail
        assert service.stores() == []


def test_a_service_dropped_without_close_leaves_no_connection_open(live: Live) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        service = remote.connect(live.url)
        service.stores()
        del service
        gc.collect()
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
