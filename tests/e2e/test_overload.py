"""Back-pressure over real HTTP: more work than fits the deadline is refused at once with 503 + Retry-After.

The old behaviour was to queue everything first in, first out and answer 504 after the deadline; the deadline is now
a backstop for when the admission estimate was wrong.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.config import DEFAULT_MODEL_PATH
from tests.e2e.conftest import RunningService, start_service, stop_service

Timed = tuple[httpx.Response, float]  # a response and the seconds it took
DEADLINE_S = 3.0
THREE_WINDOWS = " ".join(f"Sentence number {i} talks about savings rates and fees." for i in range(25))


def _queue_depth(service: RunningService) -> float:
    for line in httpx.get(f"{service.url}/metrics").text.splitlines():
        if line.startswith("vqa_queue_depth "):
            return float(line.split()[1])
    return 0.0


def test_full_queue_answers_503_with_retry_after(slow_service: RunningService) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_service.url, timeout=10) as client:
            body = {"question": "rate?", "contexts": [{"text": THREE_WINDOWS}]}
            first = asyncio.create_task(client.post("/answer", json=body))
            deadline = time.monotonic() + 5
            while _queue_depth(slow_service) < 3:  # first request's windows now wait for the 1.5 s batch
                assert time.monotonic() < deadline, "the first request never queued"
                await asyncio.sleep(0.02)
            second = await client.post("/answer", json=body)
            return await first, second

    first, second = asyncio.run(scenario())
    assert second.status_code == 503, second.text
    assert int(second.headers["retry-after"]) >= 1
    assert second.json()["error"]["code"] == "queue_full"
    # the batch waits 1.5 s to fill, past the first request's 0.7 s deadline: the backstop answers 504
    assert first.status_code == 504, first.text
    assert first.json()["error"]["code"] == "deadline_exceeded"


def test_deadline_passing_in_queue_is_504(slow_service: RunningService) -> None:
    # The only request this service sees: admitted (the tiny model is fast), its batch waits 1.5 s to fill, and its
    # 0.7 s deadline (a timer set when it was queued, so earlier than the batch's on any machine) answers first.
    r = httpx.post(
        f"{slow_service.url}/answer", json={"question": "q?", "contexts": [{"text": "short one"}]}, timeout=10
    )
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "deadline_exceeded"
    assert "VQA_REQUEST_TIMEOUT_MS" in r.json()["error"]["message"]


@pytest.fixture(scope="module")
def real_model_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The default checkpoint with a 3 s deadline: a burst of 48 requests is several times what it can answer."""
    assert (DEFAULT_MODEL_PATH / "config.json").exists(), f"the default checkpoint is missing at {DEFAULT_MODEL_PATH}"
    running = start_service(
        DEFAULT_MODEL_PATH,
        Path(tmp_path_factory.mktemp("overload")) / "service.log",
        VQA_REQUEST_TIMEOUT_MS=str(int(DEADLINE_S * 1000)),
        VQA_CPU_THREADS="2",
    )
    yield running
    stop_service(running)


def test_a_burst_beyond_capacity_gets_answers_or_an_immediate_503_never_a_504(
    real_model_service: RunningService,
) -> None:
    context = " ".join(f"Clause {i}: the fee for service {i} is {i * 5} pounds, charged monthly." for i in range(14))

    async def one(client: httpx.AsyncClient, i: int) -> Timed:
        body = {"question": f"What is the fee for service {i % 14}?", "contexts": [{"text": context}]}
        started = time.monotonic()
        r = await client.post("/answer", json=body)
        return r, time.monotonic() - started

    async def burst(size: int) -> list[Timed]:
        limits = httpx.Limits(max_connections=size, keepalive_expiry=2)
        async with httpx.AsyncClient(base_url=real_model_service.url, timeout=30, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(size)))

    # Bursts grow until a quarter (at least 12) is refused: the test overloads a fast machine as well as a slow one.
    results: list[Timed] = []
    for size in (16, 48, 144):
        last = asyncio.run(burst(size))
        results += last
        if sum(1 for r, _ in last if r.status_code == 503) >= max(12, size // 4):
            break
    statuses = [r.status_code for r, _ in results]
    assert set(statuses) <= {200, 503}, f"{statuses}\n{real_model_service.log_tail()}"
    refused = sorted(seconds for r, seconds in results if r.status_code == 503)
    assert 200 in statuses and len(refused) >= 12, statuses
    for r, _ in results:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "overloaded" and int(r.headers["retry-after"]) >= 1
    # Refused on arrival, not held until the deadline (a queue served first in, first out answers the excess 504
    # after it). In a burst a refusal also waits in the client and in the HTTP layer behind the rest of the burst
    # (48 requests parsed on a shared 2-core machine while the admitted ones run: 0.7-1.0 s here), so the bound is
    # against the deadline; the service's own time to 503 (target 100 ms) is bench/soak.py's (bench/RESULTS.md).
    assert statistics.median(refused) < DEADLINE_S / 2 and refused[-1] < DEADLINE_S, refused
