"""``kastore.load`` and ``kastore ls`` on the service's whole-file URLs, read lazily by Range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kastore
import kastore.remote as remote
from kastore import cli

from .conftest import Live

#: 100 MB in 10 arrays, and a few small ones.
BIG = {f"x{i}": np.arange(1_250_000, dtype=np.float64) + i for i in range(10)} | {
    f"small/{i}": np.arange(i, dtype=np.int32) for i in range(20)
}


@pytest.fixture(scope="module")
def big_url(live: Live, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("big") / "big100.kas"
    kastore.dump(BIG, path)
    with remote.connect(live.url) as service:
        info = service.replace(path, progress=False)
    return f"{info.url}/file"


def test_loading_100_mb_then_one_array_reads_under_1_percent_more_than_the_array(
    live: Live, big_url: str
) -> None:
    size = sum(array.nbytes for array in BIG.values())
    live.clear()
    store = kastore.load(big_url)
    assert list(store) == sorted(BIG)
    assert len(live.seen) == 1
    assert sum(seen.body_bytes for seen in live.seen) < size / 100
    x7 = store["x7"]
    assert np.array_equal(x7, BIG["x7"])
    assert len(live.seen) == 2
    assert all(seen.headers["range"].startswith("bytes=") for seen in live.seen)
    assert sum(seen.body_bytes for seen in live.seen) < size / 100 + x7.nbytes


def test_ls_of_a_service_url_matches_the_file(
    big_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.kas"
    kastore.dump(BIG, path)
    assert cli.main(["ls", "-lH", str(path)]) == 0
    expected = capsys.readouterr().out
    assert cli.main(["ls", "-lH", big_url]) == 0
    assert capsys.readouterr().out == expected and "9.5M x9" in expected


def test_a_tskit_file_loads_from_the_service(live: Live, tskit_file: Path) -> None:
    with remote.connect(live.url) as service:
        info = service.replace(tskit_file, "tskit-by-url", progress=False)
    local = kastore.load(tskit_file)
    with kastore.load(f"{info.url}/file") as store:
        assert list(store) == list(local)
        for key in local:
            assert np.array_equal(store[key], local[key]) and store[key].dtype == local[key].dtype


def test_a_missing_store_is_file_not_found(live: Live, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"{live.url}/stores/no-such-store/file"
    with pytest.raises(FileNotFoundError, match="no store named 'no-such-store'"):
        kastore.load(url)
    assert cli.main(["ls", url]) == 1
    assert "no store named 'no-such-store'" in capsys.readouterr().err
