#!/usr/bin/env bash
# Container test (`make container-test`): build the image from ./Dockerfile, run
# it on a fresh data directory, and use it as a client would: health, upload
# with an API key made by the image (refused without), keys, arrays byte for
# byte against the test data's manifest, the user it runs as, what lands in
# /data, that a restart keeps the stores, and that a data folder the image's user
# cannot write stops it with one line saying what to do.
#
# Needs root (buildah), python3 and curl (installed with apt-get if missing).
# Uses ../shared/container/run, which runs the image with the host's network:
# the service's port inside is the same port on 127.0.0.1, so "publishing" it
# means choosing a free one and passing it as KASTORE_PORT.
#
# Environment: KASTORE_TEST_TAG (image tag, default kastore-service-test),
#              KASTORE_TEST_TIMEOUT (seconds to wait for /healthz, default 60).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=$(cd "$REPO/../shared" && pwd)
RUN="$SHARED/container/run"
TESTDATA="$SHARED/testdata/tskit"
MANIFEST="$TESTDATA/manifest.json"
CHECKS="$REPO/tests/container/checks.py"
TAG=${KASTORE_TEST_TAG:-kastore-service-test}
TIMEOUT=${KASTORE_TEST_TIMEOUT:-60}
LOG="/tmp/container-$TAG.log"  # where `run start` sends the container's output
FILES=("$TESTDATA/single_population.trees" "$TESTDATA/island_model_with_metadata.trees")

step() { printf '\n==> %s\n' "$*"; }
fail() {
  printf '\nFAIL: %s\n' "$*" >&2
  exit 1
}
check() { python3 "$CHECKS" "$@" || fail "check '$1' failed (see above)"; }

# --- preflight -------------------------------------------------------------------
step "preflight"
[[ $EUID -eq 0 ]] || fail "run as root: buildah builds and runs the image (uid $EUID)"
command -v python3 >/dev/null || fail "python3 is needed on the host"
[[ -x "$RUN" ]] || fail "$RUN not found: the shared folder is expected beside the repository"
for f in "$MANIFEST" "${FILES[@]}"; do [[ -f "$f" ]] || fail "test data $f not found"; done
if ! command -v curl >/dev/null; then
  echo "curl not found: installing it with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
fi
echo "repo $REPO, tag $TAG, $(curl --version | head -1 | cut -d' ' -f1-2), $(python3 --version)"

