"""Corpus passages and BM25 retrieval with the entity boost, on the shipped fintech corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.enrich.retrieval import PassageRetriever, passages_of
from domain.corpus import load_corpus
from kg.pack import PackError
from tests.conftest import PACK_DIR

DOCUMENTS = load_corpus(PACK_DIR / "corpus")
RETRIEVER = PassageRetriever.from_documents(DOCUMENTS)


@pytest.mark.parametrize(
    ("question", "doc_id"),
    [
        ("What interest does the Easy Saver pay?", "terms-easy-saver"),
        ("How long do I have to dispute a card payment?", "policy-disputes-and-chargebacks"),
        ("how much is the monthly fee for premier", "terms-premier-current-account"),
        ("when will the ombudsman look at my complaint", "policy-complaints"),
    ],
)
def test_the_right_document_is_in_the_top_three(question: str, doc_id: str) -> None:
    assert doc_id in [r.passage.doc_id for r in RETRIEVER.search(question, k=3)]


def test_linked_entities_boost_their_documents(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "---\nid: travel\ntitle: Travel\nentities: [fee:fx]\n---\nA card abroad: card fees, card limits, card tips.\n"
    )
    (tmp_path / "b.md").write_text(
        "---\nid: replace\ntitle: Replacement\nentities: [fee:card-replacement]\n---\n"
        "A replacement costs five pounds.\n"
    )
    retriever = PassageRetriever.from_documents(load_corpus(tmp_path), entity_boost=1.0)
    question = "how much is a replacement card"
    assert [r.passage.doc_id for r in retriever.search(question, k=1)] == ["travel"], "on words alone"
    boosted = retriever.search(question, k=1, entity_ids=["fee:card-replacement"])
    assert [r.passage.doc_id for r in boosted] == ["replace"]


def test_passages_keep_whole_paragraphs_and_unknown_words_find_nothing() -> None:
    passages = passages_of(DOCUMENTS)
    assert len({p.doc_id for p in passages}) == len(list((PACK_DIR / "corpus").glob("*.md")))
    assert all(p.text == p.text.strip() and p.id.startswith(p.doc_id + "#") for p in passages)
    assert RETRIEVER.search("xyzzy plugh", k=5) == []


def test_documents_without_front_matter_are_refused(tmp_path: Path) -> None:
    (tmp_path / "doc.md").write_text("no header here\n")
    with pytest.raises(PackError, match="doc.md:1: front matter: missing"):
        load_corpus(tmp_path)
