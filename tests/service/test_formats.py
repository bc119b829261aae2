"""More forms of an array: npy, CSV, text and rows, chosen by ?format= or Accept."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

import kastore

from ._support import TestClient, error_of, upload
from .conftest import ClientFactory

STORE = "/stores/island_model_with_metadata"
FLOATS = f"{STORE}/arrays/nodes/time"
RECORD = f"{STORE}/arrays/provenances/record"


@pytest.fixture(scope="module")
def trees(library: dict[str, Path]) -> kastore.Store:
    return kastore.load(library["island_model_with_metadata"])


@pytest.mark.parametrize("how", ["format", "accept"])
def test_npy_loads_with_numpy_and_has_an_exact_length(
    reader: TestClient, trees: kastore.Store, how: str
) -> None:
    answer = (
        reader.get(FLOATS, params={"format": "npy"})
        if how == "format"
        else reader.get(FLOATS, headers={"accept": "application/x-npy"})
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/x-npy"
    assert int(answer.headers["content-length"]) == len(answer.content)
    assert answer.headers["content-disposition"].startswith('attachment; filename="nodes_time.npy"')
    loaded = np.load(io.BytesIO(answer.content))
    assert loaded.dtype == trees["nodes/time"].dtype and loaded.shape == trees["nodes/time"].shape
    assert np.array_equal(loaded, trees["nodes/time"])


def test_npy_answers_ranges_across_header_and_data(reader: TestClient) -> None:
    whole = reader.get(FLOATS, params={"format": "npy"}).content
    for first, last in [(0, 9), (100, 200), (len(whole) - 5, len(whole) - 1)]:
        answer = reader.get(
            FLOATS, params={"format": "npy"}, headers={"range": f"bytes={first}-{last}"}
        )
        assert answer.status_code == 206
        assert answer.content == whole[first : last + 1]
        assert answer.headers["content-range"] == f"bytes {first}-{last}/{len(whole)}"


def test_npy_of_a_slice(reader: TestClient, trees: kastore.Store) -> None:
    answer = reader.get(FLOATS, params={"format": "npy", "start": 3, "stop": 8})
    assert np.array_equal(np.load(io.BytesIO(answer.content)), trees["nodes/time"][3:8])


@pytest.mark.parametrize("key", ["nodes/time", "edges/left", "nodes/flags", "provenances/record"])
def test_csv_is_the_key_then_one_value_a_line(
    reader: TestClient, trees: kastore.Store, key: str
) -> None:
    answer = reader.get(f"{STORE}/arrays/{key}", headers={"accept": "text/csv"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; header=present; charset=utf-8"
    rows = list(csv.reader(io.StringIO(answer.text)))
    expected = trees[key]
    assert rows[0] == [key]
    assert len(rows) == len(expected) + 1
    values = np.array([row[0] for row in rows[1:]], dtype=np.float64)
    assert np.array_equal(values, expected.astype(np.float64), equal_nan=True)


def test_text_of_a_provenance_record(reader: TestClient, trees: kastore.Store) -> None:
    answer = reader.get(RECORD, params={"format": "text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.text == trees["provenances/record"].tobytes().decode()
    assert "content-disposition" not in answer.headers  # shown, not downloaded


def test_text_of_numbers_is_refused(reader: TestClient) -> None:
    body = error_of(reader.get(FLOATS, params={"format": "text"}), 422)
    assert "UTF-8" in body["detail"]


def test_accept_text_is_not_chosen_for_numbers(reader: TestClient) -> None:
    body = error_of(reader.get(FLOATS, headers={"accept": "text/plain"}), 406)
    assert "text/plain" not in body["detail"].split("accepts none of")[1]


def test_rows_of_a_ragged_column(reader: TestClient, trees: kastore.Store) -> None:
    answer = reader.get(RECORD, params={"format": "rows"})
    assert answer.status_code == 200
    body = answer.json()
    data, offsets = trees["provenances/record"], trees["provenances/record_offset"]
    assert body["length"] == len(offsets) - 1
    for i, row in enumerate(body["rows"]):
        assert row == data[offsets[i] : offsets[i + 1]].tobytes().decode()
        json.loads(row)  # tskit's provenance records are JSON
    sliced = reader.get(RECORD, params={"format": "rows", "start": 1, "stop": 2}).json()
    assert sliced["rows"] == body["rows"][1:2]


def test_rows_of_numbers(reader: TestClient, trees: kastore.Store) -> None:
    body = reader.get(f"{STORE}/arrays/individuals/location", params={"format": "rows"}).json()
    data, offsets = trees["individuals/location"], trees["individuals/location_offset"]
    assert len(body["rows"]) == len(offsets) - 1 > 0
    assert body["rows"] == [data[a:b].tolist() for a, b in itertools.pairwise(offsets)]


def test_rows_without_offsets_is_refused(reader: TestClient) -> None:
    body = error_of(reader.get(FLOATS, params={"format": "rows"}), 422)
    assert "nodes/time_offset" in body["detail"]


def test_an_unknown_format_lists_the_formats(reader: TestClient) -> None:
    body = error_of(reader.get(FLOATS, params={"format": "parquet"}), 422)
    for name in ["raw", "json", "npy", "csv", "text", "rows"]:
        assert name in body["detail"]


def test_each_form_has_its_own_etag_and_varies_on_accept(reader: TestClient) -> None:
    etags = set()
    for form in ["raw", "json", "npy", "csv"]:
        answer = reader.get(FLOATS, params={"format": form})
        assert answer.headers["vary"] == "Accept, Accept-Encoding"
        etags.add(answer.headers["etag"])
        again = reader.get(
            FLOATS, params={"format": form}, headers={"if-none-match": answer.headers["etag"]}
        )
        assert again.status_code == 304
    assert len(etags) == 4


@pytest.mark.parametrize("form", ["csv", "text", "rows"])
def test_text_forms_keep_the_json_size_limit(
    make_client: ClientFactory, tskit_file: Path, form: str
) -> None:
    client = make_client(max_json_bytes=16)
    upload(client, tskit_file)
    path = "/stores/single_population/arrays/provenances/record"
    body = error_of(client.get(path, params={"format": form}), 413)
    assert body["error"] == "json_too_large"
