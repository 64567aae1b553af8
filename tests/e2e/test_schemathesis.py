"""Schemathesis against the running service's own OpenAPI document.

The schemathesis CLI generates valid and invalid requests for every operation from ``/openapi.json`` and runs all
its checks (no 5xx, status codes, content types and bodies as documented, invalid data refused, valid data accepted,
authentication enforced, unsupported methods refused) plus ours: every error in the one JSON error body
(``tests/e2e/schemathesis_checks.py``). Its pytest plugin does not run under this pytest, hence the CLI. The number of
cases is bounded (``VQA_SCHEMATHESIS_EXAMPLES`` per operation, default 300) to keep the test command fast.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningService, start_service, stop_service

KEY = "schemathesis-key-0123456789abcdef"
EXAMPLES = int(os.environ.get("VQA_SCHEMATHESIS_EXAMPLES", "300"))
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


@pytest.fixture(scope="module")
def fuzzed(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    running = start_service(
        tiny_model_dir,
        tmp_path_factory.mktemp("schemathesis") / "service.log",
        VQA_API_KEYS=KEY,
        VQA_RATE_LIMIT="",  # the fuzzer sends far more than a client should; the limit has its own test
        VQA_MAX_BODY_BYTES="200000",
    )
    yield running
    stop_service(running)


def test_the_api_keeps_to_its_schema_and_errors_to_the_one_body(fuzzed: RunningService, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        f"{fuzzed.url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--header",
        f"X-API-Key: {KEY}",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        "--output-truncate",
        "true",
    ]
    environment = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_checks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    report = done.stdout + done.stderr
    assert done.returncode == 0, report[-6000:] + f"\n\nservice log:\n{fuzzed.log_tail()}"
    generated = re.search(r"(\d+) generated, (\d+) passed", report)
    assert generated and int(generated.group(1)) >= 100, report[-3000:]
    assert generated.group(1) == generated.group(2), "every generated case passed every check"
    print(f"schemathesis: {generated.group(0)} ({EXAMPLES} examples per operation and phase)")
