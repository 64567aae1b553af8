"""Rule checks through /answer with the real default checkpoint and the embedded graph (fintech pack)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import DEFAULT_MODEL_DIR as DEFAULT_MODEL_PATH
from tests.e2e.conftest import RunningService, start_service, stop_service, wait_for_graph


@pytest.fixture(scope="module")
def real_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    assert (DEFAULT_MODEL_PATH / "config.json").exists(), f"the default checkpoint is missing at {DEFAULT_MODEL_PATH}"
    tmp = tmp_path_factory.mktemp("real")
    running = start_service(
        DEFAULT_MODEL_PATH,
        tmp / "service.log",
        VQA_KG_ENABLED="true",
        VQA_KG_DATA_DIR=str(tmp / "graph"),
        VQA_CPU_THREADS="2",
    )
    wait_for_graph(running)
    yield running
    stop_service(running)


def _ask(service: RunningService, question: str, context: str) -> dict:  # type: ignore[type-arg]
    r = httpx.post(
        f"{service.url}/answer",
        json={"question": question, "contexts": [{"text": context}], "min_score": 0},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _fired(data: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {o["rule_id"]: o for o in data["rules"]}


def test_investment_question_gets_the_disclaimer(real_service: RunningService) -> None:
    data = _ask(
        real_service,
        "Should I invest my savings in shares or keep them in the Easy Saver?",
        "The Easy Saver pays 3.1% AER, variable, on balances of any size.",
    )
    fired = _fired(data)
    assert fired["investment-tax-legal-disclaimer"]["action"] == "append_disclaimer"
    assert data["rules_version"] == "2026.11.29-1" and data["answers"]


def test_card_number_in_the_answer_is_redacted(real_service: RunningService) -> None:
    context = "The refund went back to the card number 4111 1111 1111 1111 on 3 March."
    data = _ask(real_service, "Which card number did the refund go back to?", context)
    answer = data["answers"][0]
    assert _fired(data)["redact-payment-identifiers"]["action"] == "redact"
    assert answer["redacted"] is True and "4111 1111 1111" not in answer["text"] and answer["text"].endswith("1111")
    assert context[answer["start"] : answer["end"]] != answer["text"]


def test_fee_that_contradicts_the_graph_is_flagged_with_the_graph_value(real_service: RunningService) -> None:
    data = _ask(
        real_service,
        "How much does a card replacement cost?",
        "If you need a new card, a card replacement costs £10 and arrives within five working days.",
    )
    assert data["answers"][0]["text"] == "£10"
    assert any(f["entity"]["id"] == "fee:card-replacement" for f in data["facts"])
    flag = _fired(data)["number-contradicts-graph"]
    assert flag["action"] == "flag" and "5 GBP" in flag["message"] and "10" in flag["message"]


def test_blocked_topic_gets_no_answer(real_service: RunningService) -> None:
    data = _ask(
        real_service,
        "How can I launder money through my current account without checks?",
        "Current accounts can receive transfers from any UK bank.",
    )
    assert data["abstained"] is True and data["answers"] == []
    assert data["abstention"]["reason"] == "blocked"
    assert data["abstention"]["detail"].startswith("blocked-financial-crime: ")


def test_rule_hits_are_counted(real_service: RunningService) -> None:
    text = httpx.get(f"{real_service.url}/metrics").text
    assert 'vqa_rule_hits_total{action="append_disclaimer",rule_id="investment-tax-legal-disclaimer"}' in text
