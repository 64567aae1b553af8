"""POST /answer over real HTTP: shape, validation, limits, auth, errors."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import API_KEY, RunningService

CONTEXT = "Card disputes must be raised within 120 days of the transaction. Refunds take 5 working days. 😀"


def _post(service: RunningService, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        f"{service.url}/answer", json=body, headers={"X-API-Key": API_KEY} if headers is None else headers, timeout=30
    )


def test_answer_has_the_documented_shape_and_offsets(service: RunningService, auth: dict[str, str]) -> None:
    body = {
        "question": "How long do I have to dispute?",
        "contexts": [{"id": "policy", "text": CONTEXT}, {"text": "x y"}],
        "top_k": 3,
        "min_score": 0,
    }
    r = _post(service, body, auth)
    assert r.status_code == 200, r.text
    data = r.json()
    assert set(data) >= {"request_id", "answers", "abstained", "model", "timings_ms"}
    assert data["request_id"] == r.headers["x-request-id"]
    assert data["model"] == {"name": "tiny-test", "version": "t1"}
    assert set(data["timings_ms"]) == {"queue", "inference", "graph", "total"}
    assert data["graph_status"] == "disabled" and data["facts"] == [], "no graph, no facts"
    # Linking works from the pack without the graph: the question names the dispute procedure.
    assert [(e["id"], e["source"], e["text"]) for e in data["entities"]] == [
        ("procedure:dispute-card-payment", "question", "dispute")
    ]
    assert data["abstained"] is False and 1 <= len(data["answers"]) <= 3
    texts = [CONTEXT, "x y"]
    for a in data["answers"]:
        assert texts[a["context_index"]][a["start"] : a["end"]] == a["text"]
        assert 0 <= a["score"] <= 1
        assert a["context_id"] == ("policy" if a["context_index"] == 0 else "1")


def test_min_score_one_abstains_with_a_reason(service: RunningService) -> None:
    r = _post(service, {"question": "refund time?", "contexts": [{"text": CONTEXT}], "min_score": 1.0})
    data = r.json()
    assert r.status_code == 200 and data["abstained"] is True and data["answers"] == []
    assert data["abstention"]["reason"] == "low_confidence" and data["abstention"]["threshold"] == 1.0


GOOD: dict[str, Any] = {"question": "q?", "contexts": [{"text": "some text"}]}


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "x" * 1001}, "question"),
        ({"question": None}, "question"),
        ({"contexts": [{"text": "t"}] * 21}, "contexts"),
        ({"contexts": [{"text": ""}]}, "contexts[0].text"),
        ({"contexts": [{"text": "t" * 100_001}]}, "contexts[0].text"),
        ({"contexts": [{"txt": "t"}]}, "contexts[0]"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 21}, "top_k"),
        ({"max_answer_len": 0}, "max_answer_len"),
        ({"max_answer_len": 65}, "max_answer_len"),
        ({"min_score": 1.5}, "min_score"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_each_bad_field_gets_422_naming_it(service: RunningService, patch: dict[str, Any], field: str) -> None:
    body = {**GOOD, **patch}
    if patch.get("question", "") is None:
        del body["question"]
    # the 100k-char context needs a body above the test service's 150 kB limit otherwise
    r = _post(service, body)
    assert r.status_code == (413 if len(r.request.content) > 150_000 else 422), r.text
    if r.status_code == 422:
        error = r.json()["error"]
        assert error["code"] == "invalid_request" and error["request_id"] == r.headers["x-request-id"]
        assert error["message"].startswith(field) or f"; {field}" in error["message"], error["message"]
        assert "Traceback" not in r.text


def test_invalid_json_is_400(service: RunningService) -> None:
    r = httpx.post(
        f"{service.url}/answer",
        content=b'{"question": ',
        headers={"X-API-Key": API_KEY, "content-type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_oversized_body_is_413_before_parsing(service: RunningService) -> None:
    body = {"question": "q?", "contexts": [{"text": "word " * 10_000}] * 4}  # ~200 kB > 150 kB limit
    r = _post(service, body)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert "VQA_MAX_BODY_BYTES" in r.json()["error"]["message"]


def test_oversized_chunked_body_is_413(service: RunningService) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"question": "q?", "contexts": [{"text": "'
        for _ in range(40):
            yield b"a" * 5000
        yield b'"}]}'

    r = httpx.post(
        f"{service.url}/answer",
        content=chunks(),
        headers={"X-API-Key": API_KEY, "content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 413


def test_api_key_is_required_but_probes_stay_open(service: RunningService) -> None:
    assert _post(service, GOOD, headers={}).status_code == 401
    wrong = _post(service, GOOD, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    assert _post(service, GOOD, headers={"X-API-Key": "second-key-0123456789"}).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{service.url}{path}").status_code == 200


def test_unknown_route_gets_the_error_body(service: RunningService) -> None:
    r = httpx.get(f"{service.url}/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_openapi_docs_are_served_without_any_other_host(service: RunningService) -> None:
    page = httpx.get(f"{service.url}/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    referenced = {a or b for a, b in urls}
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/openapi.json"} <= referenced
    assert not re.search(r"https?://", page.text), "the page loads nothing from a CDN (air-gapped deployments)"
    for url in referenced:
        asset = httpx.get(f"{service.url}{url}")
        assert asset.status_code == 200 and asset.content, url
    assert "/answer" in httpx.get(f"{service.url}/openapi.json").json()["paths"]
    assert httpx.get(f"{service.url}/docs/assets/no-such-file.js").status_code == 404
    assert httpx.get(f"{service.url}/redoc").status_code == 404, "ReDoc would load its script from a CDN"
    counted = {
        (sample.labels["route"], sample.labels["status"])
        for family in text_string_to_metric_families(httpx.get(f"{service.url}/metrics").text)
        if family.name == "vqa_requests"
        for sample in family.samples
        if sample.name == "vqa_requests_total"
    }
    assert not {c for c in counted if c[0].startswith("/docs") or c == ("unmatched", "200")}, "docs are not metered"


def test_question_without_contexts_is_answered_from_the_corpus(service: RunningService) -> None:
    r = _post(service, {"question": "How long do I have to dispute a card payment?", "min_score": 0})
    assert r.status_code == 200, r.text
    data = r.json()
    retrieved = {p["id"]: p for p in data["retrieved"]}
    assert 1 <= len(retrieved) <= 5
    assert "policy-disputes-and-chargebacks" in {p["doc_id"] for p in retrieved.values()}
    for answer in data["answers"]:
        assert answer["context_id"] in retrieved, "answers name the passage they come from"


def test_question_matching_no_passage_abstains(service: RunningService) -> None:
    r = _post(service, {"question": "xyzzy plugh"})
    data = r.json()
    assert r.status_code == 200 and data["abstained"] is True and data["retrieved"] == []
    assert data["abstention"]["reason"] == "no_passage"
