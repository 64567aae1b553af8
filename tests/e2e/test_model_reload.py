"""Zero-downtime reload with the real model: 16 clients keep asking while the service swaps versions."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from app.cli import main
from app.qa.card import ModelCard
from app.qa.registry import ModelRegistry
from tests.conftest import DEFAULT_MODEL_DIR as DEFAULT_MODEL_PATH
from tests.e2e.conftest import RunningService, start_service, stop_service

ADMIN_KEY = "admin-key-0123456789abcdef"
CLIENTS = 16
CONTEXT = "You can dispute a card payment within 120 days of the transaction date. Refunds take 5 working days."


class Traffic:
    """CLIENTS threads asking questions in a loop; every response is kept with the time its request was sent."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.results: list[tuple[float, int, str | None, str]] = []  # (sent at, status, version, body on error)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, args=(i,)) for i in range(CLIENTS)]

    def _client(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post("/answer", json={"question": f"How long to dispute ({i})?",
                                                     "contexts": [{"text": CONTEXT}]})  # fmt: skip
                    row = (sent, r.status_code,
                           r.json()["model"]["version"] if r.status_code == 200 else None, r.text[:300])  # fmt: skip
                except httpx.HTTPError as exc:  # a dropped connection is an error too
                    row = (sent, 0, None, repr(exc))
                with self.lock:
                    self.results.append(row)

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 120
        while len(self.results) < n:
            assert time.monotonic() < deadline, f"only {len(self.results)} responses"
            time.sleep(0.05)


def served_version(service: RunningService) -> str:
    r = httpx.get(f"{service.url}/admin/model", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return str(r.json()["model"]["version"])


def test_reload_under_16_clients_switches_version_with_zero_errors(tmp_path: Path) -> None:
    registry = tmp_path / "models" / "registry.json"
    old = ModelCard.load(DEFAULT_MODEL_PATH).version
    candidate = tmp_path / "candidate"
    shutil.copytree(DEFAULT_MODEL_PATH, candidate)
    card = ModelCard.load(candidate)
    card.version = "reload-b"
    card.save(candidate)
    with ModelRegistry.edit(registry) as reg:
        reg.set_serving(reg.register(DEFAULT_MODEL_PATH).id, "register")
    service = start_service(DEFAULT_MODEL_PATH, tmp_path / "service.log", VQA_MODEL_REGISTRY=str(registry),
                            VQA_ADMIN_KEYS=ADMIN_KEY, VQA_CPU_THREADS="2")  # fmt: skip
    try:
        assert served_version(service) == old
        wrong = httpx.post(f"{service.url}/admin/reload", headers={"Authorization": "Bearer not-the-admin-key"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        with Traffic(service.url) as traffic:
            traffic.wait_for(40)
            with ModelRegistry.edit(registry) as reg:  # what `vqa promote` does after its gates pass
                reg.set_serving(reg.register(candidate).id, "promote")
            reload = httpx.post(f"{service.url}/admin/reload", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                timeout=120)  # fmt: skip
            reloaded_at = time.monotonic()
            assert reload.status_code == 200, reload.text
            assert reload.json()["model"]["version"] == "reload-b" and reload.json()["previous"]["version"] == old
            assert reload.json()["drained"] is True
            traffic.wait_for(len(traffic.results) + 40)

            # vqa rollback, then SIGHUP: the service goes back to the previous version, still without errors
            assert main(["rollback", "--registry", str(registry)]) == 0
            hup_at = time.monotonic()
            service.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while served_version(service) != old:
                assert time.monotonic() < deadline, service.log_tail()
                time.sleep(0.1)
            rolled_back_at = time.monotonic()
            traffic.wait_for(len(traffic.results) + 40)
        results = traffic.results
        errors = [r for r in results if r[1] != 200]
        assert errors == [], f"{len(errors)} of {len(results)} requests failed, e.g. {errors[:3]}"
        versions = [r[2] for r in results]
        assert versions.count(old) > 0 and versions.count("reload-b") > 0
        # Requests sent after the swap are answered by the new model (the old one only finishes what it had)
        after_reload = [r[2] for r in results if reloaded_at < r[0] < hup_at]
        assert after_reload and set(after_reload) == {"reload-b"}
        after_rollback = [r[2] for r in results if r[0] > rolled_back_at]
        assert after_rollback and set(after_rollback) == {old}
        families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text)}
        assert [s.labels["version"] for s in families["vqa_model_info"].samples] == [old], "vqa_model_info names it"
        reloads = {s.labels["outcome"]: s.value for s in families["vqa_model_reloads"].samples
                   if s.name.endswith("_total")}  # fmt: skip
        assert reloads["ok"] == 2
    finally:
        stop_service(service)
