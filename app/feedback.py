"""The feedback desk: records answered requests, takes verdicts on them, and keeps live accuracy in Prometheus.

It owns the feedback store, the thread pool every store call runs on (nothing touches the database on the event
loop), the batched :class:`~app.store.answer_log.AnswerLog`, and a retention task that purges expired records.
The store opens in the background: if the database is down at start-up the service still answers (records are
dropped and counted) and ``POST /feedback`` says 503 until it is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import ParamSpec, TypeVar

from sqlalchemy import URL

from app.config import Settings
from app.metrics import ServiceMetrics
from app.store.answer_log import AnswerLog
from app.store.database import store_url
from app.store.feedback_store import FeedbackConflictError, FeedbackStore, UnknownRequestError
from app.store.records import AnswerDraft, FeedbackExample, FeedbackInput, FeedbackReceipt, LiveAccuracy

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


class StoreUnavailableError(Exception):
    """The feedback store is not reachable (yet); retry later."""


def settings_store_url(settings: Settings) -> URL:
    url = settings.store_url.get_secret_value() if settings.store_url is not None else None
    return store_url(url, settings.store_password.get_secret_value() or None, settings.store_path)


class FeedbackDesk:
    """Answer records in, verdicts in, metrics out; see the module docstring."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics, open_retry_s: float = 5.0) -> None:
        self.settings = settings
        self.metrics = metrics
        self.open_retry_s = open_retry_s
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="vqa-store")
        self.store: FeedbackStore | None = None
        self.answer_log: AnswerLog | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.status = "starting"
        self.received = 0  # verdicts recorded by this process (the canary re-runs its feedback set when it moves)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._open_then_purge(), name="vqa-store"))

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _open_then_purge(self) -> None:
        url = settings_store_url(self.settings)
        while self.store is None:
            try:
                self.store = await self._run(
                    FeedbackStore.open,
                    url,
                    timedelta(days=self.settings.record_retention_days),
                    timedelta(days=self.settings.feedback_retention_days),
                )
            except Exception as exc:
                self.status = "unavailable"
                self.metrics.store_errors.labels("open").inc()
                # The URL may hold a password: log the error class and the backend only.
                log.error("feedback store (%s) unavailable: %s; retrying", url.get_backend_name(), type(exc).__name__)
                await asyncio.sleep(self.open_retry_s)
        self.answer_log = AnswerLog(
            self.store,
            self._executor,
            max_passage_chars=self.settings.record_max_passage_chars,
            on_dropped=self.metrics.answer_records_dropped.inc,
        )
        self.answer_log.start()
        self.status = "ok"
        await self.refresh_live_accuracy()
        while True:
            try:
                purged = await self._run(self.store.purge)
                if purged:
                    log.info("purged %d answered requests past their retention period", purged)
            except Exception:
                self.metrics.store_errors.labels("purge").inc()
                log.exception("purge of expired records failed")
            await asyncio.sleep(self.settings.store_purge_interval_s)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.answer_log is not None:
            await self.answer_log.close()
        if self.store is not None:
            await self._run(self.store.close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ answers and verdicts
    def record_answer(self, draft: AnswerDraft) -> None:
        """Queue an answered request for the store (never blocks; dropped and counted while the store is down)."""
        if self.answer_log is None:
            self.metrics.answer_records_dropped.inc()
            return
        self.answer_log.add(draft)

    async def submit(self, feedback: FeedbackInput) -> FeedbackReceipt:
        """Store a verdict (committed before this returns) and update the feedback metrics.

        Raises :class:`StoreUnavailableError`, and the store's ``UnknownRequestError`` / ``FeedbackConflictError``.
        """
        if self.store is None or self.answer_log is None:
            raise StoreUnavailableError("the feedback store is not reachable yet")
        if self.answer_log.is_pending(feedback.request_id):
            await self.answer_log.flush_pending()
        try:
            receipt = await self._run(self.store.add_feedback, feedback)
        except (UnknownRequestError, FeedbackConflictError):
            raise
        except Exception as exc:
            self.metrics.store_errors.labels("feedback").inc()
            log.exception("could not store feedback")
            raise StoreUnavailableError("the feedback store failed to record the verdict; retry") from exc
        if receipt.created:
            self.received += 1
            stored = receipt.feedback
            self.metrics.feedback.labels(stored.verdict, stored.model_version).inc()
            if stored.rating is not None:
                self.metrics.feedback_rating.labels(stored.model_version).observe(stored.rating)
            await self.refresh_live_accuracy([stored.model_version])
        return receipt

    async def newest_feedback(self, limit: int) -> list[FeedbackExample]:
        """The newest verdicts with their answers (empty while the store is unreachable)."""
        if self.store is None:
            return []
        return await self._run(self.store.newest_feedback, limit)

    async def refresh_live_accuracy(self, versions: list[str] | None = None) -> list[LiveAccuracy]:
        """Set the accuracy gauges from the store (all versions with feedback, or the ones named)."""
        if self.store is None:
            return []
        try:
            rows = await self._run(self.store.live_accuracy, self.settings.live_accuracy_window, versions)
        except Exception:
            self.metrics.store_errors.labels("accuracy").inc()
            log.exception("could not compute live accuracy")
            return []
        for row in rows:
            self.metrics.live_accuracy.labels(row.model_version).set(row.accuracy)
            self.metrics.live_accuracy_samples.labels(row.model_version).set(row.samples)
        return rows
