"""Dynamic batching of windows across requests: fair order, admission against deadlines, failures kept apart.

Handlers enqueue a request's windows and await one future; a single worker task builds batches and runs them through
``run_batch`` in a dedicated thread, so the event loop never blocks on the model. Results go back 1:1 to the jobs
that asked. The policy (the README's "Batching and overload" section says the same):

- **Fair order.** Windows are taken round-robin across the waiting requests, one window per request per turn, so a
  question with one window waits for at most one window of each request ahead of it, never for all thirty windows
  of a 30,000-character context. A batch ends at ``max_batch_windows`` windows or ``max_batch_tokens`` tokens, which
  bounds how long a newcomer waits for the batch already running. Inside a batch, windows of similar length run
  together (shortest group first) and a request is answered as soon as its last window has run.
- **Admission, not time-outs.** ``reserve`` (on arrival, from an estimate of the request's size) and ``submit``
  (with its real windows) project when the request would finish: the batch in progress, plus the windows the
  round-robin order runs before its last one, at the measured model time per token (:class:`TokenCost`, over recent
  batches, seeded at start-up), stretched by the load still arriving (requests admitted later take their turns
  too). The request is taken only if that is within ``ADMISSION_HEADROOM`` of its deadline and it would not push a
  request already admitted past that one's plan; otherwise :class:`OverloadedError` at once, with the seconds
  after which the work ahead will have drained enough. The deadline itself stays as a backstop
  (:class:`DeadlineExceededError`) for when the estimate was wrong.
- **Isolation.** A forward that raises is split in halves and retried, down to the single window that fails; only
  that window's request fails (:class:`InferenceError`), its neighbours get their answers.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from app.qa.reader import WindowJob, WindowPrediction
from app.qa.windows import WindowConfig, plan_length_groups

log = logging.getLogger(__name__)

RunBatch = Callable[[Sequence[WindowJob]], list[WindowPrediction]]

# A request is admitted when its projected finish is within this share of its deadline; the rest absorbs the error
# of the estimate (the machine slows down, later requests take their round-robin turns).
ADMISSION_HEADROOM = 0.8
# The cost estimate follows recent batches (see TokenCost).
ESTIMATE_HALF_LIFE_TOKENS = 4096
ESTIMATE_SEED_TOKENS = 2048
# The arrival load is averaged over about this many seconds, and never taken above this share of the model's time.
ARRIVAL_HORIZON_S = 30.0
MAX_ARRIVAL_LOAD = 0.9
CHARS_PER_TOKEN = 4


class TokenCost:
    """Model seconds per window token over recent batches: decayed seconds over decayed tokens.

    A batch's weight halves with every ``ESTIMATE_HALF_LIFE_TOKENS`` tokens run after it, and the start-up
    measurement enters as ``ESTIMATE_SEED_TOKENS`` tokens, so a slow start (the graph child boots at the same time) is
    forgotten after a few batches. A two-parameter fit (overhead per batch + time per token) was tried and dropped:
    while only short windows ran, its slope for full batches stayed whatever the start-up seed said, and long
    contexts were refused on that stale figure; the fitted overhead was ~0 on the CPU anyway.
    """

    def __init__(self, seconds_per_token: float) -> None:
        if seconds_per_token <= 0:
            raise ValueError("seconds_per_token must be > 0")
        self._seconds = seconds_per_token * ESTIMATE_SEED_TOKENS
        self._tokens = float(ESTIMATE_SEED_TOKENS)

    def observe(self, tokens: int, seconds: float) -> None:
        keep = 0.5 ** (tokens / ESTIMATE_HALF_LIFE_TOKENS)
        self._seconds = keep * self._seconds + seconds
        self._tokens = keep * self._tokens + tokens

    @property
    def per_token_s(self) -> float:
        return self._seconds / self._tokens


def estimate_size(question_chars: int, context_chars: Sequence[int], config: WindowConfig) -> tuple[int, int]:
    """A guess at a request's (windows, tokens) from its text lengths, before tokenising, cut as ``config`` cuts.

    About four characters a token (English WordPiece; scripts without spaces make more tokens, which the check at
    ``submit`` with the real windows catches).
    """
    question = min(question_chars // CHARS_PER_TOKEN + 1, config.max_question_tokens)
    room = max(config.max_seq_len - 3 - question, 2)
    stride = min(config.stride, room // 2)
    windows = tokens = 0
    for chars in context_chars:
        if chars <= 0:
            continue
        context = chars // CHARS_PER_TOKEN + 1
        count = 1 if context <= room else 1 + math.ceil((context - room) / (room - stride))
        windows += count
        tokens += context + count * (question + 3) + (count - 1) * stride
    return max(windows, 1), max(tokens, 1)


class OverloadedError(Exception):
    """The service cannot serve this request within its deadline now; retry after ``retry_after_s`` seconds."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFullError(OverloadedError):
    """The bounded queue cannot take this request's windows now."""

    code = "queue_full"

    def __init__(self, queued: int, capacity: int, wanted: int, retry_after_s: int) -> None:
        super().__init__(
            f"server busy: {queued} windows queued, capacity {capacity}, this request needs {wanted}; "
            f"retry after {retry_after_s}s",
            retry_after_s,
        )


