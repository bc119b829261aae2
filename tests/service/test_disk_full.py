"""A full disk, for real: the data directory on a small tmpfs.

Mounting needs root (the CI machine runs as root); elsewhere these tests are
skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import kastore

from ._support import TestClient, error_of, leftovers, stored_names, upload
from .conftest import ClientFactory

pytestmark = pytest.mark.local_storage  # the files of a full disk

DISK_BYTES = 24 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MiB tmpfs, unmounted at the end whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill it needs root (the CI machine is root)")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def data_dir(disk: Path) -> Path:
    """The data directory of ``make_client``'s apps: on the small disk."""
    return disk / "data"


@pytest.fixture
def disk_client(make_client: ClientFactory) -> TestClient:
    return make_client(min_free_bytes=2 << 20)


def _free(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def _fill(disk: Path, *, leave: int = 0) -> Path:
    """Take all free space of ``disk`` but ``leave`` bytes (whole pages)."""
    filler = disk / f"filler-{len(list(disk.glob('filler-*')))}"
    size = _free(disk) - leave
    with filler.open("wb") as out:
        if size > 0:
            os.posix_fallocate(out.fileno(), 0, size)
    return filler


def _store(path: Path, size: int, seed: int = 0) -> Path:
    """A kastore file of about ``size`` bytes, different for each seed."""
    values = np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8)
    kastore.dump({"data": values, "seed": np.array([seed])}, path)
    return path


def test_an_upload_larger_than_the_free_space_is_507_and_leaves_nothing(
    disk: Path, disk_client: TestClient, tmp_path: Path
) -> None:
    data_dir = disk / "data"
    big = _store(tmp_path / "big.kas", 30 << 20)
    with big.open("rb") as file:
        answer = disk_client.put("/stores/big", content=file.read())
    body = error_of(answer, 507)
    assert body["error"] == "insufficient_storage"
    assert "DELETE" in body["detail"]
    assert leftovers(data_dir) == []
    assert stored_names(disk_client) == []
    # The space came back: a file that fits is stored.
    small = _store(tmp_path / "small.kas", 1 << 20)
    upload(disk_client, small)
    assert stored_names(disk_client) == ["small"]


def test_a_blob_whose_name_cannot_be_recorded_is_not_kept(
    disk: Path, disk_client: TestClient, tmp_path: Path
) -> None:
    """The upload fits, to the page; the index then has no room for its row: 507, no orphan."""
    data_dir = disk / "data"
    first = _store(tmp_path / "first.kas", 1 << 20, seed=1)
    upload(disk_client, first)
    kept = leftovers(data_dir)
    second = _store(tmp_path / "second.kas", 4 << 20, seed=2)
    content = second.read_bytes()
    _fill(disk, leave=-(-len(content) // PAGE) * PAGE)
    answer = disk_client.put("/stores/second", content=content)
    assert error_of(answer, 507)["error"] == "insufficient_storage"
    assert leftovers(data_dir) == kept
    assert stored_names(disk_client) == ["first"]
    assert disk_client.get("/stores/first/file").content == first.read_bytes()


def test_delete_frees_space_when_the_disk_is_full(
    disk: Path, disk_client: TestClient, tmp_path: Path
) -> None:
    data_dir = disk / "data"
    paths = [_store(tmp_path / f"s{seed}.kas", 2 << 20, seed=seed) for seed in range(3)]
    for path in paths:
        upload(disk_client, path)
    filler = _fill(disk)
    # Full: nothing more goes in, and health says so.
    answer = disk_client.put("/stores/more", content=paths[0].read_bytes())
    assert error_of(answer, 507)["error"] == "insufficient_storage"
    assert error_of(disk_client.get("/healthz"), 503)["error"] == "unhealthy"
    for path in paths[:2]:
        assert disk_client.delete(f"/stores/{path.stem}").status_code == 204
    assert stored_names(disk_client) == ["s2"]
    assert len(leftovers(data_dir)) == 1
    assert _free(disk) >= 3 << 20
    # The freed space is usable at once; once the filler goes, all is well again.
    upload(disk_client, _store(tmp_path / "after.kas", 1 << 20, seed=9))
    filler.unlink()
    assert disk_client.get("/healthz").status_code == 200
    assert (data_dir / "reserve").stat().st_size > 0
    assert disk_client.get("/stores/s2/file").content == paths[2].read_bytes()


def test_healthz_reports_low_space_and_recovers(
    disk: Path, disk_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert disk_client.get("/healthz").status_code == 200
    filler = _fill(disk, leave=1 << 20)  # under the 2 MiB asked for
    with caplog.at_level("ERROR"):
        body = error_of(disk_client.get("/healthz"), 503)
    assert body["error"] == "unhealthy"
    assert "low on space" in body["detail"]
    assert "KASTORE_MIN_FREE_BYTES" in body["detail"]
    assert str(disk) not in body["detail"]  # the path is the log's business
    assert str(disk) in caplog.text
    filler.unlink()
    assert disk_client.get("/healthz").status_code == 200
