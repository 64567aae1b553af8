"""What an operator sees of the running service: machine metrics, no `_created` noise, JSON logs with request ids."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RunningService, start_service, stop_service


@pytest.fixture(scope="module")
def observed(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    running = start_service(tiny_model_dir, tmp_path_factory.mktemp("observed") / "service.log", VQA_LOG_LEVEL="info")
    yield running
    stop_service(running)


def _families(service: RunningService) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    text = httpx.get(f"{service.url}/metrics").text
    return {
        family.name: [(s.name, s.labels, s.value) for s in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_process_cpu_and_memory_are_exported(observed: RunningService) -> None:
    httpx.post(f"{observed.url}/answer", json={"question": "q?", "contexts": [{"text": "some text"}]}, timeout=30)
    families = _families(observed)
    rss = families["vqa_process_resident_memory_bytes"][0][2]
    assert 50e6 < rss < 8e9, "the service's resident memory, in bytes"
    assert families["vqa_process_cpu_seconds"][0][2] > 0
    assert families["vqa_process_open_fds"][0][2] > 0
    assert not any(name.startswith("vqa_gpu_") for name in families), "no GPU metrics on a CPU-only service"


def test_no_created_series(observed: RunningService) -> None:
    samples = [name for family in _families(observed).values() for name, _, _ in family]
    assert any(name == "vqa_requests_total" for name in samples)
    assert not [name for name in samples if name.endswith("_created")]


def test_log_lines_are_json_and_name_the_request(observed: RunningService) -> None:
    r = httpx.post(
        f"{observed.url}/answer",
        json={"question": "q?", "contexts": [{"text": "some text"}]},
        headers={"X-Request-ID": "observed-request-1"},
        timeout=30,
    )
    assert r.status_code == 200
    lines = [line for line in observed.log_path.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"a log line that is not JSON: {line!r}") from None
    assert all({"time", "level", "logger", "message", "request_id"} <= set(record) for record in records)
    mine = [record for record in records if record["request_id"] == "observed-request-1"]
    assert any("POST /answer" in record["message"] for record in mine), "uvicorn's access line names the request"
    assert any(record["message"].startswith("ready:") and record["request_id"] is None for record in records)
