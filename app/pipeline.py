"""AnswerPipeline: retrieve -> read -> enrich -> check rules, as small stages with typed inputs and outputs.

Nothing here knows HTTP: the route handler turns a request into an :class:`AnswerQuery`, awaits
:meth:`AnswerPipeline.answer` with the model it leased for the request, and maps the :class:`PipelineAnswer` (or a
:class:`PipelineInputError`) back. Each stage is an object with one ``run`` method and can be tested on its own. CPU
work (tokenising, retrieval, linking, span decoding) runs in worker threads, never on the event loop; the model's
forward runs in the batcher's thread.

The model is an argument of every answer, not part of the pipeline: a reload (``/admin/reload``, SIGHUP) makes a new
model current while requests in flight finish on the one they leased. The canary answers through the same pipeline
(``source="canary"``): its answers are neither counted in the request metrics nor stored for feedback.

The question is linked once: asked without contexts, in :class:`RetrieveStage` (its links steer retrieval, and its
vector, computed for dense retrieval, is reused by the linker's embedding fallback); with the client's contexts, in
:class:`EnrichStage` after reading, so that linking (which may run the sentence encoder) never delays the model's
batch. The answers are linked in :class:`EnrichStage`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Literal, Protocol

from app.enrich.graph import Enrichment, GraphEnrichment
from app.enrich.hybrid import HybridRetriever
from app.enrich.linking import QuestionLinker
from app.enrich.pipeline import CheckedAnswer, check_answer
from app.enrich.retrieval import Retrieved
from app.enrich.rules import RuleSet
from app.metrics import ServiceMetrics
from app.qa.abstention import AbstentionReason
from app.qa.batcher import DeadlineExceededError, OverloadedError, Reservation, estimate_size
from app.qa.choice import PassageChoice, rank_answers
from app.qa.model_host import ServedModel
from app.qa.reader import Reader, ReaderResult, WindowJob, WindowPrediction
from app.qa.windows import Window
from app.store.records import AnswerDraft, AnsweredPassage
from kg.linker import EntityMention

QuerySource = Literal["client", "canary"]


class PipelineInputError(Exception):
    """The request cannot be served as given; ``code`` names the limit, the message says how to fix it."""

    def __init__(self, code: Literal["contexts_too_large", "too_many_windows", "no_corpus"], message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ContextIn:
    text: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerQuery:
    question: str
    contexts: list[ContextIn] = field(default_factory=list)  # empty: retrieve from the corpus
    top_k: int = 1
    max_answer_len: int = 30
    min_score: float | None = None  # None: the service's threshold
    request_id: str = ""  # names the stored record that feedback refers to
    source: QuerySource = "client"  # "canary": not counted in the request metrics, not stored

    @property
    def counted(self) -> bool:
        return self.source == "client"


class AnswerRecorder(Protocol):
    """Keeps answered requests for feedback (app.feedback.FeedbackDesk); must not block."""

    def record_answer(self, draft: AnswerDraft) -> None: ...


# ---------------------------------------------------------------- retrieve
@dataclass(frozen=True, slots=True)
class Passages:
    """What the reader reads: texts with the ids answers name, and (question only) the passages retrieved."""

    texts: list[str]
    ids: list[str]
    doc_ids: list[str | None]  # the corpus document of each text (None: the client's context)
    retrieved: list[Retrieved]  # empty when the client sent contexts
    question_mentions: list[EntityMention] | None  # None: not linked yet (client contexts: linked when enriching)
    from_corpus: bool


class RetrieveStage:
    """The client's contexts, or the best corpus passages found with the question's entity links."""

    def __init__(
        self, retriever: HybridRetriever | None, linker: QuestionLinker | None, passages_read: int = 2
    ) -> None:
        self.retriever = retriever
        self.linker = linker
        self.passages_read = passages_read
        passages = retriever.passages if retriever is not None else []
        self.mean_passage_chars = sum(len(p.text) for p in passages) // max(len(passages), 1)

    def check(self, query: AnswerQuery) -> None:
        """Raises :class:`PipelineInputError` when the query cannot be served as asked (no contexts, no corpus)."""
        if not query.contexts and self.retriever is None:
            raise PipelineInputError(
                "no_corpus", "contexts: give at least one context; this service's domain pack has no corpus to search"
            )

    def expected_chars(self, query: AnswerQuery) -> list[int]:
        """The lengths of the texts the reader will read, known before retrieval (for admission on arrival)."""
        return [len(c.text) for c in query.contexts] or [self.mean_passage_chars] * self.passages_read

    async def run(self, query: AnswerQuery) -> Passages:
        self.check(query)
        return await asyncio.to_thread(self._run, query)

    def _run(self, query: AnswerQuery) -> Passages:
        if query.contexts:
            return Passages(
                [c.text for c in query.contexts],
                [c.id or str(i) for i, c in enumerate(query.contexts)],
                [None] * len(query.contexts),
                [],
                None,
                from_corpus=False,
            )
        assert self.retriever is not None
        vector = self.retriever.encode_query(query.question)
        by_alias = self.linker.link_aliases(query.question) if self.linker is not None else []
        hits = self.retriever.search(query.question, self.passages_read, [m.entity.id for m in by_alias], vector)
        mentions = by_alias
        if self.linker is not None:
            # Labelled examples may overrule the aliases; the fallback picks among the best passage's entities.
            top = hits[0].passage.entities if hits else ()
            mentions = self.linker.resolve(query.question, by_alias, vector, top)
        return Passages(
            [h.passage.text for h in hits],
            [h.passage.id for h in hits],
            [h.passage.doc_id for h in hits],
            hits,
            mentions,
            from_corpus=True,
        )


# ---------------------------------------------------------------- read
@dataclass(frozen=True, slots=True)
class Reading:
    result: ReaderResult
    queue_s: float
    inference_s: float


class ReadStage:
    """Windows -> the model's batcher -> spans; with retrieved passages, the answer is chosen by span and retrieval
    score. The threshold: the request's ``min_score``, else the service's, else the model's (for a question asked
    without contexts, the pack's question-only threshold when its calibration has one)."""

    def __init__(
        self,
        metrics: ServiceMetrics,
        *,
        default_min_score: float | None,
        max_windows: int,
        timeout_s: float,
        choice: PassageChoice | None = None,
    ) -> None:
        self.metrics = metrics
        self.default_min_score = default_min_score
        self.max_windows = max_windows
        self.timeout_s = timeout_s
        self.choice = choice or PassageChoice()

    def threshold(self, query: AnswerQuery, reader: Reader, from_corpus: bool) -> float:
        if query.min_score is not None:
            return query.min_score
        if self.default_min_score is not None:
            return self.default_min_score
        if from_corpus and reader.question_only_threshold is not None:
            return reader.question_only_threshold
        return reader.card.no_answer_threshold

    async def run(
        self,
        query: AnswerQuery,
        passages: Passages,
        model: ServedModel,
        reservation: Reservation | None = None,
        started: float | None = None,
    ) -> Reading:
        """Read ``passages`` with ``model``; ``reservation`` is the room admission held for the request and
        ``started`` (a ``time.perf_counter()`` value) when its deadline began."""
        reader = model.reader
        threshold = self.threshold(query, reader, passages.from_corpus)
        if passages.from_corpus and not passages.texts:
            detail = "no corpus passage matches the question"
            result = ReaderResult([], True, AbstentionReason.NO_PASSAGE, 0.0, 0.0, threshold, detail)
            return Reading(result, 0.0, 0.0)
        windows = await asyncio.to_thread(reader.preprocess, query.question, passages.texts)
        if len(windows) > self.max_windows:
            if query.counted:
                self.metrics.rejections.labels("too_large").inc()
            raise PipelineInputError(
                "too_many_windows",
                f"contexts cut into {len(windows)} windows, over the limit of {self.max_windows} "
                "(VQA_MAX_WINDOWS_PER_REQUEST); send shorter contexts",
            )
        jobs = [WindowJob(w, query.max_answer_len, max(query.top_k, 5)) for w in windows]
        left_s = self.timeout_s - (time.perf_counter() - started if started is not None else 0.0)
        batch = await model.batcher.submit(jobs, timeout_s=left_s, reservation=reservation)
        if query.counted:
            self.metrics.queue_wait.observe(batch.queue_s)
        result = await asyncio.to_thread(self._decode, reader, query, passages, windows, batch.predictions, threshold)
        return Reading(result, batch.queue_s, batch.inference_s)

    def _decode(
        self,
        reader: Reader,
        query: AnswerQuery,
        passages: Passages,
        windows: list[Window],
        predictions: list[WindowPrediction],
        threshold: float,
    ) -> ReaderResult:
        if not passages.from_corpus:
            return reader.postprocess(passages.texts, windows, predictions, top_k=query.top_k, min_score=threshold)
        # Every candidate span first (threshold 0), then the choice by span + retrieval score, then the threshold.
        candidates = reader.postprocess(passages.texts, windows, predictions, top_k=max(query.top_k, 20), min_score=0.0)
        if not candidates.answers:
            return replace(candidates, threshold=threshold)
        ranked = rank_answers(candidates.answers, [h.score for h in passages.retrieved], self.choice.retrieval_weight)
        return Reader.apply_threshold(ranked[: query.top_k], candidates.null_score, threshold)


