"""Dynamic batching of windows across requests.

Handlers enqueue their windows and await one future; a single worker task collects windows until it has
``max_batch_windows`` or ``max_wait_ms`` has passed since the first one arrived, splits them into length groups
(less padding) and runs each group through ``run_batch`` in a dedicated thread, so the event loop never blocks on
the model. Results go back 1:1 to the jobs that asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.qa.reader import WindowJob, WindowPrediction
from app.qa.windows import plan_length_groups

log = logging.getLogger(__name__)

RunBatch = Callable[[Sequence[WindowJob]], list[WindowPrediction]]


class QueueFullError(Exception):
    """The queue cannot take this request's windows now; the client should retry after ``retry_after_s``."""

    def __init__(self, queued: int, capacity: int, wanted: int, retry_after_s: int) -> None:
        super().__init__(
            f"server busy: {queued} windows queued, capacity {capacity}, this request needs {wanted}; "
            f"retry after {retry_after_s}s"
        )
        self.retry_after_s = retry_after_s


class DeadlineExceededError(Exception):
    """The request's deadline passed before all of its windows were run."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no more work."""


@dataclass(slots=True)
class BatchStats:
    """What one run of the worker did, for metrics."""

    windows: int
    groups: int
    inference_s: float


@dataclass(eq=False, slots=True)
class _Request:
    jobs: list[WindowJob]
    future: asyncio.Future[list[WindowPrediction]]
    deadline: float
    enqueued: float
    results: list[WindowPrediction | None] = field(default_factory=list)
    remaining: int = 0
    started: float | None = None  # monotonic time its first window entered a batch
    inference_s: float = 0.0


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A request's window predictions plus how long it queued and how long its batches ran."""

    predictions: list[WindowPrediction]
    queue_s: float
    inference_s: float


class WindowBatcher:
    """Collects windows from concurrent requests into batches for one model.

    ``submit`` raises :class:`QueueFullError` at once when the bounded queue cannot take all of a request's windows,
    and :class:`DeadlineExceededError` when the request's deadline passes while its windows wait or run.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_windows: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_windows: int = 1024,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_windows < 1 or max_queue_windows < 1:
            raise ValueError("max_batch_windows and max_queue_windows must be >= 1")
        self._run_batch = run_batch
        self.max_batch_windows = max_batch_windows
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_windows = max_queue_windows
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._pending: deque[tuple[_Request, int]] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vqa-forward")
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._in_flight: list[tuple[_Request, int]] = []
        self._recent_batch_s = 0.05

    @property
    def queue_depth(self) -> int:
        """Windows waiting to enter a batch."""
        return len(self._pending)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="vqa-batcher")

    async def close(self) -> None:
        """Stop taking work, fail what is still queued, and wait for the batch in flight."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for request, _ in [*self._in_flight, *self._pending]:
            if not request.future.done():
                request.future.set_exception(BatcherClosedError("service is shutting down"))
        self._pending.clear()
        self._in_flight = []
        self._executor.shutdown(wait=True)

    async def submit(self, jobs: list[WindowJob], timeout_s: float) -> BatchResult:
        """Queue ``jobs`` and wait for their predictions (same order)."""
        if self._closed:
            raise BatcherClosedError("service is shutting down")
        if not jobs:
            return BatchResult([], 0.0, 0.0)
        queued = len(self._pending)
        if queued + len(jobs) > self.max_queue_windows:
            # Retry-After: roughly the time to drain what is queued, at least one second.
            drain_s = (queued / self.max_batch_windows + 1) * self._recent_batch_s
            raise QueueFullError(queued, self.max_queue_windows, len(jobs), max(1, round(drain_s)))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        request = _Request(
            jobs=jobs,
            future=loop.create_future(),
            deadline=now + timeout_s,
            enqueued=now,
            results=[None] * len(jobs),
            remaining=len(jobs),
        )
        self._pending.extend((request, i) for i in range(len(jobs)))
        self._report_depth()
        self._wakeup.set()
        try:
            predictions = await asyncio.wait_for(asyncio.shield(request.future), timeout=timeout_s)
        except TimeoutError:
            self._abandon(request)
            raise DeadlineExceededError(
                f"request not served within its deadline of {timeout_s * 1000:.0f} ms"
            ) from None
        started = request.started if request.started is not None else request.enqueued
        return BatchResult(predictions, started - request.enqueued, request.inference_s)

    def _abandon(self, request: _Request) -> None:
        """Drop the windows of a request nobody waits for any more, so they cost no model time."""
        if not request.future.done():
            request.future.cancel()
        self._pending = deque(item for item in self._pending if item[0] is not request)
        self._report_depth()

    def _report_depth(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(len(self._pending))

    async def _collect(self) -> list[tuple[_Request, int]]:
        while not self._pending:
            self._wakeup.clear()
            await self._wakeup.wait()
            if self._closed:
                return []
        first_arrival = time.monotonic()
        while len(self._pending) < self.max_batch_windows:
            left = self.max_wait_s - (time.monotonic() - first_arrival)
            if left <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=left)
            except TimeoutError:
                break
        batch: list[tuple[_Request, int]] = []
        now = time.monotonic()
        while self._pending and len(batch) < self.max_batch_windows:
            request, index = self._pending.popleft()
            if request.future.done():
                continue
            if now >= request.deadline:
                request.future.set_exception(DeadlineExceededError("deadline passed while queued"))
                continue
            batch.append((request, index))
        self._report_depth()
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            batch = await self._collect()
            if not batch:
                continue
            self._in_flight = batch
            started = time.monotonic()
            for request, _ in batch:
                if request.started is None:
                    request.started = started
            groups = plan_length_groups([len(request.jobs[i].window) for request, i in batch])
            try:
                for group in groups:
                    items = [batch[g] for g in group]
                    jobs = [request.jobs[i] for request, i in items]
                    outputs = await loop.run_in_executor(self._executor, self._run_batch, jobs)
                    for (request, index), output in zip(items, outputs, strict=True):
                        request.results[index] = output
                        request.remaining -= 1
            except Exception as exc:  # a failed forward fails only the requests in this batch
                log.exception("batch of %d windows failed", len(batch))
                for request, _ in batch:
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            finally:
                # Cancelled (close) mid-batch: keep _in_flight so close() can fail those requests.
                if not self._closed:
                    self._in_flight = []
            elapsed = time.monotonic() - started
            self._recent_batch_s = 0.8 * self._recent_batch_s + 0.2 * elapsed
            if self._on_batch is not None:
                self._on_batch(BatchStats(windows=len(batch), groups=len(groups), inference_s=elapsed))
            for request in {request for request, _ in batch}:
                request.inference_s += elapsed
                if request.remaining == 0 and not request.future.done():
                    request.future.set_result([r for r in request.results if r is not None])
