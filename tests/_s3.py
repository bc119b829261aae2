"""A real S3-compatible server for the tests: moto's, in a subprocess, on a free port.

``s3_server()`` starts ``python -m moto.server`` and yields its endpoint URL
once it answers; the server holds everything in memory and is killed on exit.
Clients need credentials, any will do: ``s3_credentials(endpoint)`` gives the
AWS_* variables for a subprocess's environment or for ``monkeypatch.setenv``.

``create_bucket`` and ``bucket_contents`` talk to the server with boto3 (which
moto depends on), independently of the code under test, so that a test can
check what a backend really left in the bucket, multipart uploads included.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["BucketContents", "bucket_contents", "create_bucket", "s3_credentials", "s3_server"]

#: The region the fake credentials name; moto accepts any.
REGION = "us-east-1"
#: How long moto may take to start answering (it imports a lot on a busy machine).
START_TIMEOUT = 60.0


def s3_credentials(endpoint: str) -> dict[str, str]:
    """The environment variables an S3 client needs to use the server at ``endpoint``."""
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """Run moto's S3 server in a subprocess; yield its endpoint (``http://127.0.0.1:PORT``)."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    # The server's own environment is kept clean of any real AWS settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= s3_credentials(endpoint)
    # The server logs every request: to a file, since a pipe nobody reads would fill and block it.
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not _answers(endpoint):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"moto server did not start at {endpoint}: {tail}")
                time.sleep(0.1)
            yield endpoint
        finally:
            process.kill()
            process.wait()


def _client(endpoint: str) -> Any:
    import boto3  # moto's dependency; imported here so that sessions without S3 skip it

    credentials = s3_credentials(endpoint)
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
    )


def create_bucket(endpoint: str) -> str:
    """A new, empty bucket on the server; its name."""
    name = f"kastore-{uuid.uuid4().hex[:16]}"
    _client(endpoint).create_bucket(Bucket=name)
    return name


@dataclass(frozen=True)
class BucketContents:
    """The keys of a bucket's objects and of its unfinished multipart uploads."""

    objects: list[str]
    uploads: list[str]


def bucket_contents(endpoint: str, bucket: str, prefix: str = "") -> BucketContents:
    """Everything under ``prefix`` in ``bucket``, as the server sees it."""
    client = _client(endpoint)
    objects = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    ]
    answer = client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
    uploads = [item["Key"] for item in answer.get("Uploads", [])]
    return BucketContents(sorted(objects), sorted(uploads))