# ---------------------------------------------------------------- enrich
@dataclass(frozen=True, slots=True)
class Enriched:
    enrichment: Enrichment
    graph_s: float
    day: date  # the day the facts are in force on (the rules count scheduled changes from it)


class EnrichStage:
    """Links the answers (and the question, when retrieval did not), then fetches the graph facts of every entity of
    question and answers."""

    def __init__(self, graph: GraphEnrichment, linker: QuestionLinker | None) -> None:
        self.graph = graph
        self.linker = linker

    async def run(self, query: AnswerQuery, passages: Passages, reading: Reading) -> Enriched:
        started = time.perf_counter()
        day = self.graph.today()
        if self.linker is not None:
            linker = self.linker
            answers = [a.text for a in reading.result.answers]

            def link() -> tuple[list[EntityMention], list[list[EntityMention]]]:
                asked = passages.question_mentions
                return (linker.link(query.question) if asked is None else asked), [
                    linker.lexical.link(text) for text in answers
                ]

            question_mentions, found = await asyncio.to_thread(link)
            mentions: list[tuple[str, EntityMention]] = [("question", m) for m in question_mentions]
            for index, answer_mentions in enumerate(found):
                mentions.extend((f"answer:{index}", m) for m in answer_mentions)
            enrichment = await self.graph.facts_for(mentions)
        else:  # no pack to link with: the graph's own aliases
            enrichment = await self.graph.enrich(query.question, [a.text for a in reading.result.answers])
        return Enriched(enrichment, time.perf_counter() - started, day)


