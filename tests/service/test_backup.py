"""The README's backup of a running server: blobs, SQLite's online backup of the index, blobs."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from ._server import Server
from ._support import assert_serves, upload

pytestmark = pytest.mark.e2e


def test_a_backup_taken_while_serving_restores_every_store(
    tmp_path: Path, tskit_file: Path, unicode_file: Path
) -> None:
    data, backup = tmp_path / "data", tmp_path / "backup"
    running = Server(data, tmp_path / "server.log")
    running.start()
    try:
        upload(running.client, tskit_file, name="first")
        shutil.copytree(data / "blobs", backup / "blobs")
        upload(running.client, unicode_file, name="meanwhile")  # after the first copy
        source = sqlite3.connect(data / "index.sqlite3")
        target = sqlite3.connect(backup / "index.sqlite3")
        with source, target:
            source.backup(target)  # what sqlite3's .backup does
        source.close()
        target.close()
        shutil.copytree(data / "blobs", backup / "blobs", dirs_exist_ok=True)
        upload(running.client, tskit_file, name="after")  # not in the backup
    finally:
        running.close()
    restored = Server(backup, tmp_path / "restored.log")
    restored.start()
    try:
        names = [store["name"] for store in restored.client.get("/stores").json()["stores"]]
        assert names == ["first", "meanwhile"]
        assert_serves(restored.client, "first", tskit_file.read_bytes())
        assert_serves(restored.client, "meanwhile", unicode_file.read_bytes())
    finally:
        restored.close()
