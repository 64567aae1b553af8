"""Admin routes (their own keys, VQA_ADMIN_KEYS): the served model and its zero-downtime reload."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import MetricsDep, ModelHostDep, SettingsDep, require_admin_key
from app.api.schemas import ModelRef, error_responses
from app.errors import ApiError
from app.qa.model_host import ReloadInProgressError
from app.qa.reader import ModelLoadError
from app.qa.registry import ModelRegistry, RegistryError

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin_key)])


class ServedModelOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelRef
    source: str = Field(description="The checkpoint folder it was loaded from.")
    registry_version: str | None = Field(description="The registry's serving version, if a registry is in use.")
    in_flight: int = Field(description="Requests holding this model now.")
    reloading: bool


class ReloadOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model: ModelRef
    previous: ModelRef | None
    source: str
    load_seconds: float
    drained: bool = Field(description="Every request on the previous model finished before its batcher closed.")


_ERRORS = error_responses(
    {
        401: "Missing or invalid admin key.",
        403: "Admin routes are off (VQA_ADMIN_KEYS is empty).",
        409: "A reload is already running.",
        422: "The checkpoint to serve cannot be loaded; the current model keeps serving.",
    }
)


@router.get("/model", response_model=ServedModelOut, responses=_ERRORS)
async def served_model(host: ModelHostDep, settings: SettingsDep) -> ServedModelOut:
    """The model being served and where it came from."""
    served = host.current
    if served is None:
        raise ApiError(503, "not_ready", "no model is loaded yet; see GET /readyz", {"Retry-After": "2"})
    path = settings.model_registry
    registry = await asyncio.to_thread(ModelRegistry.load, path) if path is not None else None
    return ServedModelOut(
        model=ModelRef(name=served.name, version=served.version),
        source=str(served.source),
        registry_version=registry.serving if registry else None,
        in_flight=served.leases,
        reloading=host.reloading,
    )


@router.post("/reload", response_model=ReloadOut, responses=_ERRORS)
async def reload(host: ModelHostDep, metrics: MetricsDep) -> ReloadOut:
    """Load the registry's serving version (or VQA_MODEL_PATH again) and swap to it without dropping requests."""
    try:
        result = await host.reload()
    except ReloadInProgressError as exc:
        raise ApiError(409, "reload_in_progress", f"{exc}; wait for it to finish") from None
    except (ModelLoadError, RegistryError) as exc:
        metrics.model_reloads.labels("failed").inc()
        raise ApiError(422, "reload_failed", f"{exc}; the current model keeps serving") from None
    metrics.model_reloads.labels("ok").inc()
    previous = result.previous
    return ReloadOut(
        model=ModelRef(name=result.current.name, version=result.current.version),
        previous=ModelRef(name=previous.name, version=previous.version) if previous else None,
        source=str(result.current.source),
        load_seconds=round(result.load_s, 3),
        drained=result.drained,
    )