# ---------------------------------------------------------------- check rules
class RuleStage:
    """The vertical's rule checks on the answer, its question and its graph facts; counts every hit."""

    def __init__(self, rules: RuleSet, metrics: ServiceMetrics) -> None:
        self.rules = rules
        self.metrics = metrics

    def run(self, query: AnswerQuery, reading: Reading, enriched: Enriched) -> CheckedAnswer:
        checked = check_answer(self.rules, query.question, reading.result, enriched.enrichment, enriched.day)
        if not query.counted:
            return checked
        for outcome in checked.outcomes:
            self.metrics.rule_hits.labels(outcome.rule_id, outcome.action).inc()
        if checked.abstained:
            reason = checked.abstain_reason or AbstentionReason.NO_SPAN
            self.metrics.abstentions.labels(reason.value).inc()
        else:
            self.metrics.answer_score.observe(reading.result.best_score)
        return checked


# ---------------------------------------------------------------- the pipeline
@dataclass(frozen=True, slots=True)
class PipelineAnswer:
    query: AnswerQuery
    passages: Passages
    reading: Reading
    enriched: Enriched
    checked: CheckedAnswer
    rules_version: str
    model_name: str
    model_version: str
    total_s: float


def answer_record(query: AnswerQuery, passages: Passages, reading: Reading, checked: CheckedAnswer,
                  model: ServedModel) -> AnswerDraft:  # fmt: skip
    """What the feedback store keeps of an answered request: the passages read and the answer given (or not)."""
    top = checked.answers[0] if checked.answers else None
    reason = checked.abstain_reason
    return AnswerDraft(
        request_id=query.request_id,
        created_at=datetime.now(UTC),
        model_name=model.reader.card.name,
        model_version=model.reader.card.version,
        question=query.question,
        passages=[
            AnsweredPassage(id=pid, text=text, doc_id=doc)
            for pid, text, doc in zip(passages.ids, passages.texts, passages.doc_ids, strict=True)
        ],
        answer_text=top.text if top else None,
        answer_score=reading.result.best_score,
        answer_start=top.start if top else None,
        answer_end=top.end if top else None,
        answer_passage=top.context_index if top else None,
        abstained=checked.abstained,
        abstain_reason=(f"{reason.value}: {checked.abstain_detail}" if checked.abstain_detail else reason.value)
        if reason is not None
        else None,
    )


