"""The summary route and the numpy work behind it: what the UI's plots are drawn from."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kastore
from app.routes import summary as summary_route
from app.summary import BLOCK_ELEMENTS, summarize

from ._support import TRICKY_KEYS, TestClient, upload

DTYPES = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
FLOATS = ["float32", "float64"]


def _missing(value: Any) -> bool:
    """NaN as summarize gives it, or null as JSON carries it."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _check(array: np.ndarray, summary: dict[str, Any], *, buckets: int, bins: int = 1) -> None:
    """Everything a summary says, checked against numpy on ``array``."""
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    assert summary["length"] == len(array)
    assert summary["finite_count"] == len(finite)
    if array.dtype.kind == "f":
        assert summary["nan_count"] == np.count_nonzero(np.isnan(array))
        assert summary["inf_count"] == np.count_nonzero(np.isinf(array))
    if len(finite):
        assert summary["min"] == finite.min()
        assert summary["max"] == finite.max()
        # Near the largest float, a sum overflows or not depending on its order.
        if float(np.abs(finite.astype(np.float64)).max()) * len(finite) < 1e307:
            assert summary["mean"] == pytest.approx(finite.mean(dtype=np.float64), rel=1e-9)
    else:
        assert (summary["min"], summary["max"], summary["mean"]) == (None, None, None)
    starts = summary["buckets"]["starts"]
    assert len(starts) == min(buckets, len(array))
    ends = [*starts[1:], len(array)] if starts else []
    for start, end, low, high in zip(
        starts, ends, summary["buckets"]["min"], summary["buckets"]["max"], strict=True
    ):
        assert end > start
        run = array[start:end]
        run = run[np.isfinite(run)] if array.dtype.kind == "f" else run
        if len(run):
            assert (low, high) == (run.min(), run.max())
        else:
            assert _missing(low) and _missing(high)
    counts = summary["histogram"]["counts"]
    edges = summary["histogram"]["edges"]
    if bins == 0:
        assert (edges, counts) == ([], [])
        return
    assert len(counts) <= bins
    assert sum(counts) == len(finite)
    if len(finite):
        assert len(edges) == len(counts) + 1
        assert edges[0] == finite.min() and edges[-1] >= finite.max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_integers_down_to_the_last_value(dtype: str) -> None:
    info = np.iinfo(dtype)
    array = np.array([info.min, info.max, 0, 1, info.max, info.min + 1], dtype=dtype)
    summary = summarize(array, buckets=4, bins=8)
    _check(array, summary, buckets=4, bins=8)
    # Exact, not rounded through float64.
    assert (summary["min"], summary["max"]) == (int(info.min), int(info.max))
    counts = summary["histogram"]["counts"]
    assert counts[0] == np.count_nonzero(array < summary["histogram"]["edges"][1])
    assert counts[-1] >= 2


@settings(max_examples=60, deadline=None)
@given(
    array=hnp.arrays(
        st.sampled_from([np.dtype(d) for d in DTYPES + FLOATS]),
        st.integers(0, 300),
        elements={"allow_nan": True, "allow_infinity": True},
    ),
    buckets=st.integers(0, 50),
    bins=st.integers(0, 40),
)
def test_any_array(array: np.ndarray, buckets: int, bins: int) -> None:
    _check(array, summarize(array, buckets=buckets, bins=bins), buckets=buckets, bins=bins)


def test_the_histogram_is_numpys() -> None:
    """Across many blocks, and with every value on a whole number (no edge rounding)."""
    values = np.random.default_rng(1).integers(-500, 500, 3 * BLOCK_ELEMENTS + 7)
    for array in (values, values.astype(np.float64) * 0.25):
        histogram = summarize(array, buckets=10, bins=40)["histogram"]
        expected, _ = np.histogram(array, bins=np.array(histogram["edges"]))
        assert histogram["counts"] == expected.tolist()


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_the_whole_64_bit_range_in_one_bin(dtype: str) -> None:
    info = np.iinfo(dtype)
    array = np.array([info.min, info.max], dtype=dtype)
    histogram = summarize(array, buckets=1, bins=1)["histogram"]
    assert histogram == {"edges": [int(info.min), int(info.min) + 2**64], "counts": [2]}


