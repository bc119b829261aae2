"""GET /metrics: the Prometheus series an operator watches, and who may read them."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.security import hash_key

from ._support import TestClient, error_of, upload
from .conftest import ClientFactory

ADMIN, WRITER = "admin-key", "writer-key"
KEY_LINES = f"{hash_key(ADMIN)} admin\n{hash_key(WRITER)} write\n"

Labels = tuple[tuple[str, str], ...]


def scrape(client: TestClient, **headers: str) -> dict[str, dict[Labels, float]]:
    """Every sample of /metrics: ``{name: {sorted labels: value}}``."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    assert samples, "no series at all"
    return samples


def requests_of(
    samples: dict[str, dict[Labels, float]], route: str, method: str
) -> dict[str, float]:
    """Requests counted for one route and method, by status."""
    return {
        dict(labels)["status"]: value
        for labels, value in samples["kastore_http_requests_total"].items()
        if dict(labels)["route"] == route and dict(labels)["method"] == method
    }


def test_requests_are_counted_by_route_template_method_and_status(
    client: TestClient, tskit_file: Path
) -> None:
    upload(client, tskit_file, name="a")
    upload(client, tskit_file, name="b")
    for name in ["a", "b", "a", "missing"]:
        client.get(f"/stores/{name}/keys")
    client.get("/stores/a/arrays/edges/left")
    client.get("/no/such/route")
    samples = scrape(client)
    assert requests_of(samples, "/stores/{name}/keys", "GET") == {"200": 3, "404": 1}
    assert requests_of(samples, "/stores", "POST") == {"201": 2}
    assert requests_of(samples, "/stores/{name}/arrays/{key}", "GET") == {"200": 1}
    assert requests_of(samples, "unmatched", "GET") == {"404": 1}
    durations = samples["kastore_http_request_duration_seconds_count"]
    assert durations[(("method", "GET"), ("route", "/stores/{name}/keys"))] == 4


def test_bytes_received_and_sent_add_up(client: TestClient, tskit_file: Path) -> None:
    content = tskit_file.read_bytes()
    client.put("/stores/sim", content=content)
    array = client.get("/stores/sim/arrays/edges/left")
    samples = scrape(client)
    received = samples["kastore_http_received_bytes_total"]
    sent = samples["kastore_http_sent_bytes_total"]
    assert received[(("method", "PUT"), ("route", "/stores/{name}"))] == len(content)
    route = (("method", "GET"), ("route", "/stores/{name}/arrays/{key}"))
    assert sent[route] == len(array.content) > 0


def test_uploads_are_counted_accepted_and_refused_by_reason(
    make_client: ClientFactory, tskit_file: Path
) -> None:
    client = make_client(max_upload_bytes=len(tskit_file.read_bytes()) + 10)
    upload(client, tskit_file, name="sim")
    client.put("/stores/sim2", content=tskit_file.read_bytes())
    client.post("/stores", files={"file": ("sim.trees", tskit_file.read_bytes())})  # exists
    client.put("/stores/bad", content=b"not a kastore file")
    client.put("/stores/big", content=tskit_file.read_bytes() + b"\0" * 100)
    client.put("/stores/-bad-name", content=b"x")
    client.get("/stores/sim")  # not an upload
    samples = scrape(client)
    assert samples["kastore_uploads_accepted_total"] == {(): 2}
    refused = {
        dict(labels)["reason"]: value
        for labels, value in samples["kastore_uploads_refused_total"].items()
    }
    assert refused == {
        "store_exists": 1,
        "invalid_kastore_file": 1,
        "upload_too_large": 1,
        "invalid_store_name": 1,
    }


def test_stores_keys_and_bytes_stored(
    client: TestClient, tskit_file: Path, unicode_file: Path
) -> None:
    assert scrape(client)["kastore_stores"] == {(): 0}
    first = upload(client, tskit_file, name="a")
    upload(client, tskit_file, name="b")
    second = upload(client, unicode_file, name="c")
    client.delete("/stores/b")
    samples = scrape(client)
    assert samples["kastore_stores"] == {(): 2}
    assert samples["kastore_stored_keys"] == {(): first["num_keys"] + second["num_keys"]}
    assert samples["kastore_stored_bytes"] == {(): first["size"] + second["size"]}


def test_open_store_cache_hits_and_misses(client: TestClient, tskit_file: Path) -> None:
    upload(client, tskit_file, name="sim")
    before = scrape(client)
    for _ in range(3):
        client.get("/stores/sim/arrays/edges/left")
    after = scrape(client)
    misses = after["kastore_open_store_cache_misses_total"][()]
    hits = after["kastore_open_store_cache_hits_total"][()]
    assert misses - before["kastore_open_store_cache_misses_total"][()] == 1
    assert hits - before["kastore_open_store_cache_hits_total"][()] == 2


def test_metrics_need_the_admin_scope_once_keys_exist(make_client: ClientFactory) -> None:
    client = make_client(api_keys=KEY_LINES)
    answer = client.get("/metrics")
    assert error_of(answer, 401)["error"] == "missing_api_key"
    assert "'admin'" in answer.json()["detail"]
    assert "www-authenticate" in answer.headers
    forbidden = client.get("/metrics", headers={"authorization": f"Bearer {WRITER}"})
    assert error_of(forbidden, 403)["error"] == "insufficient_scope"
    assert "kastore_stores" in scrape(client, authorization=f"Bearer {ADMIN}")
    assert "kastore_stores" in scrape(client, **{"x-api-key": ADMIN})


def test_refusals_by_key_are_counted_under_their_route(make_client: ClientFactory) -> None:
    client = make_client(api_keys=KEY_LINES)
    client.put("/stores/sim", content=b"x")
    client.delete("/stores/sim", headers={"x-api-key": "wrong"})
    samples = scrape(client, authorization=f"Bearer {ADMIN}")
    assert requests_of(samples, "/stores/{name}", "PUT") == {"401": 1}
    assert requests_of(samples, "/stores/{name}", "DELETE") == {"401": 1}
    refused = samples["kastore_uploads_refused_total"]
    assert refused == {(("reason", "missing_api_key"),): 1}


def test_metrics_are_public_without_keys(client: TestClient) -> None:
    assert "kastore_stores" in scrape(client)


def test_metrics_can_be_turned_off(make_client: ClientFactory) -> None:
    client = make_client(metrics=False)
    assert error_of(client.get("/metrics"), 404)["error"] == "not_found"
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("path", ["/metrics"])
def test_metrics_are_not_in_the_api_document(client: TestClient, path: str) -> None:
    assert path not in client.get("/openapi.json").json()["paths"]