class AnswerPipeline:
    """retrieve -> read -> enrich -> check rules -> record. One instance per service, shared by all requests and
    every model the service loads."""

    def __init__(
        self,
        retrieve: RetrieveStage,
        read: ReadStage,
        enrich: EnrichStage,
        check: RuleStage,
        *,
        max_total_context_chars: int,
        metrics: ServiceMetrics,
        recorder: AnswerRecorder | None = None,
    ) -> None:
        self.retrieve = retrieve
        self.read = read
        self.enrich = enrich
        self.check = check
        self.max_total_context_chars = max_total_context_chars
        self.metrics = metrics
        self.recorder = recorder

    async def answer(self, query: AnswerQuery, model: ServedModel) -> PipelineAnswer:
        """Answer ``query`` with ``model`` (leased by the caller for the whole call)."""
        started = time.perf_counter()
        total_chars = sum(len(c.text) for c in query.contexts)
        if total_chars > self.max_total_context_chars:
            if query.counted:
                self.metrics.rejections.labels("too_large").inc()
            raise PipelineInputError(
                "contexts_too_large",
                f"contexts hold {total_chars} characters in total, over the limit of {self.max_total_context_chars}"
                " (VQA_MAX_TOTAL_CONTEXT_CHARS); send fewer or shorter contexts",
            )
        self.retrieve.check(query)
        # Admitted or refused on arrival, from the request's estimated size: a burst is refused at once rather than
        # after every request in it was retrieved for and tokenised. The batcher checks again with the real windows.
        windows_guess, tokens_guess = estimate_size(
            len(query.question), self.retrieve.expected_chars(query), model.reader.window_config
        )
        try:
            reservation = model.batcher.reserve(self.read.timeout_s, windows_guess, tokens_guess)
            try:
                passages = await self.retrieve.run(query)
                reading = await self.read.run(query, passages, model, reservation, started)
            finally:
                model.batcher.release(reservation)
        except OverloadedError as exc:
            if query.counted:
                self.metrics.rejections.labels(exc.code).inc()
            raise
        except DeadlineExceededError:
            if query.counted:
                self.metrics.rejections.labels("deadline").inc()
            raise
        enriched = await self.enrich.run(query, passages, reading)
        checked = self.check.run(query, reading, enriched)
        if query.counted and self.recorder is not None:
            self.recorder.record_answer(answer_record(query, passages, reading, checked, model))
        card = model.reader.card
        return PipelineAnswer(
            query,
            passages,
            reading,
            enriched,
            checked,
            self.check.rules.version,
            card.name,
            card.version,
            time.perf_counter() - started,
        )
