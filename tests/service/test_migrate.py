"""``python -m app migrate``: a local data directory copied into S3 and PostgreSQL.

The source is a data directory filled by the service itself; the target is a
fresh bucket of a real S3 server and a fresh PostgreSQL database, named by
``KASTORE_*`` variables as an operator would. What was migrated is then read
back through the service running on the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app import migrate
from app.__main__ import main
from app.config import Settings
from app.main import create_app
from tests._s3 import bucket_contents, s3_credentials

from ._support import (
    assert_serves,
    service_settings,
    sha256,
    stored_names,
    test_client,
    upload,
    write_big,
    write_tricky,
)


@dataclass(frozen=True)
class Source:
    """A data directory and the files stored in it, by store name."""

    data_dir: Path
    files: dict[str, Path]
    sha256s: dict[str, str]

    def blob(self, name: str) -> Path:
        sha = self.sha256s[name]
        return self.data_dir / "blobs" / sha[:2] / f"{sha}.kas"


@dataclass(frozen=True)
class Target:
    settings: Settings
    endpoint: str
    bucket: str

    def objects(self) -> list[str]:
        contents = bucket_contents(self.endpoint, self.bucket)
        assert not contents.uploads, contents
        return contents.objects


@pytest.fixture
def source(tmp_path: Path, testdata: Path) -> Source:
    """A data directory holding the tskit files, files with unicode and tricky keys,
    a file of several MiB, and one content under two names."""
    generated = tmp_path / "generated"
    generated.mkdir()
    files = {
        path.stem: path
        for path in [
            *sorted((testdata / "tskit").glob("*.trees")),
            testdata / "written-by-reference" / "unicode_keys.kas",
            testdata / "written-by-reference" / "many_keys_1000.kas",
            write_tricky(generated / "tricky.kas"),
            write_big(generated / "big.kas"),
        ]
    }
    files["single_population-copy"] = files["single_population"]
    data_dir = tmp_path / "source"
    sha256s = {}
    with test_client(create_app(service_settings(data_dir))) as client:
        for name, path in files.items():
            sha256s[name] = upload(client, path, name=name)["sha256"]
    return Source(data_dir, files, sha256s)


@pytest.fixture
def target(
    tmp_path: Path,
    s3_blob_url: str,
    s3_endpoint: str,
    postgres_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Target:
    """An empty bucket and database, named by the environment ``migrate`` reads."""
    variables = {
        "KASTORE_BLOB_URL": s3_blob_url,
        "KASTORE_S3_ENDPOINT_URL": s3_endpoint,
        "KASTORE_INDEX_URL": postgres_db_url,
        "KASTORE_DATA_DIR": str(tmp_path / "unused"),
    }
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    settings = service_settings(
        tmp_path / "unused",
        blob_url=s3_blob_url,
        s3_endpoint_url=s3_endpoint,
        index_url=postgres_db_url,
    )
    bucket = s3_blob_url.removeprefix("s3://").split("/")[0]
    return Target(settings, s3_endpoint, bucket)


def run(capsys: pytest.CaptureFixture[str], source: Source, *options: str) -> tuple[int, str, str]:
    """``python -m app migrate --from-data-dir SOURCE OPTIONS``: status, stdout, stderr."""
    status = main(["migrate", "--from-data-dir", str(source.data_dir), *options])
    out, err = capsys.readouterr()
    return status, out, err


def lines_starting(out: str, word: str) -> list[str]:
    """The store names of the progress lines starting with ``word``."""
    return sorted(line.split()[1] for line in out.splitlines() if line.split()[:1] == [word])


def served(settings: Settings) -> dict[str, Any]:
    """What the service on ``settings`` serves: every store's description."""
    with test_client(create_app(settings)) as client:
        return {name: client.get(f"/stores/{name}").json() for name in stored_names(client)}


