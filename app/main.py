"""The FastAPI application: ``create_app(settings)`` and its lifespan. Nothing heavy happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import date

from fastapi import FastAPI

from app.api import answer, ops
from app.config import Settings
from app.enrich.graph import GraphEnrichment
from app.enrich.retrieval import PassageRetriever
from app.enrich.rules import RuleSet
from app.errors import install_error_handlers
from app.metrics import ServiceMetrics
from app.middleware import RequestContextMiddleware
from app.qa.batcher import BatchStats, WindowBatcher
from app.qa.reader import Reader
from domain.pack import DomainPack

log = logging.getLogger(__name__)

ReaderFactory = Callable[[Settings], Reader]


def default_reader_factory(settings: Settings) -> Reader:
    return Reader(settings.model_path, device=settings.device, num_threads=settings.cpu_threads)


def _use_pack_calibration(reader: Reader, pack: DomainPack) -> None:
    """The pack's calibration when it has a fit for exactly the served model version, else the card's."""
    name, version = reader.card.name, reader.card.version
    fit = pack.calibration.for_model(name, version)
    if fit is None:
        log.info("calibration: the checkpoint card's (pack %s has no fit for %s %s)", pack.name, name, version)
        return
    reader.use_calibration(fit.temperature, fit.no_answer_threshold, f"pack {pack.name} {fit.fitted_on}")
    log.info("calibration: pack %s, fitted on %s for %s %s", pack.name, fit.fitted_on, name, version)


async def _load_model(
    app: FastAPI, reader: Reader, settings: Settings, metrics: ServiceMetrics, pack: DomainPack
) -> None:
    """Load and warm the model off the event loop, then start the batcher; /readyz turns 200 at the end."""
    started = time.perf_counter()
    try:
        await asyncio.to_thread(reader.load)
        _use_pack_calibration(reader, pack)
        await asyncio.to_thread(reader.warm_up)
    except Exception as exc:
        app.state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model failed to load: %s", app.state.load_error)
        return

    def on_batch(stats: BatchStats) -> None:
        metrics.batch_windows.observe(stats.windows)
        metrics.inference_duration.observe(stats.inference_s)

    batcher = WindowBatcher(
        reader.forward,
        max_batch_windows=settings.max_batch_windows,
        max_wait_ms=settings.max_wait_ms,
        max_queue_windows=settings.max_queue_windows,
        on_batch=on_batch,
        on_queue_depth=metrics.queue_depth.set,
    )
    batcher.start()
    app.state.batcher = batcher
    card = reader.card
    metrics.model_info.info(
        {
            "name": card.name,
            "version": card.version,
            "base_model": str(card.base_model or ""),
            "device": str(reader.device),
            "dtype": str(reader.dtype).removeprefix("torch."),
        }
    )
    for dataset, result in card.eval.items():
        metrics.model_eval_f1.labels(dataset).set(result.f1)
        metrics.model_eval_em.labels(dataset).set(result.exact_match)
    metrics.model_load_seconds.set(time.perf_counter() - started)
    metrics.model_loaded.set(1)
    app.state.ready = True
    log.info("ready: %s v%s in %.2fs", card.name, card.version, time.perf_counter() - started)


def create_app(settings: Settings | None = None, reader_factory: ReaderFactory | None = None) -> FastAPI:
    """Build the service. The model loads in the background after start-up so that /healthz answers at once."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    # The pack is small and a broken one must stop start-up with file:line: field: reason (PackError), so load now.
    pack = DomainPack.load(settings.pack)
    rules = RuleSet.from_file(pack.rules, str(pack.rules_path)) if pack.rules is not None else RuleSet.empty()
    retriever = PassageRetriever.from_documents(pack.documents, settings.retrieval_entity_boost)
    factory = reader_factory or default_reader_factory

    def today() -> date:
        return settings.today or pack.today()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reader = factory(settings)
        app.state.reader = reader
        graph = GraphEnrichment(settings, metrics, pack.graph, today)
        app.state.graph = graph
        loader = asyncio.create_task(_load_model(app, reader, settings, metrics, pack), name="vqa-load-model")
        graph_starter = asyncio.create_task(graph.start(), name="vqa-start-graph")
        try:
            yield
        finally:
            app.state.ready = False
            for task in (loader, graph_starter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            batcher: WindowBatcher | None = app.state.batcher
            if batcher is not None:
                await batcher.close()
            await graph.stop()

    app = FastAPI(
        title="Vertical QA",
        version="0.1.0",
        summary="Extractive question answering for retail banking support, with calibrated scores.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.ready = False
    app.state.load_error = None
    app.state.reader = None
    app.state.batcher = None
    app.state.graph = None
    app.state.pack = pack
    app.state.rules = rules
    app.state.retriever = retriever
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(answer.router)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