WORK=$(mktemp -d /tmp/kastore-container-test.XXXXXX)
DATA="$WORK/data"
mkdir "$DATA"
started=0
cleanup() {
  status=$?
  if [[ $started -eq 1 ]]; then
    step "stopping the container"
    "$RUN" stop "$TAG" || true
  fi
  if [[ $status -ne 0 ]]; then
    if [[ -f "$LOG" ]]; then
      printf '\n--- container log (%s), last 60 lines ---\n' "$LOG" >&2
      tail -n 60 "$LOG" >&2 || true
    fi
    echo "kept $WORK (data directory and downloads) for inspection" >&2
    printf '\ncontainer test FAILED\n' >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------------
step "building the image ($RUN build $TAG)"
t0=$SECONDS
# buildah warns that OCI images drop HEALTHCHECK (docker's format keeps it): it
# is checked below by running its command, so the warning is left out.
set +e
(cd "$REPO" && "$RUN" build "$TAG") 2>&1 | grep --line-buffered -v 'HEALTHCHECK is not supported for OCI'
built=${PIPESTATUS[0]}
set -e
[[ $built -eq 0 ]] || fail "the image did not build (exit status $built)"
echo "built in $((SECONDS - t0)) s"

# The image's user: the one `run exec` and `run start` use.
image_uid=$("$RUN" exec "$TAG" id -u) || fail "could not run 'id -u' in the image"
echo "the image runs as uid $image_uid"
[[ "$image_uid" =~ ^[0-9]+$ ]] || fail "'id -u' in the image printed '$image_uid'"
[[ "$image_uid" -ne 0 ]] || fail "the image runs as root (USER is missing or 0)"
# The C engine was built in the build stage; the runtime image has no compiler.
"$RUN" exec "$TAG" python -c "import kastore, numpy; kastore.dump({'a': numpy.arange(3)}, '/tmp/c.kas', engine='c'); assert kastore.load('/tmp/c.kas', engine='c')['a'].tolist() == [0, 1, 2]" \
  || fail "the C engine does not work in the image"
if "$RUN" exec "$TAG" sh -c 'command -v gcc || command -v cc' >/dev/null 2>&1; then
  fail "the runtime image has a C compiler"
fi
echo "the C engine works in the image, which has no compiler"
# A host directory mounted at /data must be writable by that user, as with docker.
chown "$image_uid:$image_uid" "$DATA"

# An API key, made by the image's own command: writes need it (the image listens on 0.0.0.0).
keys_out=$("$RUN" exec "$TAG" python -m app keys create --scope write) \
  || fail "python -m app keys create failed in the image"
KEY=$(printf '%s\n' "$keys_out" | sed -n 2p)
KEY_LINE=$(printf '%s\n' "$keys_out" | tail -n 1)
[[ "$KEY_LINE" == "$(printf %s "$KEY" | sha256sum | cut -d' ' -f1) write" ]] \
  || fail "keys create printed no key and its line: $keys_out"
AUTH="Authorization: Bearer $KEY"
echo "made a write key; its line: $KEY_LINE"

# deploy/compose.yaml runs `python -m app migrate` in the image (its other
# command, `python -m app`, is the image's own CMD, started below).
"$RUN" exec "$TAG" python -m app migrate --help >/dev/null \
  || fail "python -m app migrate (used by deploy/compose.yaml) does not run in the image"
echo "python -m app migrate runs in the image"

# --- start -------------------------------------------------------------------------
PORT=$(python3 "$CHECKS" free-port)
BASE="http://127.0.0.1:$PORT"
start() {
  step "starting the container: data $DATA mounted at /data, port $PORT"
  # "/data/", not "/data": buildah 1.28 (Debian 12) drops a --volume whose
  # destination equals an image VOLUME and mounts a throwaway directory there
  # instead; with the trailing slash the bind mount goes on top, as docker's -v
  # does. The data-directory check below catches it if this ever regresses.
  "$RUN" start "$TAG" -e "KASTORE_PORT=$PORT" -e "KASTORE_API_KEYS=$KEY_LINE" -v "$DATA:/data/"
  started=1
  wait_healthy
}

# --- a host folder the image's user cannot write: one line saying what to do --------
step "a data folder owned by another user: the server stops with one line"
BAD="$WORK/not-yours"
mkdir "$BAD"  # root's, mode 755
"$RUN" start "$TAG" -e "KASTORE_PORT=$PORT" -v "$BAD:/data/"
started=1
pid=$(cat "/tmp/container-$TAG.pid")
for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "the server still runs on a data folder it cannot write"
cat "$LOG"
grep -q "kastore-service: the data directory /data is not writable" "$LOG" \
  || fail "no one-line explanation of the unwritable /data in the log"
grep -q "chown -R 10001" "$LOG" && grep -q -- "--user" "$LOG" \
  || fail "the message does not say to chown 10001 or to use --user"
grep -q "Traceback" "$LOG" && fail "a traceback in the log"
"$RUN" stop "$TAG"
started=0

wait_healthy() {
  local pid deadline
  pid=$(cat "/tmp/container-$TAG.pid")
  deadline=$((SECONDS + TIMEOUT))
  printf 'waiting for %s/healthz ' "$BASE"
  until curl -fsS -o /dev/null --max-time 2 "$BASE/healthz" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo; fail "the container exited before /healthz answered"; }
    [[ $SECONDS -lt $deadline ]] || { echo; fail "/healthz did not answer 200 within $TIMEOUT s"; }
    printf '.'
    sleep 0.5
  done
  echo " ok"
  body=$(curl -fsS "$BASE/healthz")
  [[ "$body" == '{"status":"ok"}' ]] || fail "/healthz: expected {\"status\":\"ok\"}, got $body"
  echo "GET /healthz -> $body"
}
start

