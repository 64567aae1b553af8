"""Back-pressure over real HTTP: 503 + Retry-After when the queue is full, 504 when the deadline passes."""

from __future__ import annotations

import asyncio

import httpx

from tests.e2e.conftest import RunningService

THREE_WINDOWS = " ".join(f"Sentence number {i} talks about savings rates and fees." for i in range(25))


def test_full_queue_answers_503_with_retry_after(slow_service: RunningService) -> None:
    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=slow_service.url, timeout=10) as client:
            body = {"question": "rate?", "contexts": [{"text": THREE_WINDOWS}]}
            first = asyncio.create_task(client.post("/answer", json=body))
            await asyncio.sleep(0.3)  # first request's windows now wait for the 1.5 s batch
            second = await client.post("/answer", json=body)
            return await first, second

    first, second = asyncio.run(scenario())
    assert second.status_code == 503, second.text
    assert int(second.headers["retry-after"]) >= 1
    assert second.json()["error"]["code"] == "queue_full"
    # the first request waited longer than its 0.7 s deadline for its batch
    assert first.status_code == 504, first.text
    assert first.json()["error"]["code"] == "deadline_exceeded"


def test_deadline_passing_in_queue_is_504(slow_service: RunningService) -> None:
    r = httpx.post(
        f"{slow_service.url}/answer", json={"question": "q?", "contexts": [{"text": "short one"}]}, timeout=10
    )
    assert r.status_code == 504
    assert "VQA_REQUEST_TIMEOUT_MS" in r.json()["error"]["message"]
