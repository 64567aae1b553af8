#!/usr/bin/env bash
# The full training recipe in one run, for a lent GPU machine (or anywhere, smaller, with QUICK=1):
#   1. MiniLM (default model): fine-tune on all of SQuAD v1.1 train, evaluate all of dev, calibrate, export fp16;
#   2. MPNet (accuracy tier): the same recipe, evaluated only (not exported).
# It writes RESULTS (json + table) and the exported MiniLM checkpoint as a tar split into <= 15 MB parts under $OUT.
#
# Inputs (all local, no network):
#   DATA      folder with squad-v1.1-{train,dev}.json.gz           (default .data)
#   MINILM    base all-MiniLM-L6-v2 directory (HF format)          (default $DATA/all-MiniLM-L6-v2)
#   MPNET     base all-mpnet-base-v2 directory, optional           (default $DATA/all-mpnet-base-v2)
#   OUT       where results go                                     (default runs/gpu-out)
#   QUICK=1   tiny run (200 questions, 20 steps) to test the script itself on a CPU
# On the device machine the working tree travels with a 64 MB cap: the committed models/minilm-squad (45 MB) plus a
# carried base encoder do not fit together, so move models/ aside (outside the checkout) for that call and carry
# .data with the SQuAD files and an fp16 copy of each base encoder. Needed Python packages beyond torch and
# transformers (pydantic, tqdm, numpy, pyyaml) travel as wheels in .whl; matplotlib is optional (no PNG without it).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-.data}
MINILM=${MINILM:-$DATA/all-MiniLM-L6-v2}
MPNET=${MPNET:-$DATA/all-mpnet-base-v2}
OUT=${OUT:-runs/gpu-out}
RUNS=${RUNS:-runs/gpu}
mkdir -p "$OUT" "$RUNS"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
VQA=(python3 -m app.cli)
if [ "${QUICK:-0}" = 1 ]; then
  TRAIN_LIMIT=(--max-train-examples 200 --max-steps 20 --batch-size 8 --eval-limit 50)
  EVAL_LIMIT=(--limit 200); CAL=(--fit-limit 60 --heldout-limit 60)
else
  TRAIN_LIMIT=(--epochs 2 --batch-size 64 --eval-limit 2000)
  EVAL_LIMIT=(); CAL=(--fit-limit 2000 --heldout-limit 2000)
fi

run_recipe() {  # name base-dir lr
  local name=$1 base=$2 lr=$3 started
  started=$(date +%s)
  "${VQA[@]}" train --base-model "$base" --train "$DATA/squad-v1.1-train.json.gz" --dev "$DATA/squad-v1.1-dev.json.gz" \
    --output "$RUNS/$name" --lr "$lr" --name "$name" --version "0.2.0-gpu" --no-progress "${TRAIN_LIMIT[@]}"
  echo "$name train_seconds $(( $(date +%s) - started ))" | tee -a "$OUT/log.txt"
  # one log for everything: the device returns at most 8 files
  "${VQA[@]}" eval --checkpoint "$RUNS/$name" --data "$DATA/squad-v1.1-dev.json.gz" --write-card --no-progress \
    "${EVAL_LIMIT[@]}" | tee -a "$OUT/log.txt"
  "${VQA[@]}" calibrate --checkpoint "$RUNS/$name" --data "$DATA/squad-v1.1-dev.json.gz" "${CAL[@]}" \
    | tee -a "$OUT/log.txt"
}

run_recipe minilm-squad "$MINILM" 1e-4
"${VQA[@]}" export --checkpoint "$RUNS/minilm-squad" --out "$RUNS/export/minilm-squad" \
  --rebuild-command "bash scripts/gpu_recipe.sh (scripts/gpu_recipe.sh, $(git rev-parse --short HEAD 2>/dev/null || echo unknown))"
tar -C "$RUNS/export" -cf - minilm-squad | split -b 15M - "$OUT/minilm-squad.tar.part-"
if [ -d "$MPNET" ]; then
  run_recipe mpnet-squad "$MPNET" 5e-5
fi
python3 - "$RUNS" "$OUT" <<'EOF'
import json, sys
from pathlib import Path
runs, out = Path(sys.argv[1]), Path(sys.argv[2])
rows = []
for card_path in sorted(runs.glob("*/qa_model.json")):
    card = json.loads(card_path.read_text())
    full = {k: v for k, v in card["eval"].items() if "[:" not in k}
    ev = next(iter(full.values()), next(iter(card["eval"].values()), {}))
    rows.append({"model": card["name"], "em": ev.get("exact_match"), "f1": ev.get("f1"), "questions": ev.get("questions"),
                 "ece_after": card["calibration"].get("ece_after"), "temperature": card["calibration"].get("temperature"),
                 "train_seconds": card["hyperparameters"].get("wall_seconds")})
(out / "results.json").write_text(json.dumps(rows, indent=1))
print("| model | dev EM | dev F1 | questions | ECE after | T | train s |\n|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['model']} | {r['em']} | {r['f1']} | {r['questions']} | {r['ece_after']} | {r['temperature']} | {r['train_seconds']} |")
EOF
