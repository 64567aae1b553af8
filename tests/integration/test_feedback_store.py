"""The feedback store on both of its databases: a real SQLite file (WAL) and a real PostgreSQL server."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from app.store.database import current_revision, head_revision, store_url
from app.store.feedback_store import FeedbackConflictError, FeedbackStore, UnknownRequestError
from app.store.records import AnswerDraft, AnsweredPassage, FeedbackInput, build_answer_record
from app.store.schema import Base

CARD = "4111 1111 1111 1111"  # a Luhn-valid test card number: the PII detectors must mask it
_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeedbackStore]:
    if request.param == "sqlite":
        url = store_url(None, None, tmp_path / "feedback.sqlite3")
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"store_{next(_databases)}"
        server.create_database(name)
        url = store_url(server.url_for(name), None, tmp_path)
    opened = FeedbackStore.open(url)
    yield opened
    opened.close()


def draft(request_id: str, *, when: datetime | None = None, version: str = "v1", **overrides: object) -> AnswerDraft:
    passage = f"Pay with card {CARD}. You can dispute a card payment within 120 days of the transaction date."
    start = passage.index("120 days")
    fields: dict[str, object] = {
        "request_id": request_id,
        "created_at": when or datetime.now(UTC),
        "model_name": "minilm-squad",
        "model_version": version,
        "question": f"my card is {CARD}, how long do I have to dispute a payment?",
        "passages": [AnsweredPassage("refunds", "Refunds take 5 working days."), AnsweredPassage("disputes", passage)],
        "answer_text": "120 days",
        "answer_score": 0.81,
        "answer_start": start,
        "answer_end": start + len("120 days"),
        "answer_passage": 1,
        "abstained": False,
        "abstain_reason": None,
    }
    fields.update(overrides)
    return AnswerDraft(**fields)  # type: ignore[arg-type]


def add(store: FeedbackStore, *drafts: AnswerDraft, cap: int = 20_000) -> None:
    store.add_answers([build_answer_record(d, cap) for d in drafts])


def test_migrations_create_exactly_the_declared_schema(store: FeedbackStore) -> None:
    assert current_revision(store.engine) == head_revision()
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"app/store/schema.py and the Alembic revisions disagree: {diff}"


def test_nothing_the_pii_rules_redact_is_stored(store: FeedbackStore) -> None:
    add(store, draft("r1"))
    store.add_feedback(FeedbackInput("r1", "incorrect", f"card {CARD}", 1, f"customer card {CARD}"))
    with store.engine.connect() as connection:
        dumped = " ".join(
            str(value)
            for table in ("answered_requests", "feedback")
            for row in connection.execute(text(f"SELECT * FROM {table}"))
            for value in row
        )
    assert "4111" not in dumped.replace("1111 1111 1111", ""), "only the last four digits survive"
    assert "•••• •••• •••• 1111" in dumped
    record = store.get_answer("r1")
    stored = record.passages[1].text
    assert stored is not None and record.answer_start is not None and record.answer_end is not None
    assert stored[record.answer_start : record.answer_end] == record.answer_text == "120 days"
    assert record.redacted


def test_passage_texts_are_capped_with_the_answers_passage_first(store: FeedbackStore) -> None:
    add(store, draft("r1"), cap=120)
    passages = store.get_answer("r1").passages
    assert [p.id for p in passages] == ["refunds", "disputes"], "order of the request is kept"
    assert passages[1].text is not None, "the answer's passage is kept first"
    assert passages[0].text is None and len(passages[0].sha256) == 64 and passages[0].chars == 28


def test_feedback_is_idempotent_per_request_id(store: FeedbackStore) -> None:
    add(store, draft("r1"))
    first = store.add_feedback(FeedbackInput("r1", "incorrect", "120 days", 2, "wrong clause"))
    again = store.add_feedback(FeedbackInput("r1", "incorrect", "120 days", 2, "wrong clause"))
    assert first.created and not again.created and again.feedback.id == first.feedback.id
    with pytest.raises(FeedbackConflictError):
        store.add_feedback(FeedbackInput("r1", "correct"))
    assert store.feedback_count() == 1
    with pytest.raises(UnknownRequestError):
        store.add_feedback(FeedbackInput("never-answered", "correct"))


def test_concurrent_submissions_for_one_request_record_it_once(store: FeedbackStore) -> None:
    add(store, draft("r1"))
    created: list[bool] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        barrier.wait()
        created.append(store.add_feedback(FeedbackInput("r1", "correct", rating=5)).created)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == [False] * 7 + [True]
    assert store.feedback_count() == 1


def test_a_request_older_than_its_retention_takes_no_feedback_and_is_purged(store: FeedbackStore) -> None:
    now = datetime.now(UTC)
    add(store, draft("old", when=now - timedelta(days=8)), draft("kept", when=now - timedelta(days=8)))
    add(store, draft("fresh", when=now - timedelta(days=1)))
    store.add_feedback(FeedbackInput("kept", "correct"), now=now - timedelta(days=7, hours=1))
    with pytest.raises(UnknownRequestError):
        store.add_feedback(FeedbackInput("old", "correct"), now=now)
    assert store.purge(now) == 1
    assert store.get_answer("kept").request_id == "kept", "a record with feedback is kept for a year"
    assert store.get_answer("fresh").request_id == "fresh"
    assert store.purge(now + timedelta(days=366)) == 2
    assert store.feedback_count() == 0


def test_live_accuracy_counts_the_newest_verdicts_per_version(store: FeedbackStore) -> None:
    now = datetime.now(UTC)
    verdicts = ["incorrect"] * 4 + ["correct"] * 3 + ["partially_correct"]
    for i, verdict in enumerate(verdicts):
        add(store, draft(f"a{i}"))
        store.add_feedback(FeedbackInput(f"a{i}", verdict), now=now + timedelta(seconds=i))  # type: ignore[arg-type]
    add(store, draft("b0", version="v2"))
    store.add_feedback(FeedbackInput("b0", "correct"))
    by_version = {row.model_version: row for row in store.live_accuracy(window=4)}
    assert by_version["v1"].samples == 4 and by_version["v1"].accuracy == pytest.approx(3.5 / 4)
    assert by_version["v2"].accuracy == 1.0 and by_version["v2"].samples == 1
    everything = {row.model_version: row for row in store.live_accuracy(window=100)}["v1"]
    assert everything.accuracy == pytest.approx(3.5 / 8)


def test_an_id_answered_twice_keeps_its_first_answer(store: FeedbackStore) -> None:
    add(store, draft("dup", answer_text="first"))
    add(store, draft("dup", answer_text="second", answer_start=None, answer_end=None, answer_passage=None))
    assert store.get_answer("dup").answer_start is not None
