"""The service from an installed (non-editable) package, started in a folder that holds nothing of the repository,
with only VQA_PACK and VQA_MODEL_PATH set: no path may be derived from where the code was installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kg.embedded import free_port
from tests.conftest import PACK_DIR, REPO_ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --target SITE`` of a copy of the sources (what the Dockerfile copies)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    for package in ("app", "kg", "domain", "training"):
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    site = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--target", str(site)]
    done = subprocess.run([*command, "-q", str(source)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "domain" / "pack.py").is_file() and (site / "bin" / "vqa").is_file()
    assert not (site / "packs").exists() and not (site / "models").exists(), "data is not part of the package"
    return site


@pytest.fixture(scope="module")
def service(installed: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("data")
    shutil.copytree(PACK_DIR, data / "packs" / "retail-bank")
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # the working directory: no packs/, no models/ here
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(elsewhere),
        "PYTHONPATH": str(installed),
        "HF_HUB_OFFLINE": "1",
        "VQA_PACK": str(data / "packs" / "retail-bank"),
        "VQA_MODEL_PATH": str(tiny_model_dir),
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import app, domain; print(app.__file__); print(domain.__file__)"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
    )
    assert all(line.startswith(str(installed)) for line in probe.stdout.split()), probe.stdout + probe.stderr
    port = free_port()
    log = (elsewhere / "service.log").open("wb")
    process = subprocess.Popen(
        [str(installed / "bin" / "vqa"), "serve", "--port", str(port)], env=env, cwd=elsewhere, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (elsewhere / "service.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "not ready within 90 s"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_installed_service_answers_with_contexts_and_from_the_packs_corpus(service: str) -> None:
    with_context = httpx.post(
        f"{service}/answer",
        json={"question": "How much is a new card?", "contexts": [{"text": "A new card costs £5."}], "min_score": 0},
        timeout=30,
    )
    assert with_context.status_code == 200, with_context.text
    assert with_context.json()["answers"] and with_context.json()["rules_version"] != "none"
    from_corpus = httpx.post(
        f"{service}/answer", json={"question": "How long do I have to dispute a card payment?", "min_score": 0}
    )
    assert from_corpus.status_code == 200, from_corpus.text
    assert from_corpus.json()["retrieved"], "passages come from the pack VQA_PACK names"
