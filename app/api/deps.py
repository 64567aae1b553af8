"""Small typed dependencies: handlers get the service's resources from here, never from globals."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.config import Settings
from app.enrich.graph import GraphEnrichment
from app.enrich.rules import RuleSet
from app.errors import ApiError
from app.feedback import FeedbackDesk
from app.metrics import ServiceMetrics
from app.pipeline import AnswerPipeline
from app.qa.batcher import WindowBatcher
from app.qa.model_host import ModelHost, ServedModel
from app.qa.reader import Reader
from app.rate_limit import KeyRateLimiter


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ServiceMetrics:
    metrics: ServiceMetrics = request.app.state.metrics
    return metrics


def get_reader(request: Request) -> Reader:
    reader: Reader | None = getattr(request.app.state, "reader", None)
    if reader is None or not request.app.state.ready:
        raise ApiError(
            503, "not_ready", "the model is still loading; retry shortly (see GET /readyz)", {"Retry-After": "2"}
        )
    return reader


def get_batcher(request: Request) -> WindowBatcher:
    batcher: WindowBatcher | None = getattr(request.app.state, "batcher", None)
    if batcher is None or not request.app.state.ready:
        raise ApiError(
            503, "not_ready", "the model is still loading; retry shortly (see GET /readyz)", {"Retry-After": "2"}
        )
    return batcher


async def get_served_model(request: Request) -> AsyncIterator[ServedModel]:
    """The current model, leased for the whole request: a reload waits for it instead of cutting it off."""
    host: ModelHost | None = getattr(request.app.state, "models", None)
    if host is None or host.current is None or not request.app.state.ready:
        raise ApiError(
            503, "not_ready", "the model is still loading; retry shortly (see GET /readyz)", {"Retry-After": "2"}
        )
    async with host.lease() as served:
        yield served


def get_pipeline(request: Request) -> AnswerPipeline:
    """The answer pipeline (retrieval, linking, rules); it answers with the model leased by ``get_served_model``."""
    pipeline: AnswerPipeline | None = getattr(request.app.state, "pipeline", None)
    if pipeline is None:
        raise ApiError(
            503, "not_ready", "the model is still loading; retry shortly (see GET /readyz)", {"Retry-After": "2"}
        )
    return pipeline


def get_graph(request: Request) -> GraphEnrichment:
    graph: GraphEnrichment = request.app.state.graph
    return graph


def get_rules(request: Request) -> RuleSet:
    rules: RuleSet = request.app.state.rules
    return rules


# Declared in the OpenAPI document as two alternatives; enforced only when VQA_API_KEYS is set.
bearer_key = HTTPBearer(
    auto_error=False, description="`Authorization: Bearer <key>`, one of VQA_API_KEYS (when keys are configured)"
)
header_key = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`, one of VQA_API_KEYS (when keys are configured)"
)


async def require_api_key(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_key)],
    x_api_key: Annotated[str | None, Depends(header_key)],
) -> None:
    """Checks ``Authorization: Bearer <key>`` or ``X-API-Key`` when ``VQA_API_KEYS`` is set, then the key's rate.

    Every credential the request carries must be valid: a wrong ``Authorization`` next to a right ``X-API-Key`` is
    refused, not quietly outvoted. Every configured key is compared, in constant time, whatever matched, so timing
    says nothing about which key or how much of it was right. Runs on the event loop (async), so the rate count
    needs no lock.
    """
    keys = settings.api_key_list
    if not keys:
        return
    presented: list[str] = []
    if "authorization" in request.headers:
        presented.append(bearer.credentials.strip() if bearer is not None else "")  # not a Bearer: never valid
    if "x-api-key" in request.headers:
        presented.append(x_api_key or "")
    if not presented:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    for candidate in presented:
        if not _matches_a_key(candidate, keys):
            raise ApiError(
                401,
                "unauthorized",
                "invalid API key (in 'Authorization: Bearer <key>' or 'X-API-Key')",
                {"WWW-Authenticate": "Bearer"},
            )
    limiter: KeyRateLimiter = request.app.state.rate_limiter
    wait_s = limiter.retry_after_s(presented[0])
    if wait_s is not None:
        request.app.state.metrics.rejections.labels("rate_limited").inc()
        raise ApiError(
            429,
            "rate_limited",
            f"this API key is over its rate limit ({limiter.spec}, VQA_RATE_LIMIT); retry after {wait_s} s",
            {"Retry-After": str(wait_s)},
        )


def _matches_a_key(candidate: str, keys: tuple[str, ...]) -> bool:
    """Compared with every key in constant time, whatever matched: timing says nothing about which key, or how much
    of it, was right."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def require_admin_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """Admin routes take only ``VQA_ADMIN_KEYS`` (never an API key), and refuse everything when none is set."""
    keys = settings.admin_key_list
    if not keys:
        raise ApiError(403, "admin_disabled", "admin routes are off: set VQA_ADMIN_KEYS to use them")
    presented = _presented_key(request)
    if presented is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing admin key: send 'Authorization: Bearer <admin key>' or 'X-API-Key: <admin key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    if not _matches_a_key(presented, keys):
        raise ApiError(401, "unauthorized", "invalid admin key", {"WWW-Authenticate": "Bearer"})


def get_model_host(request: Request) -> ModelHost:
    host: ModelHost | None = getattr(request.app.state, "models", None)
    if host is None:
        raise ApiError(503, "not_ready", "the service is starting; retry shortly", {"Retry-After": "2"})
    return host


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelHostDep = Annotated[ModelHost, Depends(get_model_host)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
ReaderDep = Annotated[Reader, Depends(get_reader)]
BatcherDep = Annotated[WindowBatcher, Depends(get_batcher)]
ServedModelDep = Annotated[ServedModel, Depends(get_served_model)]
GraphDep = Annotated[GraphEnrichment, Depends(get_graph)]
RulesDep = Annotated[RuleSet, Depends(get_rules)]
PipelineDep = Annotated[AnswerPipeline, Depends(get_pipeline)]


def get_feedback_desk(request: Request) -> FeedbackDesk:
    desk: FeedbackDesk = request.app.state.feedback
    return desk


FeedbackDeskDep = Annotated[FeedbackDesk, Depends(get_feedback_desk)]
