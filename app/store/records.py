"""The values that go into and come out of the feedback store, and the redaction applied before anything is kept.

Every text that is stored (question, passages, answer, correction, comment) first goes through the same PII
detectors the rule checks use (``app.enrich.pii``: card numbers, IBANs, UK account numbers), all kinds at once:
what the rules would redact is never written to disk. Passage hashes are of the redacted text, so a hash cannot be
used to confirm a guessed card number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from app.enrich.pii import DETECTORS, find_pii, redact

Verdict = Literal["correct", "incorrect", "partially_correct"]
VERDICTS: tuple[Verdict, ...] = ("correct", "incorrect", "partially_correct")
# Live accuracy: a partially correct answer counts half.
VERDICT_CREDIT: dict[str, float] = {"correct": 1.0, "partially_correct": 0.5, "incorrect": 0.0}


def scrub(text: str) -> tuple[str, bool]:
    """``text`` with every payment identifier masked, and whether anything was."""
    matches = find_pii(text, list(DETECTORS))
    return (redact(text, matches), True) if matches else (text, False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class PassageRecord:
    """A passage the reader read: ``text`` is None when the per-request size cap left it out."""

    id: str
    doc_id: str | None  # the corpus document, for retrieved passages; None for the client's own contexts
    sha256: str
    chars: int
    text: str | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PassageRecord:
        return cls(
            id=str(data["id"]),
            doc_id=data.get("doc_id"),
            sha256=str(data["sha256"]),
            chars=int(data["chars"]),
            text=data.get("text"),
        )


@dataclass(frozen=True, slots=True)
class AnswerRecord:
    """One answered request, redacted, as stored."""

    request_id: str
    created_at: datetime
    model_name: str
    model_version: str
    question: str
    answer_text: str | None
    answer_score: float
    answer_start: int | None
    answer_end: int | None
    answer_passage: int | None
    abstained: bool
    abstain_reason: str | None
    passages: list[PassageRecord] = field(default_factory=list)
    redacted: bool = False


@dataclass(frozen=True, slots=True)
class AnsweredPassage:
    """A passage as the reader saw it (unredacted), before it becomes a :class:`PassageRecord`."""

    id: str
    text: str
    doc_id: str | None = None


@dataclass(frozen=True, slots=True)
class AnswerDraft:
    """What /answer knows about one answered request, unredacted; :func:`build_answer_record` makes it storable."""

    request_id: str
    created_at: datetime
    model_name: str
    model_version: str
    question: str
    passages: Sequence[AnsweredPassage]
    answer_text: str | None
    answer_score: float
    answer_start: int | None
    answer_end: int | None
    answer_passage: int | None
    abstained: bool
    abstain_reason: str | None


def build_answer_record(draft: AnswerDraft, max_passage_chars: int) -> AnswerRecord:
    """Redact, hash and cap what one answer needs to become training data.

    Passage texts are kept up to ``max_passage_chars`` in total, the answer's own passage first (training needs
    it); the others keep their id, hash and length. Redaction masks characters one for one, so the answer's
    offsets still point into the stored passage.
    """
    passages = draft.passages
    answer_passage = draft.answer_passage
    any_redacted = False
    clean_question, changed = scrub(draft.question)
    any_redacted |= changed
    order = list(range(len(passages)))
    if answer_passage is not None and 0 <= answer_passage < len(passages):
        order.remove(answer_passage)
        order.insert(0, answer_passage)
    budget = max_passage_chars
    kept: dict[int, str] = {}
    records: list[PassageRecord | None] = [None] * len(passages)
    for i in order:
        text, changed = scrub(passages[i].text)
        any_redacted |= changed
        if len(text) <= budget:
            kept[i] = text
            budget -= len(text)
        records[i] = PassageRecord(
            id=passages[i].id[:200],
            doc_id=passages[i].doc_id,
            sha256=sha256_text(text),
            chars=len(text),
            text=kept.get(i),
        )
    clean_answer = None
    if draft.answer_text is not None:
        clean_answer, changed = scrub(draft.answer_text)
        any_redacted |= changed
        stored = kept.get(answer_passage) if answer_passage is not None else None
        start, end = draft.answer_start, draft.answer_end
        if stored is not None and start is not None and end is not None and stored[start:end] != clean_answer:
            # The answer alone can mask differently from the passage it sits in: keep the passage's characters.
            clean_answer = stored[start:end]
    return AnswerRecord(
        request_id=draft.request_id,
        created_at=draft.created_at,
        model_name=draft.model_name,
        model_version=draft.model_version,
        question=clean_question,
        answer_text=clean_answer,
        answer_score=draft.answer_score,
        answer_start=draft.answer_start,
        answer_end=draft.answer_end,
        answer_passage=answer_passage,
        abstained=draft.abstained,
        abstain_reason=draft.abstain_reason[:300] if draft.abstain_reason else None,
        passages=[r for r in records if r is not None],
        redacted=any_redacted,
    )


@dataclass(frozen=True, slots=True)
class FeedbackInput:
    """One verdict as submitted (before redaction)."""

    request_id: str
    verdict: Verdict
    corrected_answer: str | None = None
    rating: int | None = None
    comment: str | None = None

    def redacted(self) -> FeedbackInput:
        corrected = scrub(self.corrected_answer)[0] if self.corrected_answer is not None else None
        comment = scrub(self.comment)[0] if self.comment is not None else None
        return FeedbackInput(self.request_id, self.verdict, corrected, self.rating, comment)

    def fingerprint(self) -> str:
        """Identifies the submitted fields: the same feedback sent twice has the same fingerprint."""
        fields = [self.request_id, self.verdict, self.corrected_answer, self.rating, self.comment]
        return sha256_text(json.dumps(fields, ensure_ascii=False))


@dataclass(frozen=True, slots=True)
class StoredFeedback:
    id: int
    request_id: str
    created_at: datetime
    model_version: str
    verdict: str
    corrected_answer: str | None
    rating: int | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class FeedbackReceipt:
    """What recording a verdict did: ``created`` False for a replay of the same feedback."""

    feedback: StoredFeedback
    created: bool
    model_name: str


@dataclass(frozen=True, slots=True)
class LiveAccuracy:
    """Share of correct answers (a partial one counts half) over the newest ``samples`` verdicts of one version."""

    model_version: str
    accuracy: float
    samples: int


@dataclass(frozen=True, slots=True)
class FeedbackExample:
    """A verdict joined with the answer it judges: one row for ``vqa feedback export``."""

    feedback: StoredFeedback
    answer: AnswerRecord