def test_small_integer_ranges_get_one_bin_per_value() -> None:
    array = np.array([3, 5, 5, 7, 7, 7], dtype=np.int32)
    histogram = summarize(array, buckets=10, bins=100)["histogram"]
    assert histogram == {"edges": [3, 4, 5, 6, 7, 8], "counts": [1, 0, 2, 0, 3]}


def test_floats_spanning_more_than_the_largest_float() -> None:
    array = np.array([-1e308, 0.0, 1e308])
    histogram = summarize(array, buckets=3, bins=4)["histogram"]
    assert histogram["counts"] == [1, 0, 1, 1]
    assert np.isfinite(histogram["edges"]).all()


@pytest.mark.parametrize("dtype", FLOATS)
def test_floats_spanning_a_few_subnormals_or_far_from_zero(dtype: str) -> None:
    for array in (
        np.array([0.0, 5e-324, 1e-323]),
        np.array([3e38, 3.0000002e38, -3e38], dtype=dtype),
    ):
        values = array.astype(dtype)
        _check(values, summarize(values, buckets=2, bins=4), buckets=2, bins=4)


def test_non_finite_values_are_counted_and_left_out() -> None:
    array = np.array([np.nan, 2.0, np.inf, -np.inf, 4.0, np.nan])
    summary = summarize(array, buckets=6, bins=2)
    assert (summary["nan_count"], summary["inf_count"], summary["finite_count"]) == (2, 2, 2)
    assert (summary["min"], summary["max"], summary["mean"]) == (2.0, 4.0, 3.0)
    assert _missing(summary["buckets"]["min"][0])
    assert summary["buckets"]["min"][1] == 2.0


# --- the route ----------------------------------------------------------------------------


@pytest.fixture
def stored(client: TestClient, tmp_path: Path) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {
        "walk": np.cumsum(np.random.default_rng(2).normal(size=250_000)),
        "ints": np.random.default_rng(3).integers(-5, 6, 10_000).astype(np.int16),
        "gappy": np.array([1.0, np.nan, np.inf, 3.0]),
        "empty": np.zeros(0, dtype=np.uint32),
    }
    kastore.dump(arrays, tmp_path / "s.kas")
    upload(client, tmp_path / "s.kas")
    return arrays


@pytest.mark.parametrize("key", ["walk", "ints", "gappy", "empty"])
def test_the_route_summarizes_the_stored_array(
    client: TestClient, stored: dict[str, np.ndarray], key: str
) -> None:
    answer = client.get(f"/stores/s/summary/{key}?buckets=100&bins=30")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    array = stored[key]
    assert (body["key"], body["dtype"], body["total_length"]) == (key, str(array.dtype), len(array))
    assert (body["start"], body["stop"]) == (0, len(array))
    _check(array, body, buckets=100, bins=30)


def test_a_slice_is_summarized_with_positions_in_the_whole(
    client: TestClient, stored: dict[str, np.ndarray]
) -> None:
    body = client.get("/stores/s/summary/walk?start=1000&stop=2000&buckets=10").json()
    assert (body["start"], body["stop"], body["length"]) == (1000, 2000, 1000)
    assert body["buckets"]["starts"] == list(range(1000, 2000, 100))
    assert body["min"] == stored["walk"][1000:2000].min()
    clipped = client.get("/stores/s/summary/walk?start=249990&stop=10000000").json()
    assert (clipped["start"], clipped["stop"]) == (249_990, 250_000)
    empty = client.get("/stores/s/summary/walk?start=5&stop=2").json()
    assert (empty["length"], empty["min"]) == (0, None)


def test_defaults_and_size(client: TestClient, stored: dict[str, np.ndarray]) -> None:
    answer = client.get("/stores/s/summary/walk")
    body = answer.json()
    assert len(body["buckets"]["starts"]) == 1000
    assert len(body["histogram"]["counts"]) == 100
    # A few kilobytes stand for 2 MB of values.
    assert len(answer.content) < 80_000 < stored["walk"].nbytes