step "the Dockerfile's HEALTHCHECK command, run inside the image"
# buildah's OCI images drop HEALTHCHECK, so run its command the way docker would.
hc=$(python3 "$CHECKS" healthcheck "$REPO/Dockerfile") || fail "no usable HEALTHCHECK in the Dockerfile"
echo "$hc"
eval "hc_argv=($hc)"
"$RUN" exec "$TAG" env "KASTORE_PORT=$PORT" "${hc_argv[@]}" \
  || fail "the HEALTHCHECK command failed against the running server"
echo "HEALTHCHECK passes"

step "the server process runs as a non-root user"
check server-uid "$(cat "/tmp/container-$TAG.pid")"

# --- use it ---------------------------------------------------------------------
names=()
for file in "${FILES[@]}"; do
  name=$(basename "$file" .trees)
  names+=("$name")
  out="$WORK/$name"
  mkdir "$out"

  step "upload $name without a key: 401"
  code=$(curl -sS -o "$out/refused.json" -w '%{http_code}' -F "file=@$file" "$BASE/stores") \
    || fail "curl could not send $file"
  [[ "$code" == 401 ]] || fail "POST /stores without a key: expected 401, got $code"
  grep -q missing_api_key "$out/refused.json" || fail "401 without its error: $(cat "$out/refused.json")"

  step "upload $name: curl -H 'Authorization: Bearer KEY' -F file=@$(basename "$file") $BASE/stores"
  code=$(curl -sS -o "$out/upload.json" -w '%{http_code}' -H "$AUTH" -F "file=@$file" "$BASE/stores") \
    || fail "curl could not upload $file"
  [[ "$code" == 201 ]] || fail "POST /stores: expected 201, got $code: $(cat "$out/upload.json")"
  check upload "$out/upload.json" "$name"

  step "keys of $name: GET /stores/$name/keys"
  curl -fsS -o "$out/keys.json" "$BASE/stores/$name/keys" || fail "GET /stores/$name/keys failed"
  check keys "$out/keys.json" "$MANIFEST" "$(basename "$file")" "$BASE" "$out/curl.cfg" "$out"

  step "arrays of $name: every key's url, and edges/left by its literal path"
  curl -sS --fail --config "$out/curl.cfg" || fail "downloading the arrays of $name failed"
  check arrays "$out/keys.json" "$MANIFEST" "$(basename "$file")" "$out"
done

step "GET /stores"
curl -fsS -o "$WORK/stores.json" "$BASE/stores" || fail "GET /stores failed"
check stores "$WORK/stores.json" "${names[@]}"

step "what landed in the mounted data directory $DATA"
check data-dir "$DATA" "$image_uid" "${FILES[@]}"

# --- restart: the stores outlive the container -----------------------------------
step "stopping the server the way docker stop does: the image's STOPSIGNAL to the server"
# `run stop` signals buildah's whole process group, and buildah answers with
# SIGKILL to the server; docker sends STOPSIGNAL to the server alone and waits
# 10 s. So send it here, check the shutdown was graceful, then clean up.
signal=$(buildah inspect --type image --format '{{.OCIv1.Config.StopSignal}}' "$TAG")
signal=${signal:-SIGTERM}
server=$(python3 "$CHECKS" server-pid "$(cat "/tmp/container-$TAG.pid")") \
  || fail "server process not found"
echo "kill -s ${signal#SIG} $server"
kill -s "${signal#SIG}" "$server"
for _ in $(seq 100); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
kill -0 "$server" 2>/dev/null && fail "the server still runs 10 s after $signal"
grep -q "Application shutdown complete" "$LOG" \
  || fail "no 'Application shutdown complete' in the log: the shutdown after $signal was not graceful"
echo "the server exited after $signal, logging 'Application shutdown complete'"
"$RUN" stop "$TAG"
started=0

start
step "after the restart, on the same data directory"
curl -fsS -o "$WORK/stores.json" "$BASE/stores" || fail "GET /stores failed after the restart"
check stores "$WORK/stores.json" "${names[@]}"
name=${names[0]}
curl -fsS -o "$WORK/$name/keys.json" "$BASE/stores/$name/keys" || fail "GET keys after restart"
rm -f "$WORK/$name"/*.bin
curl -sS --fail --config "$WORK/$name/curl.cfg" || fail "downloading arrays after the restart"
check arrays "$WORK/$name/keys.json" "$MANIFEST" "$name.trees" "$WORK/$name"

printf '\ncontainer test passed\n'
