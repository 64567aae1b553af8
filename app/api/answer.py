"""POST /answer: extractive answers over the given contexts."""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import replace
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request

from app.api.deps import (
    FeedbackDeskDep,
    GraphDep,
    MetricsDep,
    RetrieverDep,
    RulesDep,
    ServedModelDep,
    SettingsDep,
    require_api_key,
)
from app.api.schemas import (
    Abstention,
    AnswerRequest,
    AnswerResponse,
    AnswerSpan,
    ModelRef,
    RetrievedPassage,
    RuleOutcomeOut,
    Timings,
    error_responses,
)
from app.enrich.graph import GraphEnrichment
from app.enrich.pipeline import check_answer
from app.enrich.retrieval import PassageRetriever
from app.errors import ApiError, request_id_of
from app.qa.batcher import DeadlineExceededError, OverloadedError, estimate_size
from app.qa.reader import WindowJob
from app.store.records import AnswerDraft, AnsweredPassage

router = APIRouter(tags=["answer"], dependencies=[Depends(require_api_key)])

_ERRORS = error_responses(
    {
        401: "Missing or invalid API key.",
        413: "Body, total context or window count over its limit.",
        422: "A field breaks its limit; the message names the field.",
        429: "This API key is over its rate limit (VQA_RATE_LIMIT); honour Retry-After.",
        500: "An internal error (the connection is closed), or the model failed on this request alone "
        "(inference_failed; the connection stays open); quote the request id.",
        503: "Overloaded (cannot be answered within the deadline now), model not ready or shutting down; "
        "honour Retry-After.",
        504: "Not served within the request deadline (the admission estimate was wrong).",
    }
)


