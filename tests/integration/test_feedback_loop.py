"""The feedback loop in one process with the real model and a real SQLite store: answer -> feedback -> metrics ->
export -> a training run on the exported file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from app.qa.card import ModelCard
from tests.conftest import DEFAULT_MODEL_DIR as DEFAULT_MODEL_PATH
from tests.conftest import wait_for_readyz
from training.squad_metric import best_over_references

KEY = "feedback-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
DISPUTES = (
    "You can dispute a card payment within 120 days of the transaction date. "
    "Refunds are credited within 5 working days of the merchant accepting the dispute."
)
LIMITS = "The daily cash withdrawal limit is 500 GBP. Contactless payments are limited to 100 GBP each."
FEES = "A replacement card costs 5 GBP. Replacing a stolen card is free of charge."


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store") / "feedback.sqlite3"


@pytest.fixture(scope="module")
def client(store_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        model_path=DEFAULT_MODEL_PATH,
        api_keys=KEY,
        store_path=store_path,
        model_registry=None,
        canary_interval_min=60,  # once after the load, then hourly
        canary_questions=8,
        canary_feedback_min_interval_s=0,
    )
    with TestClient(create_app(settings)) as client:
        wait_for_readyz(client, 60)
        yield client


def ask(client: TestClient, question: str, context: str, context_id: str | None = None) -> dict[str, Any]:
    r = client.post(
        "/answer", json={"question": question, "contexts": [{"id": context_id, "text": context}]}, headers=AUTH
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# Every verdict this module records, with the answer it judged: what the export and the canary must make of them
# depends on what the served model answered, so the expectations are computed from the responses.
JUDGED: list[tuple[dict[str, Any], str, str | None]] = []


def judge(client: TestClient, answer: dict[str, Any], verdict: str, correction: str | None = None) -> None:
    body = {"request_id": answer["request_id"], "verdict": verdict, "corrected_answer": correction}
    r = client.post("/feedback", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    JUDGED.append((answer, verdict, correction))


def expected_example(answer: dict[str, Any], verdict: str, correction: str | None) -> tuple[str, float] | None:
    """(kind, canary credit 0-100) of the example a verdict becomes (export rules), None when it is skipped."""
    answered = not answer["abstained"]
    text = answer["answers"][0]["text"] if answered else ""
    if correction:  # located in the passage (every correction here is): answerable with the correction
        return "answerable", 100 * best_over_references(text, [correction])[1] if answered else 0.0
    if verdict == "correct":  # the served answer confirmed: the model gives it again
        return ("answerable" if answered else "unanswerable"), 100.0
    return ("unanswerable", 0.0) if answered else None  # marked wrong: it should abstain, and does not


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(client.get("/metrics").text)
        for s in family.samples
    }


def wait_for_sample(client: TestClient, name: str, labels: dict[str, str], expected: float | None = None) -> float:
    """The sample's value once it exists (and equals ``expected``, if given); the canary runs in the background."""
    key = (name, tuple(sorted(labels.items())))
    deadline = time.monotonic() + 60
    while True:
        value = samples(client).get(key)
        if value is not None and (expected is None or value == pytest.approx(expected, abs=0.01)):
            return value
        assert time.monotonic() < deadline, f"{name}{labels} is {value}, expected {expected}"
        time.sleep(0.2)


def test_the_canary_scores_the_labelled_set_through_the_serving_path(client: TestClient) -> None:
    version = ModelCard.load(DEFAULT_MODEL_PATH).version
    f1 = wait_for_sample(client, "vqa_canary_f1", {"model_version": version, "set": "dev"})
    assert 0 < f1 <= 100, "the real model gets some of the pack's dev questions right"
    assert samples(client)[("vqa_canary_runs_total", (("outcome", "ok"),))] >= 1


