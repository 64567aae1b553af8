"""Export a trained checkpoint for serving: fp16 safetensors, tokenizer, card (with the command that rebuilt it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from app.qa.card import CARD_FILE, ModelCard

# Files a served checkpoint needs; optimizer state and evaluation dumps stay behind.
EXTRA_FILES = ("calibration.json", "reliability.png")


def export_checkpoint(source: Path, target: Path, rebuild_command: str | None = None, half: bool = True) -> Path:
    """Write ``source`` to ``target`` as a compact serving checkpoint; returns the weights file."""
    model = AutoModelForQuestionAnswering.from_pretrained(str(source), local_files_only=True, dtype=torch.float32)
    if half:
        model = model.half()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    card = ModelCard.load(source)
    if rebuild_command:
        card.rebuild_command = rebuild_command
    card.hyperparameters = {**card.hyperparameters, "export_dtype": "float16" if half else "float32"}
    card.save(target)
    for name in EXTRA_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    weights = target / "model.safetensors"
    if not weights.exists() or not (target / CARD_FILE).exists():
        raise RuntimeError(f"export to {target} is incomplete")
    return weights