@router.post("/answer", response_model=AnswerResponse, responses=_ERRORS)
async def answer(
    body: AnswerRequest,
    request: Request,
    served: ServedModelDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    graph: GraphDep,
    rules: RulesDep,
    retriever: RetrieverDep,
    desk: FeedbackDeskDep,
) -> AnswerResponse:
    """Find the answer span(s) to a question in the given contexts."""
    started = time.perf_counter()
    reader, batcher = served.reader, served.batcher
    timeout_s = settings.request_timeout_ms / 1000.0
    total_chars = sum(len(c.text) for c in body.contexts)
    if total_chars > settings.max_total_context_chars:
        metrics.rejections.labels("too_large").inc()
        raise ApiError(
            413,
            "contexts_too_large",
            f"contexts hold {total_chars} characters in total, over the limit of {settings.max_total_context_chars} "
            "(VQA_MAX_TOTAL_CONTEXT_CHARS); send fewer or shorter contexts",
        )
    if not body.contexts and retriever is None:
        raise ApiError(
            422,
            "invalid_request",
            "contexts: give at least one context; this service's domain pack has no corpus to search",
        )
    # Admitted or refused on arrival, from the request's estimated size: a burst is refused at once rather than after
    # every request in it was tokenised. submit() checks again with the real windows.
    expected_chars = [len(c.text) for c in body.contexts] or [_mean_passage_chars(retriever)] * settings.retrieval_top_k
    windows_guess, tokens_guess = estimate_size(len(body.question), expected_chars, reader.window_config)
    try:
        reservation = batcher.reserve(timeout_s, windows_guess, tokens_guess)
    except OverloadedError as exc:
        metrics.rejections.labels(exc.code).inc()
        raise
    try:
        texts, context_ids, doc_ids, retrieved = await _contexts(body, graph, retriever, settings.retrieval_top_k)
        # Tokenising a long context takes milliseconds of CPU: keep it off the event loop.
        windows = await asyncio.to_thread(reader.preprocess, body.question, texts)
        if len(windows) > settings.max_windows_per_request:
            metrics.rejections.labels("too_large").inc()
            raise ApiError(
                413,
                "too_many_windows",
                f"contexts cut into {len(windows)} windows, over the limit of {settings.max_windows_per_request} "
                "(VQA_MAX_WINDOWS_PER_REQUEST); send shorter contexts",
            )
        jobs = [WindowJob(w, body.max_answer_len, body.top_k) for w in windows]
        left_s = timeout_s - (time.perf_counter() - started)
        batch = await batcher.submit(jobs, timeout_s=left_s, reservation=reservation)
    except OverloadedError as exc:
        metrics.rejections.labels(exc.code).inc()
        raise
    except DeadlineExceededError:
        metrics.rejections.labels("deadline").inc()
        raise
    finally:
        batcher.release(reservation)
    min_score = body.min_score if body.min_score is not None else settings.min_score
    result = reader.postprocess(texts, windows, batch.predictions, top_k=body.top_k, min_score=min_score)
    if not texts:  # retrieval found nothing to read: say so rather than "every context is empty"
        result = replace(result, abstain_reason="no_passage: no corpus passage matches the question")
    metrics.queue_wait.observe(batch.queue_s)
    graph_started = time.perf_counter()
    enrichment = await graph.enrich(body.question, [a.text for a in result.answers])
    graph_s = time.perf_counter() - graph_started
    checked = check_answer(rules, body.question, result, enrichment, graph.today())
    for outcome in checked.outcomes:
        metrics.rule_hits.labels(outcome.rule_id, outcome.action).inc()
    if checked.abstained:
        reason = checked.abstain_reason.split(":", 1)[0] if checked.abstain_reason else "unknown"
        metrics.abstentions.labels(reason).inc()
    else:
        metrics.answer_score.observe(result.best_score)
    top = checked.answers[0] if checked.answers else None
    desk.record_answer(
        AnswerDraft(
            request_id=request_id_of(request),
            created_at=datetime.now(UTC),
            model_name=reader.card.name,
            model_version=reader.card.version,
            question=body.question,
            passages=[
                AnsweredPassage(id=cid, text=text, doc_id=doc)
                for cid, text, doc in zip(context_ids, texts, doc_ids, strict=True)
            ],
            answer_text=top.text if top else None,
            answer_score=result.best_score,
            answer_start=top.start if top else None,
            answer_end=top.end if top else None,
            answer_passage=top.context_index if top else None,
            abstained=checked.abstained,
            abstain_reason=checked.abstain_reason,
        )
    )
    return AnswerResponse(
        request_id=request_id_of(request),
        answers=[
            AnswerSpan(
                text=a.text,
                score=round(a.score, 6),
                start=a.start,
                end=a.end,
                context_id=context_ids[a.context_index],
                context_index=a.context_index,
                redacted=was_redacted,
            )
            for a, was_redacted in zip(checked.answers, checked.redacted, strict=True)
        ],
        abstained=checked.abstained,
        abstention=Abstention(
            reason=checked.abstain_reason, best_score=round(result.best_score, 6), threshold=result.threshold
        )
        if checked.abstained and checked.abstain_reason
        else None,
        model=ModelRef(name=reader.card.name, version=reader.card.version),
        timings_ms=Timings(
            queue=round(batch.queue_s * 1000, 3),
            inference=round(batch.inference_s * 1000, 3),
            graph=round(graph_s * 1000, 3),
            total=round((time.perf_counter() - started) * 1000, 3),
        ),
        entities=enrichment.entities_json(),
        facts=enrichment.facts_json(),
        graph_status=enrichment.status,
        rules=[RuleOutcomeOut(rule_id=o.rule_id, action=o.action, message=o.message) for o in checked.outcomes],
        rules_version=rules.version,
        retrieved=retrieved,
    )


@functools.cache
def _mean_passage_chars(retriever: PassageRetriever | None) -> int:
    passages = retriever.passages if retriever is not None else []
    return sum(len(p.text) for p in passages) // max(len(passages), 1)


async def _contexts(
    body: AnswerRequest, graph: GraphEnrichment, retriever: PassageRetriever | None, top_k: int
) -> tuple[list[str], list[str], list[str | None], list[RetrievedPassage]]:
    """The texts to read with their ids and documents: the request's contexts, else passages retrieved from the
    pack's corpus."""
    if body.contexts or retriever is None:
        texts = [c.text for c in body.contexts]
        return texts, [c.id or str(i) for i, c in enumerate(body.contexts)], [None] * len(texts), []
    linked = [m.entity.id for m in graph.linker.link(body.question)]
    hits = await asyncio.to_thread(retriever.search, body.question, top_k, linked)
    retrieved = [
        RetrievedPassage(id=h.passage.id, doc_id=h.passage.doc_id, title=h.passage.title, score=round(h.score, 4))
        for h in hits
    ]
    return [h.passage.text for h in hits], [h.passage.id for h in hits], [h.passage.doc_id for h in hits], retrieved