def test_feedback_is_recorded_once_and_moves_the_live_accuracy(client: TestClient) -> None:
    version = ModelCard.load(DEFAULT_MODEL_PATH).version
    answer = ask(client, "How long do I have to dispute a card payment?", DISPUTES, "disputes")
    assert answer["model"]["version"] == version
    before = samples(client)
    verdict = {"request_id": answer["request_id"], "verdict": "incorrect", "corrected_answer": "120 days",
               "rating": 2, "comment": "it should say 120 days"}  # fmt: skip
    first = client.post("/feedback", json=verdict, headers=AUTH)  # sent at once: the record may still be queued
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["duplicate"] is False and body["model"] == answer["model"] and body["verdict"] == "incorrect"
    replay = client.post("/feedback", json=verdict, headers=AUTH)
    assert replay.status_code == 200 and replay.json()["feedback_id"] == body["feedback_id"]
    assert replay.json()["duplicate"] is True
    conflict = client.post("/feedback", json={**verdict, "verdict": "correct", "corrected_answer": None}, headers=AUTH)
    assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "feedback_exists"

    after = samples(client)
    key = ("vqa_feedback_total", (("model_version", version), ("verdict", "incorrect")))
    assert after[key] - before.get(key, 0.0) == 1, "the replay and the conflict are not counted"
    assert after[("vqa_live_accuracy", (("model_version", version),))] == 0.0
    assert after[("vqa_feedback_rating_count", (("model_version", version),))] == 1

    JUDGED.append((answer, "incorrect", "120 days"))
    good = ask(client, "What is the daily cash withdrawal limit?", LIMITS, "limits")
    judge(client, good, "correct")
    moved = samples(client)
    assert moved[("vqa_live_accuracy", (("model_version", version),))] == 0.5
    assert moved[("vqa_live_accuracy_samples", (("model_version", version),))] == 2

    # The canary's feedback set answers the judged questions again: a confirmed answer scores 100, a correction the
    # F1 of the model's answer against it. Then a deliberately different correction moves it down.
    canary = {"model_version": version, "set": "feedback"}
    credits = [c for c in (expected_example(*j) for j in JUDGED) if c is not None]
    before_f1 = wait_for_sample(client, "vqa_canary_f1", canary, expected=sum(c for _, c in credits) / len(credits))
    wrong = ask(client, "How fast are refunds credited?", DISPUTES, "disputes")
    judge(client, wrong, "partially_correct", "120 days")  # in the passage, but not what the model answers
    credits = [c for c in (expected_example(*j) for j in JUDGED) if c is not None]
    after_f1 = wait_for_sample(client, "vqa_canary_f1", canary, expected=sum(c for _, c in credits) / len(credits))
    assert after_f1 < before_f1


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"verdict": "maybe"}, "verdict"),
        ({"rating": 6}, "rating"),
        ({"rating": 0}, "rating"),
        ({"comment": "x" * 501}, "comment"),
        ({"corrected_answer": "y" * 1001}, "corrected_answer"),
        ({"corrected_answer": "   "}, "corrected_answer"),
        ({"request_id": "../../etc/passwd"}, "request_id"),
        ({"verdict": "correct", "corrected_answer": "120 days"}, "corrected_answer is only taken"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bad_feedback_is_a_422_naming_the_field(client: TestClient, patch: dict[str, Any], field: str) -> None:
    body = {"request_id": "abc", "verdict": "incorrect", **patch}
    r = client.post("/feedback", json=body, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert field in r.json()["error"]["message"]


def test_unknown_request_ids_get_one_json_404_and_keys_are_required(client: TestClient) -> None:
    r = client.post("/feedback", json={"request_id": "never-answered-here", "verdict": "correct"}, headers=AUTH)
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "unknown_request" and "retention" in error["message"]
    assert error["request_id"] == r.headers["x-request-id"]
    assert client.post("/feedback", json={"request_id": "x", "verdict": "correct"}).status_code == 401


def test_the_export_round_trips_into_a_training_run(
    client: TestClient, store_path: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    asked = [
        ("How much does a replacement card cost?", FEES, "fees", "incorrect", "5 GBP"),
        ("Is a stolen card replaced for free?", FEES, "fees", "partially_correct", "free of charge"),
        ("What is the contactless limit?", LIMITS, "limits", "incorrect", "100 GBP each"),
        ("When are refunds credited?", DISPUTES, "disputes", "incorrect", None),
        ("What is the daily cash limit?", LIMITS, "limits", "correct", None),
    ]
    for question, context, cid, verdict, correction in asked:
        judge(client, ask(client, question, context, cid), verdict, correction)
    env = {**os.environ, "VQA_STORE_PATH": str(store_path), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "export"
    exported = subprocess.run(
        [sys.executable, "-m", "app.cli", "feedback", "export", "--out", str(out), "--holdout", "0"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    report = json.loads((out / "report.json").read_text())
    kinds = [e[0] for e in (expected_example(*j) for j in JUDGED) if e is not None]
    assert report["verdicts"] == len(JUDGED) == 8
    assert report["answerable"] == kinds.count("answerable") and report["unanswerable"] == kinds.count("unanswerable")
    assert report["train"] == len(kinds) and sum(report["skipped"].values()) == len(JUDGED) - len(kinds)
    data = json.loads((out / "train.json").read_text())
    qas = {qa["question"]: (qa, p["context"]) for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]}
    fee, context = qas["How much does a replacement card cost?"]
    assert fee["answers"][0]["text"] == "5 GBP" and context == FEES, "the correction, located in its passage"
    assert context[fee["answers"][0]["answer_start"] :].startswith("5 GBP")
    if not JUDGED[-2][0]["abstained"]:
        assert qas["When are refunds credited?"][0]["is_impossible"] is True, "wrong, no correction: unanswerable"

    run = tmp_path / "run"
    trained = subprocess.run(
        [sys.executable, "-m", "app.cli", "train", "--train", f"{out / 'train.json'}:2", "--output", str(run),
         "--base-model", str(tiny_model_dir), "--max-steps", "3", "--batch-size", "4", "--max-seq-len", "64",
         "--stride", "16", "--max-question-tokens", "24", "--eval-limit", "4", "--no-progress", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    card = ModelCard.load(run)
    assert card.hyperparameters["steps"] == 3
    source = card.data[0]
    assert source.path.endswith("train.json") and source.weight == 2.0 and source.questions == len(kinds)
