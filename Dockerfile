# kastore-service: the HTTP service in a small image.
#
#   docker build -t kastore-service .
#   docker run --rm kastore-service python -m app keys create --scope write
#   docker run -p 8000:8000 -v kastore-data:/data -e KASTORE_API_KEYS='HASH write' kastore-service
#
# Settings are the service's KASTORE_* environment variables (app/config.py),
# e.g. `-e KASTORE_LOG_LEVEL=debug`. Without a key the server refuses writes (it
# listens on 0.0.0.0). Stores live in the /data volume; a host directory mounted
# there must be writable by uid 10001 (chown 10001 DIR), or run with --user.

############################################################################
# deps: the dependencies in /opt/venv. Rebuilt only when pyproject.toml
# changes; the runtime image copies it as a layer of its own, so a change to
# the source neither reinstalls nor re-ships them.
############################################################################
FROM python:3.11-slim AS deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# The venv gets no pip or setuptools of its own: the image's pip installs into
# it with `--python`, so the runtime carries only what the service imports.
# The list is read from [project].dependencies, so it is never written twice.
# numpy's own test suite (17 MB, never imported by the service) is dropped.
WORKDIR /src
COPY pyproject.toml ./
RUN python -m venv --without-pip /opt/venv \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip --python /opt/venv/bin/python install --quiet --only-binary=:all: -r /tmp/requirements.txt \
 && find /opt/venv/lib/python3.11/site-packages/numpy -depth -type d -name tests -exec rm -rf {} +

############################################################################
# wheel: the project's own wheel, built without reaching the index.
############################################################################
FROM python:3.11-slim AS wheel

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

# A C compiler for the C engine's extension: it stays in this stage, and only the
# wheel it builds reaches the runtime image.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends gcc libc6-dev >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && pip install --quiet "setuptools>=77" wheel
WORKDIR /src
# .dockerignore lets only the packaging files, kastore/ and app/ in.
COPY . ./
RUN pip wheel --quiet --no-deps --no-build-isolation --wheel-dir /wheels .

############################################################################
# Runtime: the interpreter, the venv, the project and an unprivileged user.
############################################################################
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    KASTORE_DATA_DIR=/data \
    KASTORE_HOST=0.0.0.0 \
    KASTORE_PORT=8000 \
    KASTORE_WORKERS=1

# A fixed uid/gid, so that a host directory or volume can be given to it.
RUN groupadd --gid 10001 kastore \
 && useradd --uid 10001 --gid kastore --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin kastore \
 && mkdir /data \
 && chown kastore:kastore /data

COPY --from=deps /opt/venv /opt/venv
# The project on top, in a small layer of its own, then a check that the
# service imports. (A RUN --mount of the wheel would leave less behind, but
# buildah 1.28's layer cache ignores what such a mount holds and would keep
# installing a stale wheel; COPY is keyed by content everywhere.)
COPY --from=wheel /wheels /tmp/wheels
RUN PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
    /usr/local/bin/pip --python /opt/venv/bin/python install --quiet --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && python -c "import app.main, kastore._ckastore"

# Docker copies /data's ownership into a new named volume, so
# `-v kastore-data:/data` is writable by the service with no further step.
VOLUME /data
USER 10001:10001
EXPOSE 8000

# slim has no curl: ask /healthz with the standard library. It answers 503 when
# the data directory is not writable, which urlopen raises as an error (exit 1).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('KASTORE_PORT', '8000'), timeout=4)"]

# uvicorn handles SIGINT and SIGTERM alike (uvicorn.server.HANDLED_SIGNALS):
# stop accepting, finish the requests under way, run the lifespan shutdown
# (which closes the index), then exit. SIGTERM is kept because it is what
# `docker stop` sends by default and what Kubernetes always sends, whatever
# the image says; uvicorn installs its own handler, so it works as PID 1 too.
STOPSIGNAL SIGTERM

CMD ["python", "-m", "app"]
