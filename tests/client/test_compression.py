"""kastore.remote asks for compressed arrays, and reads them back exactly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import kastore
import kastore.remote as remote

from .conftest import Live

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stored(live: Live, tskit_file: Path, tmp_path: Path) -> Iterator[str]:
    """``tskit_file`` stored under a name of this test's own; deleted afterwards."""
    name = f"coded-{tmp_path.name}"[:100]
    with remote.connect(live.url) as service:
        service.upload(tskit_file, name, progress=False)
        yield name
        service.delete(name)


def test_arrays_come_zstd_compressed_and_decode_exactly(
    live: Live, stored: str, tskit_file: Path
) -> None:
    live.clear()
    with remote.connect(live.url) as service, kastore.load(tskit_file) as local:
        store = service[stored]
        fetched = {key: np.asarray(store[key]) for key in local}
        for key in local:
            assert np.array_equal(fetched[key], local[key]), key
            assert fetched[key].dtype == local[key].dtype, key
    arrays = [seen for seen in live.seen if "/arrays/" in seen.path]
    assert len(arrays) == len(fetched)
    assert {seen.headers["accept-encoding"] for seen in arrays} == {"zstd, gzip"}
    prefix = f"/stores/{stored}/arrays/"
    coded = {
        seen.path.removeprefix(prefix): seen.body_bytes
        for seen in arrays
        if seen.answer_headers.get("content-encoding") == "zstd"
    }
    assert coded, "no array came compressed"
    assert all(fetched[key].nbytes >= 1024 for key in coded)  # smaller ones come as they are
    assert sum(coded.values()) < 0.6 * sum(fetched[key].nbytes for key in coded)


def test_a_slice_of_a_compressed_array_is_exact(live: Live, stored: str, tskit_file: Path) -> None:
    with remote.connect(live.url) as service, kastore.load(tskit_file) as local:
        expected = np.asarray(local["edges/left"])
        live.clear()
        got = service[stored]["edges/left"][100:1300]
    assert np.array_equal(got, expected[100:1300])
    (array,) = [seen for seen in live.seen if "/arrays/" in seen.path]
    assert array.answer_headers.get("content-encoding") == "zstd"


def test_without_zstandard_the_client_asks_for_gzip(live: Live, stored: str) -> None:
    """Where zstandard is not installed, the standard library decodes gzip."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["zstandard"] = None  # as if it were not installed
        import numpy as np
        import kastore, kastore.remote as remote
        with remote.connect({live.url!r}) as service:
            values = np.asarray(service[{stored!r}]["edges/left"])
        print(values.dtype, len(values), float(values.sum()))
        """
    )
    live.clear()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    with remote.connect(live.url) as service:
        expected = np.asarray(service[stored]["edges/left"])
    assert done.stdout.split() == ["float64", str(len(expected)), str(float(expected.sum()))]
    (array,) = [seen for seen in live.seen if seen.path.endswith("/arrays/edges/left")][:1]
    assert array.headers["accept-encoding"] == "gzip"
    assert array.answer_headers.get("content-encoding") == "gzip"
