"""Small typed dependencies: handlers get the service's resources from here, never from globals."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.enrich.graph import GraphEnrichment
from app.enrich.retrieval import PassageRetriever
from app.enrich.rules import RuleSet
from app.errors import ApiError
from app.metrics import ServiceMetrics
from app.qa.batcher import WindowBatcher
from app.qa.reader import Reader


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


def get_graph(request: Request) -> GraphEnrichment:
    graph: GraphEnrichment = request.app.state.graph
    return graph


def get_rules(request: Request) -> RuleSet:
    rules: RuleSet = request.app.state.rules
    return rules


def get_retriever(request: Request) -> PassageRetriever | None:
    retriever: PassageRetriever | None = request.app.state.retriever
    return retriever


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def require_api_key(request: Request, settings: Annotated[Settings, Depends(get_settings)]) -> None:
    """Checks ``Authorization: Bearer <key>`` or ``X-API-Key`` when ``VQA_API_KEYS`` is set.

    Every configured key is compared, in constant time, whatever matched, so timing says nothing about which key
    or how much of it was right.
    """
    keys = settings.api_key_list
    if not keys:
        return
    presented = _presented_key(request)
    if presented is None:
        raise ApiError(
            401,
            "unauthorized",
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    if not matched:
        raise ApiError(401, "unauthorized", "invalid API key", {"WWW-Authenticate": "Bearer"})


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]
ReaderDep = Annotated[Reader, Depends(get_reader)]
BatcherDep = Annotated[WindowBatcher, Depends(get_batcher)]
GraphDep = Annotated[GraphEnrichment, Depends(get_graph)]
RulesDep = Annotated[RuleSet, Depends(get_rules)]
RetrieverDep = Annotated[PassageRetriever | None, Depends(get_retriever)]
