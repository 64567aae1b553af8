"""The fintech domain pack: corpus size, QA set counts, exact spans, document-disjoint splits, reproducible build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.enrich.retrieval import load_documents
from tests.conftest import PACK_DIR
from training.domain_qa import (
    SPLITS,
    DomainQAError,
    build,
    check_disjoint,
    check_file,
    customer_variant,
)


def test_corpus_has_at_least_sixty_documents_tagged_with_graph_entities() -> None:
    from kg.pack import GraphPack

    docs = load_documents(PACK_DIR / "corpus")
    known = {e.id for e in GraphPack.load(PACK_DIR).entities}
    assert len(docs) >= 60
    assert len({d.id for d in docs}) == len(docs)
    for doc in docs:
        assert doc.entities and doc.entities <= known, f"{doc.id} names unknown entities {doc.entities - known}"
        assert len(doc.body.split()) >= 60, f"{doc.id} is too short to be a real page"


def test_qa_set_counts_spans_and_splits() -> None:
    totals = {"answerable": 0, "unanswerable": 0}
    for split, _ in SPLITS:
        counts = check_file(PACK_DIR / "qa" / f"{split}.json")  # raises on any span that does not slice
        totals["answerable"] += counts["answerable"]
        totals["unanswerable"] += counts["unanswerable"]
        assert counts["documents"] > 0 and counts["answerable"] > 0
    assert totals["answerable"] >= 1500 and totals["unanswerable"] >= 150
    check_disjoint(PACK_DIR)


def test_committed_qa_files_are_exactly_what_the_builder_makes() -> None:
    rebuilt = build(PACK_DIR)
    for split, _ in SPLITS:
        committed = json.loads((PACK_DIR / "qa" / f"{split}.json").read_text(encoding="utf-8"))
        assert committed == rebuilt[split], f"qa/{split}.json is stale: run vqa pack build-qa packs/fintech"


def test_checker_rejects_a_span_that_does_not_slice(tmp_path: Path) -> None:
    path = tmp_path / "dev.json"
    data = json.loads((PACK_DIR / "qa" / "dev.json").read_text(encoding="utf-8"))
    qa = next(q for q in data["data"][0]["paragraphs"][0]["qas"] if not q["is_impossible"])
    qa["answers"][0]["answer_start"] += 1
    path.write_text(json.dumps(data))
    with pytest.raises(DomainQAError, match=qa["id"]):
        check_file(path)


def test_documents_in_two_splits_are_refused(tmp_path: Path) -> None:
    pack = tmp_path / "pack"
    shutil.copytree(PACK_DIR / "qa", pack / "qa")
    train = json.loads((pack / "qa" / "train.json").read_text())
    dev = json.loads((pack / "qa" / "dev.json").read_text())
    dev["data"].append(train["data"][0])
    (pack / "qa" / "dev.json").write_text(json.dumps(dev))
    with pytest.raises(DomainQAError, match="is in train and dev"):
        check_disjoint(pack)


def test_customer_variants_are_deterministic_and_differ() -> None:
    question = "How much does a replacement card cost?"
    assert customer_variant(question, "seed") == customer_variant(question, "seed")
    variants = {customer_variant(question, f"s{i}") for i in range(20)}
    assert question not in variants and len(variants) > 5