def test_either_part_can_be_left_out(client: TestClient, stored: dict[str, np.ndarray]) -> None:
    whole = client.get("/stores/s/summary/ints?buckets=10&bins=5").json()
    plain = client.get("/stores/s/summary/ints?buckets=10&bins=0").json()
    counted = client.get("/stores/s/summary/ints?buckets=0&bins=5").json()
    assert plain["histogram"] == {"edges": [], "counts": []}
    assert counted["buckets"] == {"starts": [], "min": [], "max": []}
    assert plain["buckets"] == whole["buckets"]
    assert counted["histogram"] == whole["histogram"]
    for part in (plain, counted):
        assert (part["min"], part["max"], part["mean"]) == (
            whole["min"],
            whole["max"],
            whole["mean"],
        )


def test_an_unchanged_summary_answers_304(client: TestClient, stored: dict[str, Any]) -> None:
    first = client.get("/stores/s/summary/walk")
    etag = first.headers["etag"]
    again = client.get("/stores/s/summary/walk", headers={"if-none-match": etag})
    assert (again.status_code, again.content) == (304, b"")
    other = client.get("/stores/s/summary/walk?bins=10", headers={"if-none-match": etag})
    assert other.status_code == 200
    assert other.headers["etag"] != etag
    assert client.get("/stores/s/summary/walk").content == first.content


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/stores/nope/summary/walk", 404, "store_not_found"),
        ("/stores/s/summary/nope", 404, "key_not_found"),
        ("/stores/s/summary/walk?buckets=-1", 422, "invalid_request"),
        ("/stores/s/summary/walk?buckets=10001", 422, "invalid_request"),
        ("/stores/s/summary/walk?bins=1001", 422, "invalid_request"),
        ("/stores/s/summary/walk?start=-1", 422, "invalid_request"),
    ],
)
def test_errors(
    client: TestClient, stored: dict[str, Any], path: str, status: int, code: str
) -> None:
    answer = client.get(path)
    assert answer.status_code == status
    assert answer.json()["error"] == code
    assert answer.json()["detail"]


def test_every_key_reads_as_in_the_array_route(
    reader: TestClient, library: dict[str, Path]
) -> None:
    listing = reader.get("/stores/tricky/keys").json()["keys"]
    assert [entry["key"] for entry in listing] == sorted(TRICKY_KEYS, key=str.encode)
    for entry in listing:
        url = entry["url"].replace("/arrays/", "/summary/")
        answer = reader.get(url)
        assert answer.status_code == 200, (entry["key"], answer.text)
        assert answer.json()["key"] == entry["key"]
        assert answer.json()["total_length"] == entry["length"]


def test_it_is_documented(reader: TestClient) -> None:
    operation = reader.get("/openapi.json").json()["paths"]["/stores/{name}/summary/{key}"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ArraySummary"}
    assert {parameter["name"] for parameter in operation["parameters"]} >= {
        "start",
        "stop",
        "buckets",
        "bins",
    }


def test_at_most_two_summaries_are_computed_at_once_off_the_loop(
    client: TestClient, stored: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each holds a worker thread: the others wait, and /healthz is answered meanwhile."""
    running: list[int] = []
    lock = threading.Lock()
    now = [0]
    release = threading.Event()

    def slow(array: np.ndarray, **options: Any) -> dict[str, Any]:
        with lock:
            now[0] += 1
            running.append(now[0])
        release.wait(timeout=10)
        with lock:
            now[0] -= 1
        return summarize(array, **options)

    monkeypatch.setattr(summary_route, "summarize", slow)
    # Summaries are kept by content: start with none, whatever ran before.
    monkeypatch.setattr(summary_route, "_cache", summary_route._Summaries(10))
    with ThreadPoolExecutor(4) as pool:
        answers = [
            pool.submit(client.get, f"/stores/s/summary/walk?buckets={n}") for n in range(5, 9)
        ]
        deadline = time.monotonic() + 10
        while len(running) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # time enough for a third to start, were it allowed to
        assert client.get("/healthz").status_code == 200
        assert running == [1, 2]
        release.set()
        assert [answer.result().status_code for answer in answers] == [200] * 4
    assert max(running) == 2 and len(running) == 4
