#!/usr/bin/env bash
# Every check CI runs: lint, types, unit, integration and e2e tests, then the images and the compose stack built
# and run for real (scripts/container_test.sh). Sets itself up first.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VQA_VENV:-.venv}"
bash scripts/setup.sh
# install_debian_package PACKAGE WHAT: Debian's PACKAGE (as root, through apt-get; the package lists are fetched once
# per run), else stop with one line saying what is missing.
apt_updated=0
install_debian_package() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test: installing Debian's $1 package ($2)"
    if [ "$apt_updated" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
  else
    echo "test: $2 missing; install Debian's '$1' package" >&2
    exit 1
  fi
}
# promtool and prometheus validate the deploy configs and scrape the live service in the tests.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  install_debian_package prometheus "promtool + prometheus"
fi
# A real PostgreSQL server (Debian's package; the tests start a throwaway cluster) for the feedback store's tests.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  install_debian_package postgresql "PostgreSQL server binaries for the store tests"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "== ruff"; "$VENV/bin/ruff" check app training kg domain tests bench
echo "== mypy"; "$VENV/bin/mypy"
echo "== pytest"
set +e
# tests/container needs the images and engine of scripts/container_test.sh, which runs them below.
"$VENV/bin/python" -m pytest --ignore=tests/container "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass" >&2
  exit 1
fi
echo "== containers"
if [ "$#" -gt 0 ]; then
  echo "container test: skipped (pytest was given arguments: a focused run); bash scripts/container_test.sh runs it"
elif [ "${VQA_CONTAINER_TEST:-1}" = 0 ]; then
  echo "container test: skipped (VQA_CONTAINER_TEST=0)"
else
  # A bound of its own (VQA_CONTAINER_TIME_LIMIT, 840 s by default), not what is left of the suite's time: a fresh CI
  # machine installs the engine and builds cold (7-9 min on 2 cores), and a slow test run before it must not turn
  # that into a failure. Warm, it takes 1-2 minutes.
  # Builds and runs the images and the compose stack; says so in one line and passes where no engine can start.
  bash scripts/container_test.sh || code=$((code == 0 ? 1 : code))
fi
echo "test: done in $SECONDS s"
exit "$code"
