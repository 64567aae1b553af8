"""Start the real service (``python -m app.cli serve``) on a free port for the e2e tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from kg.embedded import free_port

API_KEY = "e2e-key-0123456789abcdef"


@dataclass
class RunningService:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


def start_service(model_dir: Path, log_path: Path, **env: str) -> RunningService:
    port = free_port()
    environment = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VQA_MODEL_PATH": str(model_dir),
        "VQA_PORT": str(port),
        "VQA_CPU_THREADS": "1",
        "VQA_LOG_LEVEL": "warning",
        **env,
    }
    log = log_path.open("wb")
    process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=environment, stdout=log, stderr=log)
    service = RunningService(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode}:\n{service.log_tail()}")
        try:
            if httpx.get(f"{service.url}/readyz", timeout=1).status_code == 200:
                return service
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"service not ready within 90 s:\n{service.log_tail()}")


def wait_until_ready(url: str, timeout_s: float = 60) -> None:
    """Until an in-process server's /readyz answers 200 (model loaded and warmed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready within {timeout_s:.0f} s")


def wait_for_graph(service: RunningService, timeout_s: float = 60) -> None:
    """Until /readyz reports the graph ok (the embedded server starts after the HTTP port opens)."""
    deadline = time.monotonic() + timeout_s
    while httpx.get(f"{service.url}/readyz").json().get("graph") != "ok":
        assert time.monotonic() < deadline, f"graph not ok within {timeout_s:.0f} s:\n{service.log_tail()}"
        time.sleep(0.2)


def stop_service(service: RunningService) -> None:
    service.process.terminate()
    try:
        service.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        service.process.kill()


@pytest.fixture(scope="session")
def service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The normal service, with API keys on and a small body limit to test 413."""
    running = start_service(
        tiny_model_dir,
        tmp_path_factory.mktemp("svc") / "service.log",
        VQA_API_KEYS=f"{API_KEY},second-key-0123456789",
        VQA_MAX_BODY_BYTES="150000",
    )
    yield running
    stop_service(running)


@pytest.fixture
def slow_service(tiny_model_dir: Path, tmp_path: Path) -> Iterator[RunningService]:
    """A service that waits 1.5 s to fill each batch, queues at most 4 windows and gives up after 0.7 s.

    A fresh one for every test: a batch still filling for another test's request would run this test's request as
    soon as that batch's 1.5 s are up, which may be within this request's deadline.
    """
    running = start_service(
        tiny_model_dir,
        tmp_path / "service.log",
        VQA_MAX_WAIT_MS="1500",
        VQA_MAX_BATCH_WINDOWS="64",
        VQA_MAX_QUEUE_WINDOWS="4",
        VQA_REQUEST_TIMEOUT_MS="700",
    )
    yield running
    stop_service(running)


@pytest.fixture
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEY}"}
