"""The feedback store: answered-request records and verdicts, on SQLite or PostgreSQL through one SQLAlchemy layer.

Methods are synchronous and thread-safe (one engine, a connection per call); the service calls them from its
store thread pool (:class:`app.store.answer_log.AnswerLog`, :class:`app.feedback.FeedbackDesk`), never on the
event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import URL, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.store.database import migrate, open_engine
from app.store.records import (
    VERDICT_CREDIT,
    AnswerRecord,
    FeedbackExample,
    FeedbackInput,
    FeedbackReceipt,
    LiveAccuracy,
    PassageRecord,
    StoredFeedback,
)
from app.store.schema import AnsweredRequest, Feedback

log = logging.getLogger(__name__)


class UnknownRequestError(LookupError):
    """No answered request with this id is kept (never answered here, or older than the retention period)."""


class FeedbackConflictError(Exception):
    """Feedback for this request was already recorded with different content."""

    def __init__(self, existing: StoredFeedback) -> None:
        super().__init__(f"feedback for request {existing.request_id} was already recorded")
        self.existing = existing


def _utc(value: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _to_record(row: AnsweredRequest) -> AnswerRecord:
    return AnswerRecord(
        request_id=row.request_id,
        created_at=_utc(row.created_at),
        model_name=row.model_name,
        model_version=row.model_version,
        question=row.question,
        answer_text=row.answer_text,
        answer_score=row.answer_score,
        answer_start=row.answer_start,
        answer_end=row.answer_end,
        answer_passage=row.answer_passage,
        abstained=row.abstained,
        abstain_reason=row.abstain_reason,
        passages=[PassageRecord.from_json(p) for p in row.passages],
        redacted=row.redacted,
    )


def _to_feedback(row: Feedback) -> StoredFeedback:
    return StoredFeedback(
        id=row.id,
        request_id=row.request_id,
        created_at=_utc(row.created_at),
        model_version=row.model_version,
        verdict=row.verdict,
        corrected_answer=row.corrected_answer,
        rating=row.rating,
        comment=row.comment,
    )


class FeedbackStore:
    """Answered requests (kept ``record_retention`` without feedback, ``feedback_retention`` with) and verdicts."""

    def __init__(
        self,
        engine: Engine,
        record_retention: timedelta = timedelta(days=7),
        feedback_retention: timedelta = timedelta(days=365),
    ) -> None:
        self.engine = engine
        self.record_retention = record_retention
        self.feedback_retention = feedback_retention
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(
        cls,
        url: URL,
        record_retention: timedelta = timedelta(days=7),
        feedback_retention: timedelta = timedelta(days=365),
    ) -> FeedbackStore:
        """Connect and migrate to the newest schema."""
        engine = open_engine(url)
        revision = migrate(engine)
        log.info("feedback store on %s at schema revision %s", engine.dialect.name, revision)
        return cls(engine, record_retention, feedback_retention)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    # ------------------------------------------------------------------ answered requests
    def add_answers(self, records: Sequence[AnswerRecord]) -> None:
        """Insert records in one transaction; an id already stored keeps its first answer."""
        if not records:
            return
        rows = [
            {
                "request_id": r.request_id,
                "created_at": r.created_at,
                "model_name": r.model_name,
                "model_version": r.model_version,
                "question": r.question,
                "answer_text": r.answer_text,
                "answer_score": r.answer_score,
                "answer_start": r.answer_start,
                "answer_end": r.answer_end,
                "answer_passage": r.answer_passage,
                "abstained": r.abstained,
                "abstain_reason": r.abstain_reason,
                "passages": [p.as_json() for p in r.passages],
                "redacted": r.redacted,
                "has_feedback": False,
            }
            for r in records
        ]
        insert = postgresql.insert if self.backend == "postgresql" else sqlite.insert
        statement = insert(AnsweredRequest).on_conflict_do_nothing(index_elements=["request_id"])
        with self.engine.begin() as connection:
            connection.execute(statement, rows)

    def _live_cutoffs(self, now: datetime) -> tuple[datetime, datetime]:
        return now - self.record_retention, now - self.feedback_retention

    def get_answer(self, request_id: str, now: datetime | None = None) -> AnswerRecord:
        """The record of ``request_id``; :class:`UnknownRequestError` if absent or past its retention."""
        now = now or datetime.now(UTC)
        with self._sessions() as session:
            row = session.get(AnsweredRequest, request_id)
            if row is None or not self._retained(row, now):
                raise UnknownRequestError(request_id)
            return _to_record(row)

    def _retained(self, row: AnsweredRequest, now: datetime) -> bool:
        keep = self.feedback_retention if row.has_feedback else self.record_retention
        return _utc(row.created_at) >= now - keep

    # ------------------------------------------------------------------ feedback
    def add_feedback(self, submitted: FeedbackInput, now: datetime | None = None) -> FeedbackReceipt:
        """Record a verdict once per request: a replay of the same content returns the stored one.

        Committed before returning: an acknowledged verdict is on disk. Raises :class:`UnknownRequestError` and
        :class:`FeedbackConflictError`.
        """
        now = now or datetime.now(UTC)
        clean = submitted.redacted()
        fingerprint = clean.fingerprint()
        with self._sessions() as session:
            answer = session.get(AnsweredRequest, clean.request_id)
            if answer is None or not self._retained(answer, now):
                raise UnknownRequestError(clean.request_id)
            existing = session.scalar(select(Feedback).where(Feedback.request_id == clean.request_id))
            if existing is None:
                row = Feedback(
                    request_id=clean.request_id,
                    created_at=now,
                    model_version=answer.model_version,
                    verdict=clean.verdict,
                    corrected_answer=clean.corrected_answer,
                    rating=clean.rating,
                    comment=clean.comment,
                    fingerprint=fingerprint,
                )
                try:
                    session.add(row)
                    session.flush()
                    session.execute(
                        update(AnsweredRequest)
                        .where(AnsweredRequest.request_id == clean.request_id)
                        .values(has_feedback=True)
                    )
                    session.commit()
                except IntegrityError:  # a concurrent submission for the same request won the race
                    session.rollback()
                    existing = session.scalar(select(Feedback).where(Feedback.request_id == clean.request_id))
                    if existing is None:
                        raise
                else:
                    return FeedbackReceipt(_to_feedback(row), created=True, model_name=answer.model_name)
            if existing.fingerprint != fingerprint:
                raise FeedbackConflictError(_to_feedback(existing))
            return FeedbackReceipt(_to_feedback(existing), created=False, model_name=answer.model_name)

    def live_accuracy(self, window: int, versions: Sequence[str] | None = None) -> list[LiveAccuracy]:
        """Accuracy over the newest ``window`` verdicts of each model version (all versions with feedback)."""
        with self._sessions() as session:
            if versions is None:
                versions = list(session.scalars(select(Feedback.model_version).distinct()))
            out = []
            for version in versions:
                verdicts = list(
                    session.scalars(
                        select(Feedback.verdict)
                        .where(Feedback.model_version == version)
                        .order_by(Feedback.created_at.desc(), Feedback.id.desc())
                        .limit(window)
                    )
                )
                if verdicts:
                    credit = sum(VERDICT_CREDIT.get(v, 0.0) for v in verdicts)
                    out.append(LiveAccuracy(version, credit / len(verdicts), len(verdicts)))
            return out

    def feedback_count(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Feedback)) or 0)

    def iter_feedback(self, since: datetime | None = None) -> Iterator[FeedbackExample]:
        """Every verdict with the answer it judges, oldest first (for ``vqa feedback export``)."""
        statement = (
            select(Feedback, AnsweredRequest)
            .join(AnsweredRequest, AnsweredRequest.request_id == Feedback.request_id)
            .order_by(Feedback.created_at, Feedback.id)
        )
        if since is not None:
            statement = statement.where(Feedback.created_at >= since)
        with Session(self.engine) as session:
            for feedback, answer in session.execute(statement):
                yield FeedbackExample(_to_feedback(feedback), _to_record(answer))

    def newest_feedback(self, limit: int) -> list[FeedbackExample]:
        """The newest ``limit`` verdicts with their answers, newest first (the canary's feedback set)."""
        statement = (
            select(Feedback, AnsweredRequest)
            .join(AnsweredRequest, AnsweredRequest.request_id == Feedback.request_id)
            .order_by(Feedback.created_at.desc(), Feedback.id.desc())
            .limit(limit)
        )
        with Session(self.engine) as session:
            return [FeedbackExample(_to_feedback(f), _to_record(a)) for f, a in session.execute(statement)]

    # ------------------------------------------------------------------ retention
    def purge(self, now: datetime | None = None) -> int:
        """Delete what is past its retention period; returns answered requests deleted (with their feedback)."""
        now = now or datetime.now(UTC)
        record_cutoff, feedback_cutoff = self._live_cutoffs(now)
        with self.engine.begin() as connection:
            expired = (
                select(AnsweredRequest.request_id)
                .where(
                    ((AnsweredRequest.has_feedback.is_(False)) & (AnsweredRequest.created_at < record_cutoff))
                    | (AnsweredRequest.created_at < feedback_cutoff)
                )
                .scalar_subquery()
            )
            connection.execute(delete(Feedback).where(Feedback.request_id.in_(expired)))
            result = connection.execute(
                delete(AnsweredRequest).where(
                    ((AnsweredRequest.has_feedback.is_(False)) & (AnsweredRequest.created_at < record_cutoff))
                    | (AnsweredRequest.created_at < feedback_cutoff)
                )
            )
        return max(result.rowcount or 0, 0)
