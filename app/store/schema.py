"""Tables of the feedback store. Changes go through an Alembic revision in ``app/store/migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

JsonColumn = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class AnsweredRequest(Base):
    """What one /answer response needs for feedback to become training data, PII already redacted.

    ``passages`` is a list of ``{"id", "doc_id", "sha256", "chars", "text"}``; ``text`` is null for passages left
    out by the per-request size cap (their hash still names them). Hashes are of the redacted text.
    """

    __tablename__ = "answered_requests"

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(100))
    question: Mapped[str] = mapped_column(Text)
    answer_text: Mapped[str | None] = mapped_column(Text)
    answer_score: Mapped[float] = mapped_column(Float)
    answer_start: Mapped[int | None] = mapped_column(Integer)
    answer_end: Mapped[int | None] = mapped_column(Integer)
    answer_passage: Mapped[int | None] = mapped_column(Integer)  # index into passages
    abstained: Mapped[bool] = mapped_column(Boolean)
    abstain_reason: Mapped[str | None] = mapped_column(String(300))
    passages: Mapped[list[dict[str, Any]]] = mapped_column(JsonColumn)
    redacted: Mapped[bool] = mapped_column(Boolean)  # PII was masked somewhere in this record
    has_feedback: Mapped[bool] = mapped_column(Boolean, default=False)


class Feedback(Base):
    """One verdict per answered request (idempotent by ``request_id``)."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("answered_requests.request_id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    model_version: Mapped[str] = mapped_column(String(100))
    verdict: Mapped[str] = mapped_column(String(20))
    corrected_answer: Mapped[str | None] = mapped_column(Text)
    rating: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the submitted fields, for idempotent replays

    __table_args__ = (Index("ix_feedback_version_created", "model_version", "created_at"),)