def test_every_store_is_served_by_the_target_byte_for_byte(
    source: Source,
    target: Target,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(migrate, "PAGE", 3)  # several pages of names
    assert len(source.files) > 2 * migrate.PAGE

    status, out, err = run(capsys, source)

    assert (status, err) == (0, "")
    assert lines_starting(out, "copied") == sorted(source.files)
    distinct = len(set(source.sha256s.values()))
    assert f"verified {len(source.files)} stores, {distinct} files" in out
    with test_client(create_app(target.settings)) as client:
        assert stored_names(client) == sorted(source.files)
        for name, path in source.files.items():
            content = path.read_bytes()
            answer = client.get(f"/stores/{name}/file")
            assert answer.status_code == 200, answer.text
            assert answer.content == content, name
            expected_name = name + path.suffix
            assert expected_name in answer.headers["content-disposition"], name
            assert_serves(client, name, content)
    blobs = [key for key in target.objects() if "/blobs/" in key]
    assert len(blobs) == distinct, target.objects()
    assert not [key for key in target.objects() if "/tmp/" in key]


def test_a_second_run_copies_nothing(
    source: Source, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, source)[0] == 0
    before = (served(target.settings), target.objects())

    status, out, err = run(capsys, source)

    assert (status, err) == (0, "")
    assert lines_starting(out, "skipped") == sorted(source.files)
    assert lines_starting(out, "copied") == []
    assert "done: 0 copied, 0 replaced (0 bytes)" in out
    assert (served(target.settings), target.objects()) == before


def test_a_name_with_other_content_stops_the_migration_before_it_copies(
    source: Source, target: Target, capsys: pytest.CaptureFixture[str], testdata: Path
) -> None:
    other = testdata / "written-by-reference" / "extremes.kas"
    with test_client(create_app(target.settings)) as client:
        upload(client, other, name="tricky")
    before = (served(target.settings), target.objects())

    status, out, err = run(capsys, source)

    assert status == 1
    assert len(err.splitlines()) == 1, err
    assert "(tricky)" in err and "--replace" in err, err
    assert (served(target.settings), target.objects()) == before

    status, out, err = run(capsys, source, "--replace")

    assert (status, err) == (0, "")
    assert lines_starting(out, "replaced") == ["tricky"]
    stores = served(target.settings)
    assert stores["tricky"]["sha256"] == sha256(source.files["tricky"].read_bytes())
    assert sorted(stores) == sorted(source.files)
    assert sha256(other.read_bytes()) not in str(target.objects())


def test_a_corrupted_source_file_is_refused(
    source: Source, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = source.blob("unicode_keys")
    content = bytearray(blob.read_bytes())
    content[-1] ^= 0xFF  # same size, other bytes
    blob.chmod(0o600)
    blob.write_bytes(bytes(content))

    status, out, err = run(capsys, source)

    assert status == 1
    assert len(err.splitlines()) == 1, err
    assert "store 'unicode_keys'" in err and "corrupted" in err, err
    stores = served(target.settings)
    assert "unicode_keys" not in stores
    assert sorted(stores) == lines_starting(out, "copied")  # those before it, in name order
    assert not [key for key in target.objects() if "/tmp/" in key]
    assert sha256(bytes(content)) not in str(target.objects())


def test_a_dry_run_lists_and_writes_nothing(
    source: Source, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, source, "--dry-run")

    assert (status, err) == (0, "")
    listed = sorted(line.split()[2] for line in out.splitlines() if line.startswith("would copy"))
    assert listed == sorted(source.files)
    assert served(target.settings) == {}
    assert target.objects() == []


def test_verification_finds_a_damaged_blob_in_the_target(
    source: Source, target: Target, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, source)[0] == 0
    sha = source.sha256s["tricky"]
    key = next(key for key in target.objects() if key.endswith(f"{sha}.kas"))
    _s3_client(target.endpoint).put_object(Bucket=target.bucket, Key=key, Body=b"damaged")

    status, _, err = run(capsys, source)

    assert status == 1
    assert "verification failed" in err and "'tricky'" in err, err
    assert run(capsys, source, "--no-verify")[0] == 0


def test_the_source_as_target_is_refused(
    source: Source, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("KASTORE_BLOB_URL", "KASTORE_INDEX_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KASTORE_DATA_DIR", str(source.data_dir))

    status, _, err = run(capsys, source)

    assert status == 1
    assert "the target is the source" in err and "KASTORE_INDEX_URL" in err, err


def test_a_folder_that_is_no_data_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KASTORE_DATA_DIR", str(tmp_path / "target"))
    status = main(["migrate", "--from-data-dir", str(tmp_path)])
    err = capsys.readouterr().err

    assert status == 1
    assert "is not a data directory" in err, err
    assert not (tmp_path / "index.sqlite3").exists()


def _s3_client(endpoint: str) -> Any:
    import boto3

    credentials = s3_credentials(endpoint)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=credentials["AWS_REGION"],
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )
