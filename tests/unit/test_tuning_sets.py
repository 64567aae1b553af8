"""The pack's labelled linking examples and its tuning set (tuning_customer.jsonl) stay consistent with the pack: every
entity label is a graph id, every answer is in its document, no tuning question sits on a test document, and none of
them is a question of the customer set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process, utils

from domain.pack import DomainPack
from domain.qa import split_of
from tests.conftest import PACK_DIR

PACK = DomainPack.load(PACK_DIR)
ENTITY_IDS = {e.id for e in PACK.graph.entities}
NEAR_COPY = 85


def _rows(name: str) -> list[dict[str, Any]]:
    lines = (PACK_DIR / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_customer_style_tuning_questions_are_answered_by_their_dev_document() -> None:
    rows = _rows("qa/tuning_customer.jsonl")
    bodies = {d.id: d.body for d in PACK.documents}
    splits = {split_of(row["doc_id"]) for row in rows}
    assert splits == {"dev"}, "tuning questions sit on dev documents (the test documents hold customer.json's)"
    assert len(rows) >= 60
    for row in rows:
        assert row["doc_id"] in bodies, row
        assert row["answers"] and all(a in bodies[row["doc_id"]] for a in row["answers"]), row
        assert set(row["entities"]) <= ENTITY_IDS, row
        assert row["style"] in {"informal", "misspelt", "long", "paraphrased"}, row


def _near_copies(questions: list[str], others: list[str]) -> list[tuple[str, str]]:
    """Pairs that differ by a typo or a word or two (rapidfuzz ratio >= 85 after lower-casing and dropping
    punctuation): an exact-match check would let "do i have to let u know" through beside "let you know"."""
    pairs = []
    for question in questions:
        found = process.extractOne(question, others, scorer=fuzz.ratio, processor=utils.default_process)
        if found is not None and found[1] >= NEAR_COPY:
            pairs.append((question, found[0]))
    return pairs


def test_no_tuning_question_or_example_is_a_near_copy_of_a_customer_set_question() -> None:
    customer = json.loads(Path(PACK_DIR / "qa" / "customer.json").read_text(encoding="utf-8"))
    held_out = [qa["question"] for a in customer["data"] for p in a["paragraphs"] for qa in p["qas"]]
    tuning = [row["question"] for row in _rows("qa/tuning_customer.jsonl")]
    examples = [e.question for e in PACK.linking_examples]
    assert _near_copies(held_out, tuning + examples) == []


def test_no_tuning_question_is_a_near_copy_of_a_linking_example() -> None:
    tuning = [row["question"] for row in _rows("qa/tuning_customer.jsonl")]
    examples = [e.question for e in PACK.linking_examples]
    assert _near_copies(tuning, examples) == [], "the linker's thresholds would be tuned on questions it compares with"


def test_the_near_copy_check_sees_a_typo_and_a_changed_word() -> None:
    others = ["do i have to let you know before i go on holiday", "what is the contactless limit"]
    assert _near_copies(["Do I have to let u know before I go on holiday?"], others) != []
    assert _near_copies(["is there a fee for paying abroad"], others) == []
