"""Ops routes: liveness, readiness, metrics. Unauthenticated and outside request metrics by design."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app.api.schemas import ModelRef

router = APIRouter(tags=["ops"])


class Readiness(BaseModel):
    """What /readyz reports (the OpenAPI document's shape of its 200 and 503 bodies)."""

    status: Literal["ready", "loading", "failed", "draining"]
    model: ModelRef | None
    graph: Literal["ok", "unavailable", "disabled"]
    error: str | None = None


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the process serves HTTP."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Loading, failed or shutting down; honour Retry-After."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready: the model is loaded and warmed up (503 until then, if loading failed, or while draining)."""
    state = request.app.state
    reader = getattr(state, "reader", None)
    draining = state.drain.draining
    ready = state.ready and not draining
    if draining:
        status = "draining"
    else:
        status = "ready" if state.ready else ("failed" if state.load_error else "loading")
    body: dict[str, object] = {
        "status": status,
        "model": {"name": reader.card.name, "version": reader.card.version}
        if reader is not None and state.ready
        else None,
    }
    graph = getattr(state, "graph", None)
    # A graph outage degrades answers (no facts) but does not make the service unready.
    body["graph"] = graph.status if graph is not None else "disabled"
    # Likewise the feedback store: answers go on while it is down (their records are dropped and counted).
    desk = getattr(state, "feedback", None)
    body["store"] = desk.status if desk is not None else "disabled"
    if state.load_error:
        body["error"] = state.load_error
    headers = {} if ready else {"Retry-After": "2"}
    return JSONResponse(body, status_code=200 if ready else 503, headers=headers)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the service's metrics."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
