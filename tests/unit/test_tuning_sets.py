"""The pack's labelled linking examples and its tuning set (tuning_customer.jsonl) stay consistent with the pack: every
entity label is a graph id, every answer is in its document, no tuning question sits on a test document, and none of
them is a question of the customer set."""

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
    lines = (PACK_DIR / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_customer_style_tuning_questions_are_answered_by_their_dev_document() -> None:
    rows = _rows("qa/tuning_customer.jsonl")
    bodies = {d.id: d.body for d in PACK.documents}
    splits = {split_of(row["doc_id"]) for row in rows}
    assert splits == {"dev"}, "tuning questions sit on dev documents (the test documents hold customer.json's)"
    assert len(rows) >= 69
    for row in rows:
        assert row["doc_id"] in bodies, row
        assert row["answers"] and all(a in bodies[row["doc_id"]] for a in row["answers"]), row
        assert set(row["entities"]) <= ENTITY_IDS, row
        assert row["style"] in {"informal", "misspelt", "long", "paraphrased"}, row


def test_tuning_questions_are_not_customer_set_questions() -> None:
    customer = json.loads(Path(PACK_DIR / "qa" / "customer.json").read_text(encoding="utf-8"))
    held_out = {qa["question"].casefold() for a in customer["data"] for p in a["paragraphs"] for qa in p["qas"]}
    tuning = {row["question"].casefold() for row in _rows("qa/tuning_customer.jsonl")}
    examples = {e.question.casefold() for e in PACK.linking_examples}
    assert tuning & held_out == set()
    assert examples & held_out == set()
    assert examples & tuning == set(), "the linker would be tuned on questions it compares with"
