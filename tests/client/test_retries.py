"""kastore.remote through a flaky network: dropped connections are retried, silence times out."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import kastore
import kastore.remote as remote

from .._httpd import DroppingProxy
from .conftest import Live


def test_dropped_connections_are_tried_again(live: Live) -> None:
    with (
        DroppingProxy(("127.0.0.1", live.port), drop=2) as proxy,
        remote.connect(proxy.base_url, retries=3) as service,
    ):
        assert isinstance(service.stores(), list)
        assert proxy.accepted == 3


def test_an_upload_is_sent_again_after_a_dropped_connection(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "again.kas"
    kastore.dump({"a": np.arange(1000)}, path)
    name = f"again-{tmp_path.name[:40]}"
    with DroppingProxy(("127.0.0.1", live.port), drop=1) as proxy:
        with remote.connect(proxy.base_url) as service:
            info = service.replace(path, name, progress=False)
            assert info.size == path.stat().st_size
            assert np.array_equal(np.asarray(service[name]["a"]), np.arange(1000))
            service.delete(name)
        assert proxy.accepted == 2


def test_a_service_that_keeps_dropping_is_unreachable(live: Live) -> None:
    with (
        DroppingProxy(("127.0.0.1", live.port), drop=10) as proxy,
        remote.connect(proxy.base_url, retries=2) as service,
    ):
        with pytest.raises(remote.ServiceUnreachableError) as err:
            service.stores()
        assert isinstance(err.value, ConnectionError) and proxy.base_url in str(err.value)
        assert proxy.accepted == 3


def test_nothing_listening_is_unreachable() -> None:
    with DroppingProxy(("127.0.0.1", 9)) as proxy:
        url = proxy.base_url
    with (
        remote.connect(url, retries=1) as service,
        pytest.raises(remote.ServiceUnreachableError, match="refused"),
    ):
        service.stores()


def test_a_silent_service_times_out(live: Live) -> None:
    with (
        DroppingProxy(("127.0.0.1", live.port), drop=10, hold=True) as proxy,
        remote.connect(proxy.base_url, timeout=0.2, retries=1) as service,
    ):
        began = time.monotonic()
        with pytest.raises(remote.ServiceTimeoutError) as err:
            service.stores()
        assert isinstance(err.value, TimeoutError)
        assert proxy.accepted == 2
        assert time.monotonic() - began < 5


def test_an_array_cut_off_midway_is_fetched_again(live: Live, tmp_path: Path) -> None:
    path = tmp_path / "cut.kas"
    values = np.random.default_rng(1).random(10_000)  # 80 kB, compressed or not
    kastore.dump({"v": values}, path)
    name = f"cut-{tmp_path.name[:40]}"
    with remote.connect(live.url) as service:
        service.upload(path, name, progress=False)
    try:
        with (
            DroppingProxy(("127.0.0.1", live.port), drop=1, cut_after=20_000) as proxy,
            remote.connect(proxy.base_url) as service,
        ):
            store = service[name]  # a short answer: the connection carries on
            assert np.array_equal(np.asarray(store["v"]), values)
            assert proxy.accepted == 2
    finally:
        with remote.connect(live.url) as service:
            service.delete(name)
