"""Hostile HTTP against the real service: unfinished requests, malformed bodies and headers, loose types, 500s.

Each test here reproduces a defect found by hand (issue 14) and holds its fix: a client that never finishes its
headers or body is cut off after a bounded time; every refusal comes in the one JSON error body; a 500 tells the
client the connection is done; one API key cannot take more than its rate.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.main import create_app
from app.qa.reader import Reader, ReaderResult, WindowPrediction
from app.qa.windows import Window
from kg.embedded import free_port
from tests.e2e.conftest import RunningService, start_service, stop_service

# Each test takes a key of its own, so that the small rate limit of this service only bites where a test wants it.
KEYS = [f"hardening-key-{index:02d}-0123456789abcdef" for index in range(40)]
_unused_keys = iter(KEYS)
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 2.0
RATE_LIMIT = 6  # per key and minute in the service below


@pytest.fixture
def key() -> str:
    return next(_unused_keys)


@pytest.fixture(scope="module")
def strict(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    running = start_service(
        tiny_model_dir,
        tmp_path_factory.mktemp("strict") / "service.log",
        VQA_API_KEYS=",".join(KEYS),
        VQA_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        VQA_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
        VQA_RATE_LIMIT=f"{RATE_LIMIT}/minute",
    )
    yield running
    stop_service(running)


def _address(service: RunningService) -> tuple[str, int]:
    host, port = service.url.removeprefix("http://").split(":")
    return host, int(port)


def _raw(service: RunningService, payload: bytes, wait_s: float = 10.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes (or ``wait_s`` passes)."""
    with socket.create_connection(_address(service), timeout=wait_s) as sock:
        sock.sendall(payload)
        return _read_until_closed(sock, wait_s)


def _read_until_closed(sock: socket.socket, wait_s: float) -> bytes:
    received = b""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"connection still open after {wait_s:.0f} s; received {received[:200]!r}")


def _split_response(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    return status, headers, json.loads(body) if body else None


def _assert_error_body(body: Any, code: str) -> None:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"] and body["error"]["request_id"], body


# ------------------------------------------------------------------ unfinished requests


def test_connections_with_unfinished_headers_are_closed_after_the_header_timeout(strict: RunningService) -> None:
    sockets: list[socket.socket] = []
    try:
        opened = time.monotonic()
        for index in range(400):
            sock = socket.create_connection(_address(strict), timeout=10)
            if index % 4:  # most send part of a request; some send nothing at all
                sock.sendall(b"POST /answer HTTP/1.1\r\nHost: vqa\r\nX-Partial: ")
            sockets.append(sock)
        closed_within: list[float] = []
        for sock in sockets:
            _read_until_closed(sock, wait_s=HEADER_TIMEOUT_S + 15)
            closed_within.append(time.monotonic() - opened)
        assert max(closed_within) < HEADER_TIMEOUT_S + 15
    finally:
        for sock in sockets:
            sock.close()
    assert httpx.get(f"{strict.url}/healthz").status_code == 200, "the service still serves"


def test_a_partial_request_gets_408_in_the_error_body(strict: RunningService) -> None:
    raw = _raw(strict, b"POST /answer HTTP/1.1\r\nHost: vqa\r\nContent-Type: applic", wait_s=HEADER_TIMEOUT_S + 8)
    status, headers, body = _split_response(raw)
    assert status == 408 and headers["connection"] == "close"
    _assert_error_body(body, "request_timeout")


def test_a_chunked_body_that_never_ends_is_cut_after_the_body_timeout(strict: RunningService, key: str) -> None:
    with socket.create_connection(_address(strict), timeout=10) as sock:
        sock.sendall(
            b"POST /answer HTTP/1.1\r\nHost: vqa\r\nContent-Type: application/json\r\n"
            + f"X-API-Key: {key}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        started = time.monotonic()
        received = b""
        # a slow trickle: one byte every 0.3 s would keep any per-read timeout happy. It stops just before the
        # deadline: a server that closes with a client's bytes still unread resets the connection, and the reset
        # can destroy the 408 on its way (a race of the client's, not the service's).
        while time.monotonic() - started < BODY_TIMEOUT_S + 8:
            if time.monotonic() - started < BODY_TIMEOUT_S - 0.5:
                sock.sendall(b"1\r\n \r\n")
            sock.settimeout(0.3)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError(f"body never cut off; received {received[:200]!r}")
        elapsed = time.monotonic() - started
    assert BODY_TIMEOUT_S - 0.5 <= elapsed < BODY_TIMEOUT_S + 8
    status, headers, body = _split_response(received)
    assert status == 408 and headers["connection"] == "close"
    _assert_error_body(body, "request_timeout")


def test_a_body_shorter_than_its_content_length_is_cut_after_the_body_timeout(strict: RunningService) -> None:
    raw = _raw(
        strict,
        b"POST /answer HTTP/1.1\r\nHost: vqa\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{",
        wait_s=BODY_TIMEOUT_S + 8,
    )
    status, _, body = _split_response(raw)
    assert status == 408
    _assert_error_body(body, "request_timeout")


# ------------------------------------------------------------------ bodies and headers


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"question": "\xff\xfe what?", "contexts": [{"text": "t"}]}', "UTF-8"),
        (b'{"question": "q?", "contexts": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "nest"),
        (b'{"question": "q?", "top_k": 1' + b"0" * 5000 + b"}", "digits"),
    ],
    ids=["invalid-utf8", "deep-nesting", "huge-integer"],
)
def test_unparseable_bodies_are_400_invalid_json(strict: RunningService, key: str, body: bytes, says: str) -> None:
    r = httpx.post(f"{strict.url}/answer", content=body, headers={"X-API-Key": key, "content-type": "application/json"})
    assert r.status_code == 400, r.text
    _assert_error_body(r.json(), "invalid_json")
    assert says in r.json()["error"]["message"], r.json()
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]


