"""Answered requests go to the store in batches, off the request path.

``/answer`` hands a draft to :meth:`AnswerLog.add` (no I/O, never blocks); a writer task redacts everything queued
(:func:`~app.store.records.build_answer_record`) and commits it in one transaction on the store's thread pool about
every ``flush_interval_s``. Feedback that arrives for a
request still queued calls :meth:`flush_pending` first, so it finds the record. What may be lost on ``kill -9`` is
the last interval's records, never acknowledged feedback (that is committed before the 201).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from app.store.feedback_store import FeedbackStore
from app.store.records import AnswerDraft, build_answer_record

log = logging.getLogger(__name__)


class AnswerLog:
    """A bounded queue of answer records and the task that writes them.

    When the store is down or slow and the queue reaches ``max_pending``, new records are dropped (and counted by
    ``on_dropped``): answering never waits for the feedback store.
    """

    def __init__(
        self,
        store: FeedbackStore,
        executor: ThreadPoolExecutor,
        max_passage_chars: int = 20_000,
        flush_interval_s: float = 0.05,
        max_pending: int = 10_000,
        max_batch: int = 500,
        on_dropped: Callable[[int], None] | None = None,
    ) -> None:
        self._store = store
        self._executor = executor
        self.max_passage_chars = max_passage_chars
        self.flush_interval_s = flush_interval_s
        self.max_pending = max_pending
        self.max_batch = max_batch
        self._on_dropped = on_dropped
        self._pending: deque[AnswerDraft] = deque()
        self._pending_ids: set[str] = set()
        self._writing: list[AnswerDraft] = []
        self._write_lock = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vqa-answer-log")

    def add(self, record: AnswerDraft) -> None:
        """Queue a record; drops it (counted) when the queue is full or the log is closed."""
        if self._closed or len(self._pending) >= self.max_pending:
            if self._on_dropped is not None:
                self._on_dropped(1)
            return
        self._pending.append(record)
        self._pending_ids.add(record.request_id)
        if len(self._pending) >= self.max_batch:
            self._wakeup.set()

    def is_pending(self, request_id: str) -> bool:
        return request_id in self._pending_ids or any(r.request_id == request_id for r in self._writing)

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._writing)

    async def flush_pending(self) -> None:
        """Write everything queued now (and wait for a batch being written)."""
        async with self._write_lock:
            while self._pending:
                await self._write_batch()

    async def _write_batch(self) -> None:
        batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
        self._writing = batch
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._write, batch)
        except Exception:
            log.exception("could not store %d answer records; they are dropped", len(batch))
            if self._on_dropped is not None:
                self._on_dropped(len(batch))
        finally:
            self._writing = []
            for record in batch:
                self._pending_ids.discard(record.request_id)

    def _write(self, batch: list[AnswerDraft]) -> None:
        self._store.add_answers([build_answer_record(draft, self.max_passage_chars) for draft in batch])

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=self.flush_interval_s)
            self._wakeup.clear()
            if self._pending:
                async with self._write_lock:
                    while self._pending:
                        await self._write_batch()

    async def close(self) -> None:
        """Write what is queued, then stop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush_pending()
