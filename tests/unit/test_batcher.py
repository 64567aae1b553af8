"""WindowBatcher and length grouping with a stand-in model function (no weights)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Sequence

import pytest

from app.qa import batcher as batcher_module
from app.qa.batcher import (
    BatcherClosedError,
    BatchResult,
    DeadlineExceededError,
    InferenceError,
    OverloadedError,
    QueueFullError,
    TokenCost,
    WindowBatcher,
    estimate_size,
)
from app.qa.reader import WindowJob, WindowPrediction
from app.qa.windows import Window, plan_length_groups


def _job(tag: int, length: int = 10) -> WindowJob:
    window = Window(
        input_ids=[tag] * length,
        token_type_ids=None,
        offsets=[(0, 0)] * length,
        context_index=0,
        context_start=1,
        context_end=length,
    )
    return WindowJob(window)


class EchoModel:
    """Returns each window's tag as its score; records batch sizes; optionally slow or blocked."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        self.gate.wait(5)
        time.sleep(self.delay_s)
        self.batches.append(len(jobs))
        return [WindowPrediction([(float(j.window.input_ids[0]), 1, 1)], 0.0) for j in jobs]


def test_length_groups_keep_similar_lengths_together() -> None:
    groups = plan_length_groups([384, 40, 42, 380, 41, 200])
    as_lengths = [sorted([384, 40, 42, 380, 41, 200][i] for i in g) for g in groups]
    assert as_lengths == [[40, 41, 42], [200], [380, 384]]
    assert sorted(i for g in groups for i in g) == list(range(6))


async def _run(batcher: WindowBatcher, coro):  # type: ignore[no-untyped-def]
    batcher.start()
    try:
        return await coro
    finally:
        await batcher.close()


def test_outputs_stay_one_to_one_with_inputs_across_concurrent_requests() -> None:
    model = EchoModel()
    batcher = WindowBatcher(model, max_batch_windows=8, max_wait_ms=20)

    async def scenario():  # type: ignore[no-untyped-def]
        requests = [[_job(100 * r + i) for i in range(r + 1)] for r in range(6)]
        results = await asyncio.gather(*(batcher.submit(jobs, timeout_s=5) for jobs in requests))
        return requests, results

    requests, results = asyncio.run(_run(batcher, scenario()))
    for jobs, result in zip(requests, results, strict=True):
        assert [p.candidates[0][0] for p in result.predictions] == [float(j.window.input_ids[0]) for j in jobs]
    assert max(model.batches) > 1, "concurrent requests share batches"
    assert all(b <= 8 for b in model.batches)


def test_full_queue_is_refused_at_once_with_retry_after() -> None:
    model = EchoModel()
    model.gate.clear()  # the first batch blocks, so the queue fills up behind it
    batcher = WindowBatcher(model, max_batch_windows=1, max_wait_ms=0, max_queue_windows=3)

    async def scenario() -> QueueFullError:
        first = asyncio.create_task(batcher.submit([_job(1)], timeout_s=5))
        await asyncio.sleep(0.05)  # first window now runs (blocked in the model)
        queued = asyncio.create_task(batcher.submit([_job(2), _job(3)], timeout_s=5))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError) as caught:
            await batcher.submit([_job(4), _job(5)], timeout_s=5)
        model.gate.set()
        await asyncio.gather(first, queued)
        return caught.value

    error = asyncio.run(_run(batcher, scenario()))
    assert error.retry_after_s >= 1
    assert "capacity 3" in str(error)


def test_deadline_passing_in_the_queue_raises_and_costs_no_model_time() -> None:
    model = EchoModel()
    batcher = WindowBatcher(model, max_batch_windows=64, max_wait_ms=500)

    async def scenario() -> None:
        with pytest.raises(DeadlineExceededError):
            await batcher.submit([_job(1), _job(2)], timeout_s=0.05)
        assert batcher.queue_depth == 0

    asyncio.run(_run(batcher, scenario()))
    assert model.batches == [], "abandoned windows are dropped, not run"


