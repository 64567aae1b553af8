"""The pack's tuning sets (linking_dev.jsonl, tuning_customer.jsonl) stay consistent with the pack they tune: every
entity label is a graph id, every answer is in its document, and no tuning question sits on a test document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domain.pack import DomainPack
from domain.qa import split_of
from tests.conftest import PACK_DIR

PACK = DomainPack.load(PACK_DIR)
ENTITY_IDS = {e.id for e in PACK.graph.entities}


def _rows(name: str) -> list[dict[str, Any]]:
    lines = (PACK_DIR / "qa" / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_linking_labels_name_graph_entities() -> None:
    rows = _rows("linking_dev.jsonl")
    assert len(rows) >= 150
    unknown = {e for row in rows for e in row["entities"]} - ENTITY_IDS
    assert unknown == set(), f"relabel these (renamed or split entities?): {sorted(unknown)}"


def test_customer_style_tuning_questions_are_answered_by_their_train_or_dev_document() -> None:
    rows = _rows("tuning_customer.jsonl")
    bodies = {d.id: d.body for d in PACK.documents}
    splits = {split_of(row["doc_id"]) for row in rows}
    assert splits == {"train", "dev"}, "tuning questions never sit on test documents (customer.json's are there too)"
    assert sum(split_of(row["doc_id"]) == "train" for row in rows) >= 100
    for row in rows:
        assert row["doc_id"] in bodies, row
        assert row["answers"] and all(a in bodies[row["doc_id"]] for a in row["answers"]), row
        assert set(row["entities"]) <= ENTITY_IDS, row
        assert row["style"] in {"informal", "misspelt", "long", "paraphrased"}, row


def test_tuning_questions_are_not_customer_set_questions() -> None:
    customer = json.loads(Path(PACK_DIR / "qa" / "customer.json").read_text(encoding="utf-8"))
    held_out = {qa["question"].casefold() for a in customer["data"] for p in a["paragraphs"] for qa in p["qas"]}
    names = ("linking_dev.jsonl", "tuning_customer.jsonl")
    tuning = {row["question"].casefold() for name in names for row in _rows(name)}
    assert tuning & held_out == set()
