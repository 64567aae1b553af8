"""The images, run for real on the engine that ``scripts/container_test.sh`` starts and builds them on.

The script sets ``VQA_CT_*`` (images, artifacts folder, browser) and ``DOCKER_HOST`` / ``DOCKER_CONFIG`` (its own
daemon, the Compose v2 plugin). Without them these tests are skipped with that one hint; under the script a missing
setting is a failure, not a skip. Every container runs on the host network (the engine has no bridge) and listens
on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO_ROOT

REQUIRED = (
    "VQA_CT_DOCKER",
    "VQA_CT_API_IMAGE",
    "VQA_CT_GRAPH_IMAGE",
    "VQA_CT_PROMETHEUS_IMAGE",
    "VQA_CT_POSTGRES_IMAGE",
    "VQA_CT_ARTIFACTS",
)


@dataclass(frozen=True)
class Engine:
    """The docker CLI pointed at the script's daemon, plus what the script built."""

    docker: str
    api_image: str
    graph_image: str
    prometheus_image: str
    postgres_image: str
    artifacts: Path
    chromium: str | None

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.docker, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def record(self, key: str, value: float) -> None:
        """Add one measurement to ARTIFACTS/timings.txt, next to the script's build times (bench/RESULTS.md)."""
        with (self.artifacts / "timings.txt").open("a") as out:
            out.write(f"{key} {value}\n")


@pytest.fixture(scope="session")
def engine() -> Engine:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if missing:
        if os.environ.get("VQA_CT_REQUIRED") == "1":
            pytest.fail(f"scripts/container_test.sh did not set {missing}")
        pytest.skip("needs the engine and images of scripts/container_test.sh: run bash scripts/container_test.sh")
    artifacts = Path(os.environ["VQA_CT_ARTIFACTS"])
    artifacts.mkdir(parents=True, exist_ok=True)
    return Engine(
        docker=os.environ["VQA_CT_DOCKER"],
        api_image=os.environ["VQA_CT_API_IMAGE"],
        graph_image=os.environ["VQA_CT_GRAPH_IMAGE"],
        prometheus_image=os.environ["VQA_CT_PROMETHEUS_IMAGE"],
        postgres_image=os.environ["VQA_CT_POSTGRES_IMAGE"],
        artifacts=artifacts,
        chromium=os.environ.get("VQA_CT_CHROMIUM") or None,
    )


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, on_timeout: Callable[[], str]) -> float:
    """Seconds until ``check()`` held; fails with ``on_timeout()`` (e.g. the container's log) after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{on_timeout()}")
        time.sleep(0.5)
    return time.monotonic() - started


def http_status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None
