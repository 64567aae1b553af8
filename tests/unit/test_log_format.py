"""JSON log lines carry the id of the request they were logged in, from the request's task and its threads."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.config import Settings
from app.log_format import REQUEST_ID, configure_logging


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    configure_logging(Settings(log_format="json", log_level="info"))
    yield stream
    root.handlers = handlers
    root.setLevel(level)


def test_every_line_of_a_request_names_it_and_other_lines_do_not(captured: io.StringIO) -> None:
    log = logging.getLogger("vqa.test")

    async def request(request_id: str) -> None:
        REQUEST_ID.set(request_id)  # what the middleware does
        log.info("in the handler")
        await asyncio.to_thread(log.warning, "in a worker thread")
        await asyncio.sleep(0)
        log.info("after the thread")

    async def two_requests_at_once() -> None:
        await asyncio.gather(request("req-a"), request("req-b"))

    log.info("before any request")
    asyncio.run(two_requests_at_once())
    log.info("after the requests")
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert {line["level"] for line in lines} == {"INFO", "WARNING"}
    by_id: dict[str | None, list[str]] = {}
    for line in lines:
        by_id.setdefault(line["request_id"], []).append(line["message"])
    assert by_id[None] == ["before any request", "after the requests"]
    for request_id in ("req-a", "req-b"):
        assert sorted(by_id[request_id]) == ["after the thread", "in a worker thread", "in the handler"]


def test_secret_settings_never_reach_a_log_line(captured: io.StringIO) -> None:
    settings = Settings(api_keys="key-SECRET-0123456789", kg_password="pw-SECRET-0123456789")
    logging.getLogger("vqa.test").info("settings: %s", settings)
    assert "SECRET" not in captured.getvalue()
