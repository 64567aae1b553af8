"""A request whose window makes the model fail fails alone over real HTTP; the requests batched with it get answers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from app.qa.reader import Reader, WindowJob, WindowPrediction
from kg.embedded import free_port
from tests.e2e.conftest import wait_until_ready

POISON_WORD = "zebra"  # one WordPiece token in the model's vocabulary


class PoisonedReader(Reader):
    """A real reader whose forward raises on any batch holding the poison token, as a model can on one bad input."""

    batches: list[int] = []

    def forward(self, jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        self.batches.append(len(jobs))
        poison = self.tokenizer.convert_tokens_to_ids(POISON_WORD)
        if any(poison in job.window.input_ids for job in jobs):
            raise RuntimeError("index out of range in self (simulated)")
        return super().forward(jobs)


@pytest.fixture
def poisoned_server(tiny_model_dir: Path) -> Iterator[str]:
    port = free_port()
    PoisonedReader.batches = []
    # 300 ms to fill a batch: the concurrent requests below share one
    settings = Settings(model_path=tiny_model_dir, port=port, max_wait_ms=300, cpu_threads=1)
    app = create_app(settings, reader_factory=lambda st: PoisonedReader(st.model_path, device="cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url)
    yield url
    server.should_exit = True
    thread.join(30)


def test_a_poisoned_request_fails_alone_and_its_batch_neighbours_are_answered(poisoned_server: str) -> None:
    texts = [f"Request {i} says the card replacement fee is {i} pounds." for i in range(7)]
    texts[3] = f"Request 3 mentions a {POISON_WORD} and the fee is 3 pounds."

    bodies = [{"question": "What is the fee?", "contexts": [{"text": t}], "min_score": 0} for t in texts]

    async def scenario() -> tuple[list[httpx.Response], httpx.Response]:
        # The poisoned request on a connection of its own, which it then uses again
        one_line = httpx.Limits(max_connections=1)
        async with (
            httpx.AsyncClient(base_url=poisoned_server, timeout=30) as client,
            httpx.AsyncClient(base_url=poisoned_server, timeout=30, limits=one_line) as poisoned_client,
        ):
            sent = [poisoned_client.post("/answer", json=b) if i == 3 else client.post("/answer", json=b)
                    for i, b in enumerate(bodies)]  # fmt: skip
            responses = await asyncio.gather(*sent)
            return responses, await poisoned_client.post("/answer", json=bodies[0])

    before = len(PoisonedReader.batches)
    responses, next_on_the_same_connection = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200, 200, 200, 500, 200, 200, 200]
    for i, r in enumerate(responses):
        if i != 3:
            answer = r.json()["answers"][0]
            assert texts[i][answer["start"] : answer["end"]] == answer["text"]
    error = responses[3].json()["error"]
    assert error["code"] == "inference_failed" and error["request_id"] in error["message"]
    assert PoisonedReader.batches[before] == len(texts), "all seven windows went to the model in one batch"
    # A handled failure: the connection stays open (no Connection: close) and serves the client's next request
    assert "close" not in responses[3].headers.get("connection", "")
    assert next_on_the_same_connection.status_code == 200, next_on_the_same_connection.text
