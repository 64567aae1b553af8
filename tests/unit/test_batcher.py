"""WindowBatcher and length grouping with a stand-in model function (no weights)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from app.qa.batcher import (
    BatcherClosedError,
    DeadlineExceededError,
    QueueFullError,
    WindowBatcher,
    plan_length_groups,
)
from app.qa.reader import WindowJob, WindowPrediction
from app.qa.windows import Window


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


def test_a_failing_forward_fails_only_its_batch() -> None:
    calls = {"n": 0}

    def flaky(jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return [WindowPrediction([], 0.0) for _ in jobs]

    batcher = WindowBatcher(flaky, max_batch_windows=4, max_wait_ms=0)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="out of memory"):
            await batcher.submit([_job(1)], timeout_s=2)
        ok = await batcher.submit([_job(2)], timeout_s=2)
        assert len(ok.predictions) == 1

    asyncio.run(_run(batcher, scenario()))
