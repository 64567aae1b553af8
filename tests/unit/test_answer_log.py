"""AnswerLog: records leave the request path, are written in batches, found by feedback before they are written."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from app.store.answer_log import AnswerLog
from app.store.records import AnswerDraft, AnswerRecord


class SlowStore:
    """Stands in for FeedbackStore.add_answers: records each batch, blocks while ``gate`` is closed."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def add_answers(self, records: list[AnswerRecord]) -> None:
        self.gate.wait(5)
        self.batches.append([r.request_id for r in records])


def draft(request_id: str) -> AnswerDraft:
    return AnswerDraft(request_id, datetime.now(UTC), "m", "v1", "q?", [], None, 0.0, None, None, None, True, "no_span")


def test_records_are_batched_and_a_pending_one_is_flushed_on_demand() -> None:
    async def scenario() -> None:
        store = SlowStore()
        dropped: list[int] = []
        log = AnswerLog(store, ThreadPoolExecutor(1), flush_interval_s=10, max_pending=3,  # type: ignore[arg-type]
                        on_dropped=dropped.append)  # fmt: skip
        log.start()
        for i in range(4):
            log.add(draft(f"r{i}"))  # never blocks; the fourth is over max_pending and dropped
        assert dropped == [1] and log.is_pending("r1") and not log.is_pending("r3")
        await log.flush_pending()  # what POST /feedback does for a request still queued
        assert store.batches == [["r0", "r1", "r2"]] and not log.is_pending("r1")
        await log.close()

    asyncio.run(scenario())


def test_the_writer_task_writes_without_being_asked_and_close_writes_the_rest() -> None:
    async def scenario() -> None:
        store = SlowStore()
        log = AnswerLog(store, ThreadPoolExecutor(1), flush_interval_s=0.01)  # type: ignore[arg-type]
        log.start()
        log.add(draft("a"))
        for _ in range(200):
            if store.batches:
                break
            await asyncio.sleep(0.01)
        assert store.batches == [["a"]]
        store.gate.clear()  # the store hangs: queued records wait, answering does not
        log.add(draft("b"))
        await asyncio.sleep(0.05)
        log.add(draft("c"))
        store.gate.set()
        await log.close()
        assert [r for batch in store.batches for r in batch] == ["a", "b", "c"]

    asyncio.run(scenario())
