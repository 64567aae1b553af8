#!/usr/bin/env bash
# Every check CI runs: lint, types, then unit, integration and e2e tests. Sets itself up first.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VQA_VENV:-.venv}"
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
echo "== ruff"; "$VENV/bin/ruff" check app training kg tests bench
echo "== mypy"; "$VENV/bin/mypy"
echo "== pytest"
set +e
"$VENV/bin/python" -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here, not a pass" >&2
  exit 1
fi
exit "$code"