class DeadlineExceededError(Exception):
    """The request's deadline passed before all of its windows were run."""


class BatcherClosedError(Exception):
    """The batcher is shutting down and takes no more work."""


class InferenceError(Exception):
    """The model failed on one of this request's windows (alone, after its batch was split); other requests ran."""


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
    enqueued: float
    deadline: float
    planned: float  # the finish admission planned for: enqueued + ADMISSION_HEADROOM * timeout
    token_prefix: list[int]  # token_prefix[i]: tokens of windows [0, i)
    results: list[WindowPrediction | None] = field(default_factory=list)
    dispatched: int = 0  # windows handed to batches so far, in order
    remaining: int = 0  # windows without a prediction yet
    started: float | None = None  # monotonic time its first window entered a batch
    inference_s: float = 0.0

    @property
    def queued(self) -> int:
        return len(self.jobs) - self.dispatched

    @property
    def queued_tokens(self) -> int:
        return self.token_prefix[-1] - self.token_prefix[self.dispatched]


@dataclass(eq=False, slots=True)
class Reservation:
    """Room held in the plan for a request that is still being retrieved for or tokenised (see ``reserve``)."""

    queued: int  # estimated windows
    queued_tokens: int  # estimated tokens
    deadline: float
    planned: float


@dataclass(frozen=True, slots=True)
class BatchResult:
    """A request's window predictions plus how long it queued and how long its batches ran."""

    predictions: list[WindowPrediction]
    queue_s: float
    inference_s: float