def test_closed_batcher_refuses_work_and_fails_what_waits() -> None:
    model = EchoModel()
    model.gate.clear()
    batcher = WindowBatcher(model, max_batch_windows=1, max_wait_ms=0)

    async def scenario() -> None:
        batcher.start()
        running = asyncio.create_task(batcher.submit([_job(1)], timeout_s=5))
        waiting = asyncio.create_task(batcher.submit([_job(2)], timeout_s=5))
        await asyncio.sleep(0.05)
        closing = asyncio.create_task(batcher.close())
        await asyncio.sleep(0.01)
        model.gate.set()
        await closing
        for task in (running, waiting):  # the one in the model and the one still queued
            with pytest.raises(BatcherClosedError):
                await task
        with pytest.raises(BatcherClosedError):
            await batcher.submit([_job(3)], timeout_s=1)

    asyncio.run(scenario())


def test_a_failing_forward_fails_only_its_request_and_the_next_one_runs() -> None:
    calls = {"n": 0}

    def flaky(jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return [WindowPrediction([], 0.0) for _ in jobs]

    batcher = WindowBatcher(flaky, max_batch_windows=4, max_wait_ms=0)

    async def scenario() -> None:
        with pytest.raises(InferenceError, match="RuntimeError"):
            await batcher.submit([_job(1)], timeout_s=2)
        ok = await batcher.submit([_job(2)], timeout_s=2)
        assert len(ok.predictions) == 1

    asyncio.run(_run(batcher, scenario()))


POISON = 666


class PoisonedModel(EchoModel):
    """Raises on any batch that holds a window tagged POISON, like a forward that crashes on one bad input."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[int]] = []

    def __call__(self, jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        tags = [j.window.input_ids[0] for j in jobs]
        self.calls.append(tags)
        if POISON in tags:
            raise RuntimeError("index out of range in self (simulated)")
        return super().__call__(jobs)


def test_a_poisoned_window_in_the_middle_of_a_batch_fails_only_its_request() -> None:
    model = PoisonedModel()
    batcher = WindowBatcher(model, max_batch_windows=16, max_wait_ms=100)
    requests = [[_job(10 + r), _job(20 + r)] for r in range(5)]
    requests[2] = [_job(12), _job(POISON)]  # the middle request carries the bad window

    async def scenario() -> list[BatchResult | BaseException]:
        return await asyncio.gather(*(batcher.submit(jobs, timeout_s=5) for jobs in requests), return_exceptions=True)

    results = asyncio.run(_run(batcher, scenario()))
    assert sorted(model.calls[0]) == sorted(j.window.input_ids[0] for jobs in requests for j in jobs), "one batch"
    assert isinstance(results[2], InferenceError)
    for r, result in enumerate(results):
        if r == 2:
            continue
        assert isinstance(result, BatchResult), result
        assert [p.candidates[0][0] for p in result.predictions] == [10.0 + r, 20.0 + r]
    assert len(model.calls) <= 1 + 2 * 4, "bisection, not one forward per window and retry"


class TimedModel(EchoModel):
    """Takes ``seconds_per_token`` per token of the batch and records the tags of every batch it ran."""

    def __init__(self, seconds_per_token: float) -> None:
        super().__init__()
        self.seconds_per_token = seconds_per_token
        self.runs: list[list[int]] = []

    def __call__(self, jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        self.runs.append([j.window.input_ids[0] for j in jobs])
        time.sleep(self.seconds_per_token * sum(len(j.window) for j in jobs))
        return super().__call__(jobs)


def test_a_short_request_does_not_wait_behind_a_long_one() -> None:
    model = TimedModel(seconds_per_token=1e-4)  # 10 ms per 100-token window
    batcher = WindowBatcher(model, max_batch_windows=4, max_wait_ms=0, seconds_per_token=1e-4)
    long_request = [_job(1000 + i, length=100) for i in range(30)]

    async def scenario() -> tuple[float, float]:
        async def timed(jobs: list[WindowJob]) -> float:
            await batcher.submit(jobs, timeout_s=10)
            return time.monotonic()

        long_task = asyncio.create_task(timed(long_request))
        await asyncio.sleep(0.015)  # the long request's first batch is running
        short_done = await timed([_job(7, length=100)])
        return short_done, await long_task

    short_done, long_done = asyncio.run(_run(batcher, scenario()))
    assert short_done < long_done
    short_batch = next(i for i, tags in enumerate(model.runs) if 7 in tags)
    assert short_batch <= 1, f"the short window ran in batch {short_batch} of {len(model.runs)}, behind the long one"


def test_batches_stay_within_the_token_budget() -> None:
    model = TimedModel(seconds_per_token=0)
    batcher = WindowBatcher(model, max_batch_windows=32, max_wait_ms=20, max_batch_tokens=250)

    async def scenario() -> None:
        await asyncio.gather(
            batcher.submit([_job(i, length=100) for i in range(7)], timeout_s=5),
            batcher.submit([_job(50 + i, length=40) for i in range(5)], timeout_s=5),
        )

    asyncio.run(_run(batcher, scenario()))
    assert sum(len(tags) for tags in model.runs) == 12
    batches = model.batches
    assert max(batches) <= 4 and len(batches) >= 4


def test_a_request_that_cannot_meet_its_deadline_is_refused_at_once_with_an_honest_retry_after() -> None:
    model = TimedModel(seconds_per_token=1e-3)  # 100 ms per 100-token window
    batcher = WindowBatcher(model, max_batch_windows=2, max_wait_ms=0, seconds_per_token=1e-3)

    async def scenario() -> tuple[float, OverloadedError, float]:
        backlog = asyncio.create_task(batcher.submit([_job(i, length=100) for i in range(12)], timeout_s=3))
        await asyncio.sleep(0.05)
        asked = time.monotonic()
        with pytest.raises(OverloadedError) as refused:  # 12 windows ahead (1.2 s) + 12 own: not within 0.8 * 2 s
            await batcher.submit([_job(100 + i, length=100) for i in range(12)], timeout_s=2)
        refused_after = time.monotonic() - asked
        await asyncio.sleep(refused.value.retry_after_s)
        again = time.monotonic()
        await batcher.submit([_job(100 + i, length=100) for i in range(12)], timeout_s=2)  # admitted and served now
        await backlog
        return refused_after, refused.value, time.monotonic() - again

    refused_after, error, served_in = asyncio.run(_run(batcher, scenario()))
    assert refused_after < 0.1, "refused at once, not after its deadline"
    assert error.code == "overloaded" and error.retry_after_s == 1
    assert served_in < 2


def test_a_newcomer_may_not_push_an_admitted_request_past_its_plan() -> None:
    model = TimedModel(seconds_per_token=1e-3)
    batcher = WindowBatcher(model, max_batch_windows=1, max_wait_ms=0, seconds_per_token=1e-3)

    async def scenario() -> BatchResult:
        # 7 windows of 90 ms, planned within 0.8 of its 1 s deadline: one more window ahead of its last fits, three
        # do not
        admitted = asyncio.create_task(batcher.submit([_job(i, length=90) for i in range(7)], timeout_s=1))
        await asyncio.sleep(0.01)
        with pytest.raises(OverloadedError):
            await batcher.submit([_job(100 + i, length=90) for i in range(3)], timeout_s=100)
        await batcher.submit([_job(200, length=90)], timeout_s=100)
        return await admitted

    result = asyncio.run(_run(batcher, scenario()))
    assert len(result.predictions) == 7


def test_a_long_request_is_refused_when_the_load_still_arriving_would_stretch_it_past_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batcher_module, "ARRIVAL_HORIZON_S", 1.0)
    model = TimedModel(seconds_per_token=1e-4)  # 10 ms per 100-token window
    batcher = WindowBatcher(model, max_batch_windows=4, max_wait_ms=0, seconds_per_token=1e-4)

    async def scenario() -> None:
        stream = []
        for i in range(60):  # 30 ms of work every 50 ms for 3 s: the model is 60% busy with arrivals
            stream.append(asyncio.create_task(batcher.submit([_job(i, length=100) for _ in range(3)], timeout_s=5)))
            await asyncio.sleep(0.05)
        assert 0.4 < batcher.arrival_load() < 0.8
        # 40 windows are 0.4 s of work alone, but other requests keep taking their turns: not within 0.8 * 1 s
        with pytest.raises(OverloadedError):
            await batcher.submit([_job(1000 + i, length=100) for i in range(40)], timeout_s=1)
        await batcher.submit([_job(2000, length=100)], timeout_s=1)  # a short one still gets in
        await asyncio.gather(*stream)

    asyncio.run(_run(batcher, scenario()))


def test_under_overload_requests_are_answered_in_time_or_refused_never_timed_out() -> None:
    model = TimedModel(seconds_per_token=2e-4)  # 20 ms per window: about 50 windows/s
    batcher = WindowBatcher(model, max_batch_windows=4, max_wait_ms=2, seconds_per_token=2e-4)

    async def client(tag: int) -> tuple[str, float]:
        asked = time.monotonic()
        try:
            await batcher.submit([_job(tag + i, length=100) for i in range(1 + tag % 5)], timeout_s=0.5)
            return "ok", time.monotonic() - asked
        except OverloadedError:
            return "refused", time.monotonic() - asked
        except DeadlineExceededError:
            return "timed out", time.monotonic() - asked

    async def scenario() -> list[tuple[str, float]]:
        tasks = []
        for tag in range(150):  # 150 requests, 3 windows each on average, in 1.5 s: three times what it can run
            tasks.append(asyncio.create_task(client(tag * 10)))
            await asyncio.sleep(0.01)
        return await asyncio.gather(*tasks)

    outcomes = asyncio.run(_run(batcher, scenario()))
    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("timed out") == 0
    assert kinds.count("ok") > 20 and kinds.count("refused") > 20
    assert max(t for kind, t in outcomes if kind == "refused") < 0.1
    assert max(t for kind, t in outcomes if kind == "ok") < 0.5


def test_the_cost_estimate_follows_the_measured_model() -> None:
    model = TimedModel(seconds_per_token=2e-4)
    batcher = WindowBatcher(model, max_batch_windows=16, max_wait_ms=0, seconds_per_token=2e-3)  # 10x too slow

    async def scenario() -> None:
        for i in range(20):  # 20,000 tokens
            await batcher.submit([_job(i, length=100) for _ in range(10)], timeout_s=30)

    asyncio.run(_run(batcher, scenario()))
    assert 1.5e-4 < batcher.seconds_per_token < 4e-4


def test_requests_still_being_tokenised_hold_their_place_in_the_plan() -> None:
    batcher = WindowBatcher(EchoModel(), max_batch_windows=4, max_wait_ms=0, seconds_per_token=1e-3)

    async def scenario() -> None:
        # each 1 window of 90 tokens (0.09 s): eight fit in 0.8 * 1 s, the ninth does not
        held = [batcher.reserve(timeout_s=1, windows=1, tokens=90) for _ in range(8)]
        with pytest.raises(OverloadedError):
            batcher.reserve(timeout_s=1, windows=1, tokens=90)
        batcher.release(held.pop())
        batcher.reserve(timeout_s=1, windows=1, tokens=90)
        result = await batcher.submit([_job(1, length=90)], timeout_s=1, reservation=held[0])
        assert len(result.predictions) == 1

    asyncio.run(_run(batcher, scenario()))


def test_the_size_estimate_is_close_to_the_real_windows(tokenizer) -> None:  # type: ignore[no-untyped-def]
    from app.qa.windows import WindowConfig, encode_windows

    config = WindowConfig(max_seq_len=384, stride=128, max_question_tokens=64)
    question = "How long do I have to dispute a card payment?"
    for sentences in (3, 40, 300):
        text = " ".join(f"Clause {i}: the fee for service {i} is {i * 5} pounds." for i in range(sentences))
        windows = encode_windows(tokenizer, question, [text], config)
        guess_windows, guess_tokens = estimate_size(len(question), [len(text)], config)
        real_tokens = sum(len(w) for w in windows)
        assert 0.5 * len(windows) <= guess_windows <= 2 * len(windows)
        assert 0.5 * real_tokens <= guess_tokens <= 2 * real_tokens


def test_a_slow_start_up_measurement_is_forgotten_once_short_batches_run() -> None:
    cost = TokenCost(seconds_per_token=1.8e-3)  # measured while the graph child was booting
    rng = random.Random(0)
    for _ in range(150):  # 20,000 tokens of short windows: nothing ever measures a full batch again
        tokens = rng.choice([90, 120, 190])
        cost.observe(tokens, 5e-4 * tokens)
    assert cost.per_token_s == pytest.approx(5e-4, rel=0.1)
