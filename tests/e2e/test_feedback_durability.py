"""Acknowledged feedback survives kill -9 of the service, on SQLite (the default) and on a real PostgreSQL."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.qa.card import ModelCard
from tests.conftest import DEFAULT_MODEL_DIR as DEFAULT_MODEL_PATH
from tests.e2e.conftest import RunningService, start_service, stop_service
from tests.postgres_server import PostgresServer

CONTEXTS = [
    "You can dispute a card payment within 120 days of the transaction date.",
    "The daily cash withdrawal limit is 500 GBP.",
    "A replacement card costs 5 GBP and arrives within 3 working days.",
]
VERDICTS = ["correct", "incorrect", "partially_correct"]


def answer_and_judge(service: RunningService, n: int) -> list[dict[str, object]]:
    """n answers, each judged at once; returns the acknowledged feedback bodies."""
    acknowledged = []
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for i in range(n):
            context = CONTEXTS[i % len(CONTEXTS)]
            r = client.post("/answer", json={"question": f"What does this say ({i})?", "contexts": [{"text": context}]})
            assert r.status_code == 200, r.text
            verdict = {"request_id": r.json()["request_id"], "verdict": VERDICTS[i % 3], "rating": i % 5 + 1}
            f = client.post("/feedback", json=verdict)
            assert f.status_code == 201, f.text
            acknowledged.append(verdict)
    return acknowledged


def kill_9(service: RunningService) -> None:
    service.process.send_signal(signal.SIGKILL)
    service.process.wait(timeout=20)
    assert service.process.returncode == -signal.SIGKILL


def assert_all_there(service: RunningService, acknowledged: list[dict[str, object]]) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for verdict in acknowledged:
            again = client.post("/feedback", json=verdict)
            assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    version = ModelCard.load(DEFAULT_MODEL_PATH).version
    samples = {s.name: s.value for s in families["vqa_live_accuracy"].samples + families["vqa_live_accuracy_samples"]
               .samples if s.labels["model_version"] == version}  # fmt: skip
    # The restarted service computes live accuracy from the store: the verdicts from before the kill count.
    credit = sum({"correct": 1.0, "partially_correct": 0.5, "incorrect": 0.0}[str(v["verdict"])] for v in acknowledged)
    assert samples["vqa_live_accuracy_samples"] == len(acknowledged)
    assert samples["vqa_live_accuracy"] == pytest.approx(credit / len(acknowledged))


def test_feedback_survives_kill_9_on_sqlite(tmp_path: Path) -> None:
    store = tmp_path / "feedback.sqlite3"
    first = start_service(DEFAULT_MODEL_PATH, tmp_path / "first.log", VQA_STORE_PATH=str(store))
    try:
        acknowledged = answer_and_judge(first, 8)
    finally:
        kill_9(first)
    assert (tmp_path / "feedback.sqlite3-wal").exists(), "the store runs in WAL mode"
    second = start_service(DEFAULT_MODEL_PATH, tmp_path / "second.log", VQA_STORE_PATH=str(store))
    try:
        assert_all_there(second, acknowledged)
    finally:
        stop_service(second)


def test_feedback_survives_kill_9_on_postgresql(tmp_path: Path, postgres_server: PostgresServer) -> None:
    postgres_server.create_database("durability")
    url = postgres_server.url_for("durability")
    # The password travels separately (VQA_STORE_PASSWORD), as in compose and Kubernetes.
    user_only = url.replace(f":{postgres_server.password}@", "@")
    env = {"VQA_STORE_URL": user_only, "VQA_STORE_PASSWORD": postgres_server.password}
    first = start_service(DEFAULT_MODEL_PATH, tmp_path / "first.log", **env)
    try:
        acknowledged = answer_and_judge(first, 8)
    finally:
        kill_9(first)
    second = start_service(DEFAULT_MODEL_PATH, tmp_path / "second.log", **env)
    try:
        assert_all_there(second, acknowledged)
        assert postgres_server.password not in second.log_path.read_text(errors="replace"), "no secret in logs"
    finally:
        stop_service(second)