class WindowBatcher:
    """Collects windows from concurrent requests into batches for one model (see the module docstring for the policy).

    ``submit`` raises :class:`OverloadedError` (or its :class:`QueueFullError`) at once when the request cannot be
    served in time, :class:`DeadlineExceededError` if its deadline passes anyway, :class:`InferenceError` if the model
    fails on one of its windows and :class:`BatcherClosedError` once :meth:`close` was called.
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_windows: int = 32,
        max_wait_ms: float = 5.0,
        max_queue_windows: int = 1024,
        max_batch_tokens: int | None = None,
        seconds_per_token: float = 1e-3,
        on_batch: Callable[[BatchStats], None] | None = None,
        on_queue_depth: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_windows < 1 or max_queue_windows < 1:
            raise ValueError("max_batch_windows and max_queue_windows must be >= 1")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be >= 1 (or None: no token limit)")
        self._run_batch = run_batch
        self.max_batch_windows = max_batch_windows
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue_windows = max_queue_windows
        self.cost = TokenCost(seconds_per_token)
        self._on_batch = on_batch
        self._on_queue_depth = on_queue_depth
        self._turns: deque[_Request] = deque()  # requests with windows not yet in a batch, in round-robin order
        self._reservations: set[Reservation] = set()
        self._queued_windows = 0
        self._queued_tokens = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vqa-forward")
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self._in_flight: list[tuple[_Request, int]] = []
        self._in_flight_tokens = 0
        self._batch_started = 0.0
        self._batch_tokens_run = 0  # tokens of the running batch whose forward succeeded
        self._arrived_tokens = 0.0  # admitted tokens, decayed over ARRIVAL_HORIZON_S (see arrival_load)
        self._arrivals_at = time.monotonic()

    @property
    def seconds_per_token(self) -> float:
        """Model time per window token over recent batches."""
        return self.cost.per_token_s

    @property
    def queue_depth(self) -> int:
        """Windows waiting to enter a batch."""
        return self._queued_windows

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="vqa-batcher")

    async def close(self) -> None:
        """Stop taking work, fail what is still queued or running, and wait for the model thread to finish."""
        self._closed = True
        self._wakeup.set()
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for request in {*(r for r, _ in self._in_flight), *self._turns}:
            if not request.future.done():
                request.future.set_exception(BatcherClosedError("service is shutting down"))
        self._turns.clear()
        self._reservations.clear()
        self._queued_windows = self._queued_tokens = 0
        self._in_flight = []
        # The forward in progress (if any) finishes in its thread; wait for it without blocking the event loop.
        await asyncio.to_thread(self._executor.shutdown, True)

    # ------------------------------------------------------------------ admission
    def reserve(self, timeout_s: float, windows: int, tokens: int) -> Reservation:
        """Admit a request from an estimate of its size and hold its place in the plan until :meth:`submit`.

        A handler calls this on arrival, before retrieval and tokenising, so that a burst is refused at once instead
        of after every request in it was tokenised (those still being tokenised are in nobody's plan otherwise).
        ``submit`` checks again with the real windows. Raises like :meth:`check_capacity`; :meth:`release` it in a
        ``finally``.
        """
        self.check_capacity(timeout_s, windows, tokens)
        now = time.monotonic()
        reservation = Reservation(windows, tokens, now + timeout_s, now + ADMISSION_HEADROOM * timeout_s)
        self._reservations.add(reservation)
        return reservation

    def release(self, reservation: Reservation) -> None:
        self._reservations.discard(reservation)

    def check_capacity(self, timeout_s: float, windows: int = 1, tokens: int = 1) -> None:
        """Raise :class:`OverloadedError` unless a request of ``windows`` windows holding ``tokens`` tokens in all
        would be served within ``timeout_s`` now (queued work, running batch and reservations counted)."""
        if self._closed:
            raise BatcherClosedError("service is shutting down")
        reserved = sum(r.queued for r in self._reservations)
        if self._queued_windows + reserved + windows > self.max_queue_windows:
            excess = self._queued_windows + reserved + windows - self.max_queue_windows
            mean_tokens = self._queued_tokens / max(self._queued_windows, 1)
            drain_s = self._in_flight_left(time.monotonic()) + self._seconds_for(excess * mean_tokens)
            raise QueueFullError(self._queued_windows, self.max_queue_windows, windows, max(1, math.ceil(drain_s)))
        now = time.monotonic()
        wait_s = self._admission_wait(now, windows, tokens, timeout_s)
        if wait_s > 0:
            retry_after = max(1, math.ceil(wait_s))
            raise OverloadedError(
                f"server busy: this request cannot be answered within its deadline of {timeout_s * 1000:.0f} ms "
                f"with the work queued now ({self._queued_windows} windows); retry after {retry_after}s",
                retry_after,
            )

    def _in_flight_left(self, now: float) -> float:
        if not self._in_flight:
            return 0.0
        return max(0.0, self.cost.per_token_s * self._in_flight_tokens - (now - self._batch_started))

    def _seconds_for(self, tokens: float) -> float:
        return self.cost.per_token_s * tokens

    def arrival_load(self, now: float | None = None) -> float:
        """Seconds of model work admitted per second over about ``ARRIVAL_HORIZON_S`` (0.5: half the model's time)."""
        now = time.monotonic() if now is None else now
        kept = self._arrived_tokens * math.exp(-(now - self._arrivals_at) / ARRIVAL_HORIZON_S)
        return kept / ARRIVAL_HORIZON_S * self.cost.per_token_s

    def _note_arrival(self, now: float, tokens: int) -> None:
        self._arrived_tokens = self._arrived_tokens * math.exp(-(now - self._arrivals_at) / ARRIVAL_HORIZON_S) + tokens
        self._arrivals_at = now

    def _admission_wait(self, now: float, windows: int, tokens: int, timeout_s: float) -> float:
        """Seconds until a (windows, tokens) request could be admitted if nothing else arrived; 0: admit now.

        Under round-robin a request with ``m`` windows left is done once every other waiting request ``i`` has run
        ``min(m, r_i)`` of its ``r_i`` windows (costed at its mean window length) and it has run all of its own. While
        it runs, requests keep arriving and take their turns: at an arrival load ``u`` (seconds of work per second)
        its own share of the model is ``1 - u``, so its time is stretched by ``1 / (1 - u)`` (processor sharing).
        """
        base = now + self._in_flight_left(now)
        waiting: list[_Request | Reservation] = [r for r in self._turns if not r.future.done() and r.queued > 0]
        waiting += self._reservations
        waiting.sort(key=lambda r: r.queued)
        counts = [r.queued for r in waiting]
        # tokens_before[k]: all queued tokens of the k requests with the fewest windows; mean_after[k]: the sum of
        # the mean window lengths of the others. Then sum_i min(m, r_i) * mean_i is one bisect away.
        tokens_before = [0, *itertools.accumulate(r.queued_tokens for r in waiting)]
        mean_after = [0.0] * (len(waiting) + 1)
        for k in range(len(waiting) - 1, -1, -1):
            mean_after[k] = mean_after[k + 1] + waiting[k].queued_tokens / waiting[k].queued

        def tokens_ahead(m: int) -> float:
            k = bisect.bisect_right(counts, m)
            return tokens_before[k] + m * mean_after[k]

        seconds = self._seconds_for
        stretch = 1.0 / (1.0 - min(self.arrival_load(now), MAX_ARRIVAL_LOAD))
        own_finish = base + seconds(tokens_ahead(windows) + tokens) * stretch
        wait = own_finish - (now + ADMISSION_HEADROOM * timeout_s)
        # Requests already admitted were planned with room for arrivals like this one (the stretch above); the
        # newcomer is refused if it would push one past its plan (or, if the service slowed since, its deadline).
        new_mean = tokens / windows
        for request in waiting:
            finish = base + seconds(tokens_ahead(request.queued))
            if finish > request.deadline:
                continue  # already lost: keeping it in the plan would only refuse others for nothing
            limit = request.planned if finish <= request.planned else request.deadline
            if finish + seconds(min(windows, request.queued) * new_mean) > limit:
                wait = max(wait, finish - now)
        return wait

    # ------------------------------------------------------------------ requests
    async def submit(
        self, jobs: list[WindowJob], timeout_s: float, reservation: Reservation | None = None
    ) -> BatchResult:
        """Queue ``jobs`` and wait for their predictions (same order); ``reservation`` is replaced by the real thing."""
        if reservation is not None:
            self.release(reservation)
        if self._closed:
            raise BatcherClosedError("service is shutting down")
        if not jobs:
            return BatchResult([], 0.0, 0.0)
        if timeout_s <= 0:  # spent before the windows got here (retrieval, tokenising)
            raise DeadlineExceededError("request deadline passed before its windows were queued")
        lengths = [len(job.window) for job in jobs]
        self.check_capacity(timeout_s, len(jobs), sum(lengths))
        now = time.monotonic()
        request = _Request(
            jobs=jobs,
            future=asyncio.get_running_loop().create_future(),
            enqueued=now,
            deadline=now + timeout_s,
            planned=now + ADMISSION_HEADROOM * timeout_s,
            token_prefix=[0, *itertools.accumulate(lengths)],
            results=[None] * len(jobs),
            remaining=len(jobs),
        )
        self._note_arrival(now, request.token_prefix[-1])
        self._turns.append(request)
        self._queued_windows += len(jobs)
        self._queued_tokens += request.token_prefix[-1]
        self._report_depth()
        self._wakeup.set()
        try:
            predictions = await asyncio.wait_for(asyncio.shield(request.future), timeout=timeout_s)
        except TimeoutError:
            self._abandon(request)
            raise DeadlineExceededError(
                f"request not served within its deadline of {timeout_s * 1000:.0f} ms"
            ) from None
        except asyncio.CancelledError:
            self._abandon(request)
            raise
        started = request.started if request.started is not None else request.enqueued
        return BatchResult(predictions, started - request.enqueued, request.inference_s)

    def _abandon(self, request: _Request) -> None:
        """Drop the windows of a request nobody waits for any more, so they cost no model time."""
        if not request.future.done():
            request.future.cancel()
        self._unqueue(request)

    def _fail(self, request: _Request, error: Exception) -> None:
        if not request.future.done():
            request.future.set_exception(error)
        self._unqueue(request)

    def _unqueue(self, request: _Request) -> None:
        if request.queued:
            self._queued_windows -= request.queued
            self._queued_tokens -= request.queued_tokens
            request.dispatched = len(request.jobs)
            self._report_depth()
        try:
            self._turns.remove(request)
        except ValueError:
            pass

    def _report_depth(self) -> None:
        if self._on_queue_depth is not None:
            self._on_queue_depth(self._queued_windows)

    # ------------------------------------------------------------------ the worker
    def _batch_full(self) -> bool:
        return self._queued_windows >= self.max_batch_windows or (
            self.max_batch_tokens is not None and self._queued_tokens >= self.max_batch_tokens
        )

    async def _collect(self) -> list[tuple[_Request, int]]:
        while not self._queued_windows:
            self._wakeup.clear()
            await self._wakeup.wait()
            if self._closed:
                return []
        first_arrival = time.monotonic()
        while not self._batch_full():
            left = self.max_wait_s - (time.monotonic() - first_arrival)
            if left <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), timeout=left)
            except TimeoutError:
                break
        return self._take_round_robin(time.monotonic())

    def _take_round_robin(self, now: float) -> list[tuple[_Request, int]]:
        """One window per waiting request per turn until the batch is full (windows or tokens)."""
        batch: list[tuple[_Request, int]] = []
        tokens = 0
        while self._turns and len(batch) < self.max_batch_windows:
            request = self._turns[0]
            if request.future.done():
                self._unqueue(request)
                continue
            if now >= request.deadline:
                self._fail(request, DeadlineExceededError("deadline passed while queued"))
                continue
            size = len(request.jobs[request.dispatched].window)
            if batch and self.max_batch_tokens is not None and tokens + size > self.max_batch_tokens:
                break  # this request keeps its turn: it goes first in the next batch
            self._turns.popleft()
            batch.append((request, request.dispatched))
            request.dispatched += 1
            tokens += size
            self._queued_windows -= 1
            self._queued_tokens -= size
            if request.queued:
                self._turns.append(request)
        self._report_depth()
        return batch

    async def _run(self) -> None:
        while not self._closed:
            batch = await self._collect()
            if not batch:
                continue
            started = time.monotonic()
            self._in_flight = batch
            self._in_flight_tokens = sum(len(request.jobs[i].window) for request, i in batch)
            self._batch_started = started
            for request, _ in batch:
                if request.started is None:
                    request.started = started
            groups = plan_length_groups([len(request.jobs[i].window) for request, i in batch])
            self._batch_tokens_run = 0
            try:
                for group in groups:
                    await self._run_isolated([batch[g] for g in group])
            finally:
                # Cancelled (close) mid-batch: keep _in_flight so close() can fail those requests.
                if not self._closed:
                    self._in_flight = []
            elapsed = time.monotonic() - started
            if self._batch_tokens_run:
                self.cost.observe(self._batch_tokens_run, elapsed)
            if self._on_batch is not None:
                self._on_batch(BatchStats(len(batch), len(groups), elapsed))

    async def _run_isolated(self, items: list[tuple[_Request, int]]) -> None:
        """Run ``items`` as one forward; if it raises, split it in halves and retry each, down to single windows."""
        items = [item for item in items if not item[0].future.done()]
        if not items:
            return
        jobs = [request.jobs[i] for request, i in items]
        started = time.monotonic()
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_batch, jobs)
            if len(outputs) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(outputs)} predictions for {len(jobs)} windows")
        except Exception as exc:
            if len(items) > 1:
                log.warning("a batch of %d windows failed (%s); splitting it to find the window", len(items), exc)
                middle = len(items) // 2
                await self._run_isolated(items[:middle])
                await self._run_isolated(items[middle:])
                return
            request, index = items[0]
            log.error("the model failed on window %d of a request: %s", index, exc, exc_info=exc)
            self._fail(request, InferenceError(f"the model failed on this request ({type(exc).__name__})"))
            return
        elapsed = time.monotonic() - started
        self._batch_tokens_run += sum(len(job.window) for job in jobs)
        for request in {request for request, _ in items}:
            request.inference_s += elapsed
        for (request, index), output in zip(items, outputs, strict=True):
            if request.future.done():
                continue
            request.results[index] = output
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result([r for r in request.results if r is not None])
