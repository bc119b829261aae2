"""``deploy/compose.yaml`` and ``deploy/nginx.conf``: what they say agrees with the code.

No container engine is needed: the files are read and checked against the
settings, the command line and the Dockerfile they depend on, so renaming a
setting or a command breaks this test rather than a deployment. (The
container test, tests/container/run.sh, runs the same commands in the image.)
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from app.__main__ import PROG, _parser
from app.config import Settings

from ._support import service_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "nginx.conf"
#: Services that run the project's image.
IMAGE_SERVICES = ["kastore", "migrate"]
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")
_NGINX_SIZE = re.compile(r"(\d+)([kmg]?)", re.I)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def nginx() -> dict[str, list[str]]:
    """nginx.conf's simple directives: name -> the values of each occurrence."""
    text = re.sub(r"#[^\n]*", "", NGINX.read_text(encoding="utf-8"))
    directives: dict[str, list[str]] = {}
    for statement in re.split(r"[;{}]", text):
        words = statement.split()
        if words:
            directives.setdefault(words[0], []).append(" ".join(words[1:]))
    return directives


def interpolate(value: Any) -> str:
    """A compose value with each ``${NAME:-default}`` replaced by its default."""
    return _VARIABLE.sub(lambda match: match.group(2) or "", str(value))


def environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment", {})
    assert isinstance(env, dict), f"{service}: write its environment as a mapping"
    return {name: interpolate(value) for name, value in env.items()}


def dockerfile_instruction(name: str) -> list[str]:
    """The exec-form argument list of a Dockerfile instruction (``CMD``, ``HEALTHCHECK``)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    match = re.search(rf"^{name}\b.*?(\[.*\])\s*$", text, re.M)
    assert match, f"no {name} [...] in the Dockerfile"
    words: list[str] = json.loads(match.group(1))
    return words


def test_the_replicas_are_the_repository_image_three_times(compose: dict[str, Any]) -> None:
    service = compose["services"]["kastore"]
    context = (DEPLOY / service["build"]["context"]).resolve()
    assert context == ROOT
    assert (context / service["build"]["dockerfile"]).is_file()
    assert service["deploy"]["replicas"] == 3
    assert "ports" not in service, "only nginx should be reachable"
    assert compose["services"]["migrate"]["image"] == service["image"]


@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_every_kastore_variable_is_a_setting_with_a_valid_value(
    compose: dict[str, Any], service: str, tmp_path: Path
) -> None:
    env = environment(compose, service)
    settings = {
        name.removeprefix("KASTORE_").lower(): value
        for name, value in env.items()
        if name.startswith("KASTORE_")
    }
    assert settings, f"{service} sets no KASTORE_* variable"
    unknown = sorted(set(settings) - set(Settings.model_fields))
    assert unknown == [], f"{service}: not settings: {unknown}"
    service_settings(tmp_path, **settings)  # raises if a value is refused


def test_the_replicas_reach_the_other_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    env = environment(compose, "kastore")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= set(env)
    assert env["KASTORE_HOST"] == "0.0.0.0"
    assert int(env["KASTORE_WORKERS"]) >= 1
    minio = environment(compose, "minio")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    assert urlsplit(env["KASTORE_S3_ENDPOINT_URL"]).hostname == "minio"
    bucket = urlsplit(env["KASTORE_BLOB_URL"]).hostname
    setup = services["minio-bucket"]
    assert setup["image"].startswith("minio/mc")
    assert f"mc mb --ignore-existing minio/{bucket}" in " ".join(setup["entrypoint"])
    index = urlsplit(env["KASTORE_INDEX_URL"])
    postgres = environment(compose, "postgres")
    assert services["postgres"]["image"] == "postgres:16"
    assert (index.hostname, index.username, index.password, index.path) == (
        "postgres",
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        "/" + postgres["POSTGRES_DB"],
    )


@pytest.mark.parametrize("service", IMAGE_SERVICES)
def test_the_commands_exist_in_the_image(compose: dict[str, Any], service: str) -> None:
    command = compose["services"][service]["command"]
    prefix = shlex.split(PROG)
    assert command[: len(prefix)] == prefix, command
    _parser().parse_args(command[len(prefix) :])  # exits (SystemExit) if it does not parse


def test_the_replicas_run_the_image_command() -> None:
    assert dockerfile_instruction("CMD") == shlex.split(PROG)


def test_the_replicas_health_check_is_the_image_one(compose: dict[str, Any]) -> None:
    healthcheck = compose["services"]["kastore"]["healthcheck"]
    assert healthcheck["test"] == ["CMD", *dockerfile_instruction("HEALTHCHECK")]


def test_nginx_streams_uploads_as_large_as_the_service_takes(
    compose: dict[str, Any], nginx: dict[str, list[str]]
) -> None:
    service = compose["services"]["nginx"]
    assert any(
        volume.startswith("./nginx.conf:/etc/nginx/nginx.conf") for volume in service["volumes"]
    )
    env = environment(compose, "kastore")
    size = _NGINX_SIZE.fullmatch(nginx["client_max_body_size"][0])
    assert size, nginx["client_max_body_size"]
    body = int(size[1]) << {"": 0, "k": 10, "m": 20, "g": 30}[size[2].lower()]
    limit = int(env["KASTORE_MAX_UPLOAD_BYTES"])
    assert limit <= body <= limit + (64 << 20)
    assert nginx["proxy_request_buffering"] == ["off"]
    assert nginx["proxy_buffering"] == ["off"]
    assert nginx["proxy_pass"] == ["http://kastore"]
    assert f"kastore:{env['KASTORE_PORT']} resolve" in nginx["server"]
