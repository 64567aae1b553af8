"""A feedback store that is down: answers go on (records dropped and counted), feedback says 503 with Retry-After."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from kg.embedded import free_port


def test_answers_go_on_while_the_store_is_unreachable(tiny_model_dir: Path) -> None:
    nowhere = f"postgresql+psycopg://vqa@127.0.0.1:{free_port()}/vqa"  # nothing listens there
    settings = Settings(
        model_path=tiny_model_dir, store_url=nowhere, store_password="not-used-here", model_registry=None
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        while client.get("/readyz").json()["store"] != "unavailable":
            assert time.monotonic() < deadline, client.get("/readyz").json()
            time.sleep(0.1)
        answer = client.post("/answer", json={"question": "fee?", "contexts": [{"text": "The fee is 5 GBP."}]})
        assert answer.status_code == 200
        feedback = client.post("/feedback", json={"request_id": answer.json()["request_id"], "verdict": "correct"})
        assert feedback.status_code == 503 and feedback.headers["retry-after"] == "5"
        assert feedback.json()["error"]["code"] == "store_unavailable"
        metrics = client.get("/metrics").text
        assert "vqa_answer_records_dropped_total 1.0" in metrics
        assert 'vqa_store_errors_total{operation="open"}' in metrics
        assert "not-used-here" not in metrics
