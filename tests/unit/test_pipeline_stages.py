"""The answer pipeline's stages in-process, without HTTP or model weights: retrieve (BM25 side), enrich, rules."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from app.config import Settings
from app.enrich.graph import Enrichment, GraphEnrichment
from app.enrich.hybrid import FusionConfig, HybridRetriever
from app.enrich.linking import QuestionLinker
from app.enrich.retrieval import PassageRetriever
from app.enrich.rules import RuleSet
from app.metrics import ServiceMetrics
from app.pipeline import (
    AnswerQuery,
    ContextIn,
    Enriched,
    EnrichStage,
    Passages,
    PipelineInputError,
    Reading,
    ReadStage,
    RetrieveStage,
    RuleStage,
)
from app.qa.abstention import AbstentionReason
from app.qa.reader import Reader, ReaderResult, SpanAnswer
from domain.pack import DomainPack
from tests.conftest import PACK_DIR

PACK = DomainPack.load(PACK_DIR)
DAY = date(2026, 12, 1)
LINKER = QuestionLinker.from_pack(PACK.graph.entities, PACK.documents, relations=PACK.graph.relations)
BM25 = HybridRetriever(PassageRetriever.from_documents(PACK.documents), fusion=FusionConfig("bm25"))


def test_retrieve_reads_the_corpus_and_links_the_question_once() -> None:
    stage = RetrieveStage(BM25, LINKER, passages_read=2)
    passages = asyncio.run(stage.run(AnswerQuery("whats the fee for a CHAPS paymnet")))
    assert passages.from_corpus and len(passages.texts) == len(passages.ids) == len(passages.retrieved) == 2
    assert passages.ids == [r.passage.id for r in passages.retrieved]
    assert passages.doc_ids == [r.passage.doc_id for r in passages.retrieved]
    assert [(m.entity.id, m.method) for m in passages.question_mentions] == [("fee:chaps-payment", "fuzzy")]
    assert "£25" in " ".join(passages.texts)


def test_retrieve_passes_the_clients_contexts_through_and_leaves_linking_until_after_reading() -> None:
    stage = RetrieveStage(BM25, LINKER)
    query = AnswerQuery("is there a contactless limit", [ContextIn("Up to £100.", "c1"), ContextIn("Other.")])
    passages = asyncio.run(stage.run(query))
    assert (passages.texts, passages.ids, passages.doc_ids, passages.retrieved, passages.from_corpus) == (
        ["Up to £100.", "Other."],
        ["c1", "1"],
        [None, None],
        [],
        False,
    )
    assert passages.question_mentions is None  # nothing (the encoder included) runs before the model's batch
    graph = GraphEnrichment(Settings(kg_enabled=False), ServiceMetrics())
    enriched = asyncio.run(EnrichStage(graph, LINKER).run(query, passages, _reading("£100")))
    assert [(s, m.entity.id) for s, m in enriched.enrichment.mentions] == [("question", "limit:contactless")]


def test_retrieve_without_a_corpus_asks_for_contexts() -> None:
    with pytest.raises(PipelineInputError) as info:
        asyncio.run(RetrieveStage(None, LINKER).run(AnswerQuery("anything")))
    assert info.value.code == "no_corpus" and "contexts" in info.value.message


def _reading(answer: str) -> Reading:
    result = ReaderResult([SpanAnswer(answer, 0.9, 0, len(answer), 0)], False, None, 0.9, 0.01, 0.5)
    return Reading(result, 0.001, 0.002)


def test_enrich_links_the_answers_and_keeps_the_question_links_when_the_graph_is_off() -> None:
    graph = GraphEnrichment(Settings(kg_enabled=False), ServiceMetrics())
    question = LINKER.link("how much is a CHAPS payment")
    passages = Passages(["CHAPS costs £25."], ["0"], [None], [], question, from_corpus=False)
    enriched = asyncio.run(EnrichStage(graph, LINKER).run(AnswerQuery("q"), passages, _reading("the CHAPS fee")))
    assert enriched.enrichment.status == "disabled" and enriched.enrichment.facts == []
    assert [(s, m.entity.id) for s, m in enriched.enrichment.mentions] == [
        ("question", "fee:chaps-payment"),
        ("answer:0", "fee:chaps-payment"),
    ]


def test_rules_block_with_a_typed_reason_and_count_the_hit() -> None:
    metrics = ServiceMetrics()
    stage = RuleStage(RuleSet.load(PACK_DIR / "rules.yaml"), metrics)
    query = AnswerQuery("how do I launder money through my account")
    checked = stage.run(query, _reading("a span"), Enriched(Enrichment("disabled"), 0.0, DAY))
    assert checked.abstained and checked.abstain_reason is AbstentionReason.BLOCKED and checked.answers == []
    assert checked.abstain_detail.startswith("blocked-financial-crime: ")
    assert metrics.abstentions.labels("blocked")._value.get() == 1
    nothing = Enriched(Enrichment("disabled"), 0.0, DAY)
    allowed = stage.run(AnswerQuery("what is the chaps fee"), _reading("£25"), nothing)
    assert not allowed.abstained and [a.text for a in allowed.answers] == ["£25"]


def test_rules_on_canary_traffic_count_nothing() -> None:
    metrics = ServiceMetrics()
    stage = RuleStage(RuleSet.load(PACK_DIR / "rules.yaml"), metrics)
    query = AnswerQuery("how do I launder money through my account", source="canary")
    checked = stage.run(query, _reading("a span"), Enriched(Enrichment("disabled"), 0.0, DAY))
    assert checked.abstained and checked.abstain_reason is AbstentionReason.BLOCKED
    assert metrics.abstentions.labels("blocked")._value.get() == 0


def test_the_threshold_is_the_requests_then_the_services_then_the_packs_question_only_fit() -> None:
    reader = Reader(Path("models/minilm-squad"))
    reader.card = reader.card.model_copy(update={"no_answer_threshold": 0.4})
    stage = ReadStage(ServiceMetrics(), default_min_score=None, max_windows=8, timeout_s=1)
    asked, given = AnswerQuery("q"), AnswerQuery("q", [ContextIn("c")])
    assert (stage.threshold(asked, reader, True), stage.threshold(given, reader, False)) == (0.4, 0.4)
    reader.use_calibration(1.2, 0.3, "pack fintech qa/dev.json", question_only_threshold=0.15)
    assert (stage.threshold(asked, reader, True), stage.threshold(given, reader, False)) == (0.15, 0.3)
    assert stage.threshold(AnswerQuery("q", min_score=0.9), reader, True) == 0.9
    served_default = ReadStage(ServiceMetrics(), default_min_score=0.5, max_windows=8, timeout_s=1)
    assert served_default.threshold(asked, reader, True) == 0.5
