"""A real Prometheus (Debian's binary) scrapes the running service; promtool lints the live exposition."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from kg.embedded import free_port
from tests.e2e.conftest import API_KEY, RunningService


def test_promtool_check_metrics_accepts_a_live_scrape(service: RunningService) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: scripts/test.sh installs Debian's prometheus package"
    httpx.post(
        f"{service.url}/answer",
        json={"question": "q?", "contexts": [{"text": "some text"}]},
        headers={"X-API-Key": API_KEY},
    )
    scrape = httpx.get(f"{service.url}/metrics").text
    done = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def prometheus(service: RunningService, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: scripts/test.sh installs Debian's prometheus package"
    target = service.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [{"job_name": "vqa", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


def _own_counter(service: RunningService) -> float:
    for line in httpx.get(f"{service.url}/metrics").text.splitlines():
        if line.startswith('vqa_requests_total{route="/answer",status="200"}'):
            return float(line.split()[-1])
    return 0.0


def test_prometheus_reads_back_the_request_counter(service: RunningService, prometheus: str) -> None:
    for _ in range(5):
        r = httpx.post(
            f"{service.url}/answer",
            json={"question": "q?", "contexts": [{"text": "text"}]},
            headers={"X-API-Key": API_KEY},
        )
        assert r.status_code == 200
    expected = _own_counter(service)
    assert expected >= 5
    query = 'vqa_requests_total{job="vqa",route="/answer",status="200"}'
    deadline = time.monotonic() + 30
    seen = None
    while time.monotonic() < deadline:
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()["data"]["result"]
        seen = float(result[0]["value"][1]) if result else None
        if seen == expected:
            break
        time.sleep(0.5)
    assert seen == expected, f"Prometheus saw {seen}, the service counted {expected}"
    up = httpx.get(f"{prometheus}/api/v1/query", params={"query": 'up{job="vqa"}'}).json()["data"]["result"]
    assert up[0]["value"][1] == "1"