@pytest.mark.parametrize("request_id", [b"abc\x01def", b"abc\x7fdef", b"\x00"], ids=["control-char", "delete", "nul"])
def test_a_control_character_in_x_request_id_gets_the_json_error_body(
    strict: RunningService, request_id: bytes
) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: vqa\r\nConnection: close\r\nX-Request-ID: " + request_id + b"\r\n\r\n"
    raw = _raw(strict, request)
    status, headers, body = _split_response(raw)
    assert headers["content-type"] == "application/json", raw
    if status == 200:  # the header was ignored and an id generated
        assert headers["x-request-id"].isalnum()
    else:
        assert status == 400
        _assert_error_body(body, "invalid_http")
        assert body["error"]["request_id"] == headers["x-request-id"]


def test_a_malformed_request_line_gets_the_json_error_body(strict: RunningService) -> None:
    status, headers, body = _split_response(_raw(strict, b"NOT A REQUEST\r\n\r\n"))
    assert status == 400 and headers["content-type"] == "application/json"
    _assert_error_body(body, "invalid_http")


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"top_k": "3"}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"max_answer_len": "10"}, "max_answer_len"),
        ({"min_score": False}, "min_score"),
        ({"min_score": "0.5"}, "min_score"),
    ],
)
def test_types_are_strict(strict: RunningService, key: str, patch: dict[str, Any], field: str) -> None:
    body = {"question": "q?", "contexts": [{"text": "some text"}], **patch}
    r = httpx.post(f"{strict.url}/answer", json=body, headers={"X-API-Key": key})
    assert r.status_code == 422, r.text
    _assert_error_body({"error": {k: v for k, v in r.json()["error"].items() if k != "details"}}, "invalid_request")
    assert r.json()["error"]["message"].startswith(field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"question": "why \\ud800?", "contexts": [{"text": "t"}]}', "question"),
        ('{"question": "q?", "contexts": [{"text": "a \\udfff b"}]}', "contexts[0].text"),
        ('{"question": "q?", "contexts": [{"id": "\\ud83d", "text": "t"}]}', "contexts[0].id"),
    ],
)
def test_lone_surrogates_are_422_not_500(strict: RunningService, key: str, body: str, field: str) -> None:
    r = httpx.post(f"{strict.url}/answer", content=body, headers={"X-API-Key": key, "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["message"].startswith(field), r.json()


def test_openapi_declares_the_security_schemes(strict: RunningService) -> None:
    spec = httpx.get(f"{strict.url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    kinds = {(s["type"], s.get("scheme"), s.get("in"), s.get("name")) for s in schemes.values()}
    assert ("http", "bearer", None, None) in kinds and ("apiKey", None, "header", "X-API-Key") in kinds
    security = spec["paths"]["/answer"]["post"]["security"]
    assert len(security) == 2 and {name for option in security for name in option} == set(schemes)
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert "security" not in spec["paths"][probe]["get"], f"{probe} stays open"


def test_each_key_has_its_own_rate_limit(strict: RunningService) -> None:
    busy, other_key = next(_unused_keys), next(_unused_keys)
    good = {"question": "q?", "contexts": [{"text": "some text"}]}
    statuses = [
        httpx.post(f"{strict.url}/answer", json=good, headers={"X-API-Key": busy}).status_code
        for _ in range(RATE_LIMIT)
    ]
    assert statuses == [200] * RATE_LIMIT
    refused = httpx.post(f"{strict.url}/answer", json=good, headers={"Authorization": f"Bearer {busy}"})
    assert refused.status_code == 429, refused.text
    _assert_error_body(refused.json(), "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "VQA_RATE_LIMIT" in refused.json()["error"]["message"]
    other = httpx.post(f"{strict.url}/answer", json=good, headers={"X-API-Key": other_key})
    assert other.status_code == 200, "another key is not limited by this one"
    metrics = httpx.get(f"{strict.url}/metrics").text
    assert 'vqa_rejections_total{reason="rate_limited"} 1.0' in metrics


# ------------------------------------------------------------------ a 500 ends the connection cleanly


class ExplodingReader(Reader):
    """A real reader that fails on one question, as an unforeseen bug would."""

    def postprocess(
        self,
        contexts: Sequence[str],
        windows: Sequence[Window],
        predictions: Sequence[WindowPrediction],
        top_k: int = 1,
        min_score: float | None = None,
    ) -> ReaderResult:
        if "explode" in contexts[0]:
            raise RuntimeError("an unforeseen bug")
        return super().postprocess(contexts, windows, predictions, top_k, min_score)


@pytest.fixture
def exploding_server(tiny_model_dir: Path) -> Iterator[str]:
    port = free_port()
    settings = Settings(model_path=tiny_model_dir, port=port)
    app = create_app(settings, reader_factory=lambda s: ExplodingReader(s.model_path, device="cpu"))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "in-process service never became ready"
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(20)


def test_a_500_says_connection_close_and_the_next_request_succeeds(exploding_server: str) -> None:
    with httpx.Client(base_url=exploding_server, timeout=30) as client:
        failed = client.post("/answer", json={"question": "q?", "contexts": [{"text": "explode"}]})
        assert failed.status_code == 500
        _assert_error_body(failed.json(), "internal_error")
        assert "Traceback" not in failed.text and "unforeseen" not in failed.text
        assert failed.headers["connection"] == "close", "the client must know this connection is done"
        assert failed.headers["x-request-id"] == failed.json()["error"]["request_id"]
        after = client.post("/answer", json={"question": "q?", "contexts": [{"text": "a calm text"}]})
        assert after.status_code == 200, after.text
