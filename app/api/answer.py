"""POST /answer: maps HTTP to the answer pipeline (app/pipeline.py) and back; nothing else happens here."""

from __future__ import annotations

from typing import Literal, cast

from fastapi import APIRouter, Depends, Request

from app.api.deps import PipelineDep, ServedModelDep, require_api_key
from app.api.schemas import (
    Abstention,
    AnswerRequest,
    AnswerResponse,
    AnswerSpan,
    EntityOut,
    EntityRefOut,
    FactOut,
    ModelRef,
    RelationOut,
    RetrievedPassage,
    RuleOutcomeOut,
    ScheduledChangeOut,
    Timings,
    error_responses,
)
from app.errors import ApiError, request_id_of
from app.pipeline import AnswerQuery, ContextIn, PipelineAnswer, PipelineInputError
from kg.linker import EntityRef

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
_STATUS = {"contexts_too_large": 413, "too_many_windows": 413, "no_corpus": 422}
_CODE = {
    "contexts_too_large": "contexts_too_large",
    "too_many_windows": "too_many_windows",
    "no_corpus": "invalid_request",
}


@router.post("/answer", response_model=AnswerResponse, responses=_ERRORS)
async def answer(
    body: AnswerRequest, request: Request, pipeline: PipelineDep, served: ServedModelDep
) -> AnswerResponse:
    """Find the answer span(s) to a question in the given contexts, or in the domain corpus when none are given."""
    request_id = request_id_of(request)
    query = AnswerQuery(
        question=body.question,
        contexts=[ContextIn(c.text, c.id) for c in body.contexts],
        top_k=body.top_k,
        max_answer_len=body.max_answer_len,
        min_score=body.min_score,
        request_id=request_id,
    )
    try:
        result = await pipeline.answer(query, served)
    except PipelineInputError as exc:
        raise ApiError(_STATUS[exc.code], _CODE[exc.code], exc.message) from exc
    return _response(request_id, result)


def _ref(entity: EntityRef) -> EntityRefOut:
    return EntityRefOut(id=entity.id, name=entity.name, type=entity.type)


def _response(request_id: str, result: PipelineAnswer) -> AnswerResponse:
    checked, reading, enrichment = result.checked, result.reading, result.enriched.enrichment
    return AnswerResponse(
        request_id=request_id,
        answers=[
            AnswerSpan(
                text=a.text,
                score=round(a.score, 6),
                start=a.start,
                end=a.end,
                context_id=result.passages.ids[a.context_index],
                context_index=a.context_index,
                redacted=was_redacted,
            )
            for a, was_redacted in zip(checked.answers, checked.redacted, strict=True)
        ],
        abstained=checked.abstained,
        abstention=Abstention(
            reason=checked.abstain_reason,
            detail=checked.abstain_detail,
            best_score=round(reading.result.best_score, 6),
            threshold=reading.result.threshold,
        )
        if checked.abstained and checked.abstain_reason is not None
        else None,
        model=ModelRef(name=result.model_name, version=result.model_version),
        timings_ms=Timings(
            queue=round(reading.queue_s * 1000, 3),
            inference=round(reading.inference_s * 1000, 3),
            graph=round(result.enriched.graph_s * 1000, 3),
            total=round(result.total_s * 1000, 3),
        ),
        entities=[
            EntityOut(
                id=m.entity.id,
                name=m.entity.name,
                type=m.entity.type,
                text=m.text,
                start=m.start,
                end=m.end,
                source=source,
                method=cast(Literal["alias", "fuzzy", "embedding", "document"], m.method),
            )
            for source, m in enrichment.mentions
        ],
        facts=[
            FactOut(
                entity=_ref(f.entity),
                properties=f.props,
                changes=[ScheduledChangeOut.model_validate(c.as_json()) for c in f.changes],
                relations=[
                    RelationOut(
                        type=r.type,
                        direction=cast(Literal["in", "out"], r.direction),
                        other=_ref(r.other),
                        properties=r.props,
                    )
                    for r in f.relations
                ],
            )
            for f in enrichment.facts
        ],
        graph_status=enrichment.status,
        rules=[RuleOutcomeOut(rule_id=o.rule_id, action=o.action, message=o.message) for o in checked.outcomes],
        rules_version=result.rules_version,
        retrieved=[
            RetrievedPassage(id=h.passage.id, doc_id=h.passage.doc_id, title=h.passage.title, score=round(h.score, 4))
            for h in result.passages.retrieved
        ],
    )
