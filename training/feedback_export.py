"""``vqa feedback export``: verdicts on live answers -> SQuAD v2 training and hold-out files, split by document.

Per verdict (joined with the stored, redacted answer record):

* ``correct``: the served span, confirmed (an abstention confirmed correct: unanswerable for the first passage);
* ``incorrect`` / ``partially_correct`` with a correction: the correction located in the stored passages (the
  answer's passage first; exact, then case-insensitive) becomes the answer; not found in any passage: skipped;
* ``incorrect`` without a correction on an answer: unanswerable for the passage that answer came from;
* anything else (a partial verdict with no correction, a wrong abstention with no correction): skipped.

Examples are deduplicated by (normalised question, passage hash), the newest verdict winning, and split by
document (the corpus document of a retrieved passage, else the passage's hash) so no document is in both files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from app.store.records import FeedbackExample, PassageRecord
from training.squad_metric import normalize_answer


@dataclass(frozen=True, slots=True)
class ExportExample:
    id: str
    question: str
    context: str
    document: str
    answer_text: str | None  # None: unanswerable
    answer_start: int | None
    created_at: datetime
    verdict: str

    @property
    def is_impossible(self) -> bool:
        return self.answer_text is None


@dataclass(slots=True)
class ExportReport:
    verdicts: int = 0
    examples: int = 0
    answerable: int = 0
    unanswerable: int = 0
    duplicates: int = 0
    train: int = 0
    holdout: int = 0
    train_documents: int = 0
    holdout_documents: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["skipped"] = dict(self.skipped)
        return out


def _document(passage: PassageRecord) -> str:
    return f"doc:{passage.doc_id}" if passage.doc_id else f"text:{passage.sha256[:16]}"


def _locate(answer: str, passages: list[tuple[int, PassageRecord]]) -> tuple[PassageRecord, int, str] | None:
    """The first passage holding ``answer`` (exact, then ignoring case): (passage, start, text as written there)."""
    for _, passage in passages:
        if passage.text and (start := passage.text.find(answer)) >= 0:
            return passage, start, answer
    folded = answer.casefold()
    for _, passage in passages:
        if passage.text and len(passage.text) == len(passage.text.casefold()):
            start = passage.text.casefold().find(folded)
            if start >= 0:
                return passage, start, passage.text[start : start + len(answer)]
    return None


def example_from_feedback(row: FeedbackExample) -> tuple[ExportExample | None, str | None]:
    """The training example a verdict stands for, or (None, reason it was skipped)."""
    feedback, answer = row.feedback, row.answer
    passages = list(enumerate(answer.passages))
    if answer.answer_passage is not None:  # the answer's own passage is searched first
        passages.sort(key=lambda item: item[0] != answer.answer_passage)
    answered = (
        not answer.abstained
        and answer.answer_passage is not None
        and answer.answer_start is not None
        and answer.answer_end is not None
    )
    own = answer.passages[answer.answer_passage] if answered and answer.answer_passage is not None else None

    def make(passage: PassageRecord, text: str | None, start: int | None) -> ExportExample:
        assert passage.text is not None
        return ExportExample(
            id=f"feedback-{feedback.id}",
            question=answer.question,
            context=passage.text,
            document=_document(passage),
            answer_text=text,
            answer_start=start,
            created_at=feedback.created_at,
            verdict=feedback.verdict,
        )

    if feedback.corrected_answer:
        found = _locate(feedback.corrected_answer, passages)
        if found is None:
            return None, "correction_not_in_passages"
        passage, start, text = found
        return make(passage, text, start), None
    if feedback.verdict == "correct":
        if answered and own is not None and own.text is not None:
            assert answer.answer_start is not None and answer.answer_end is not None
            return make(own, own.text[answer.answer_start : answer.answer_end], answer.answer_start), None
        if answer.abstained:
            first = next((p for _, p in passages if p.text), None)
            return (make(first, None, None), None) if first else (None, "passage_not_stored")
        return None, "passage_not_stored"
    if feedback.verdict == "incorrect" and answered:
        if own is None or own.text is None:
            return None, "passage_not_stored"
        return make(own, None, None), None
    if feedback.verdict == "incorrect":
        return None, "abstained_without_correction"
    return None, "partially_correct_without_correction"


def in_holdout(document: str, share: float, seed: int) -> bool:
    """A stable choice per document: the same document always lands on the same side for a given seed."""
    digest = hashlib.sha256(f"{seed}:{document}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def build(rows: Iterable[FeedbackExample], holdout_share: float, seed: int = 0) -> tuple[
    list[ExportExample], list[ExportExample], ExportReport
]:  # fmt: skip
    """Examples from verdicts, deduplicated (newest wins) and split by document into (train, holdout)."""
    report = ExportReport()
    newest: dict[tuple[str, str], ExportExample] = {}
    for row in rows:
        report.verdicts += 1
        example, skipped = example_from_feedback(row)
        if example is None:
            report.skipped[skipped or "unknown"] += 1
            continue
        key = (normalize_answer(example.question), hashlib.sha256(example.context.encode()).hexdigest())
        if key in newest:
            report.duplicates += 1
            if newest[key].created_at > example.created_at:
                continue
        newest[key] = example
    examples = sorted(newest.values(), key=lambda e: (e.document, e.id))
    train = [e for e in examples if not in_holdout(e.document, holdout_share, seed)]
    holdout = [e for e in examples if in_holdout(e.document, holdout_share, seed)]
    report.examples = len(examples)
    report.answerable = sum(not e.is_impossible for e in examples)
    report.unanswerable = sum(e.is_impossible for e in examples)
    report.train, report.holdout = len(train), len(holdout)
    report.train_documents = len({e.document for e in train})
    report.holdout_documents = len({e.document for e in holdout})
    return train, holdout, report


def to_squad_v2(examples: Iterable[ExportExample], title: str = "feedback") -> dict[str, Any]:
    """SQuAD v2 JSON: one article per document, one paragraph per distinct passage."""
    articles: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for e in examples:
        paragraphs = articles.setdefault(e.document, {})
        qa: dict[str, Any] = {"id": e.id, "question": e.question, "is_impossible": e.is_impossible, "answers": []}
        if not e.is_impossible:
            qa["answers"] = [{"text": e.answer_text, "answer_start": e.answer_start}]
        paragraphs.setdefault(e.context, []).append(qa)
    return {
        "version": "v2.0",
        "source": title,
        "data": [
            {"title": document, "paragraphs": [{"context": c, "qas": qas} for c, qas in paragraphs.items()]}
            for document, paragraphs in articles.items()
        ],
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=1)
        handle.write("\n")
    os.replace(tmp, path)


def export(rows: Iterable[FeedbackExample], out_dir: Path, holdout_share: float, seed: int = 0) -> ExportReport:
    """Write ``train.json``, ``holdout.json`` (SQuAD v2) and ``report.json`` into ``out_dir``."""
    train, holdout, report = build(rows, holdout_share, seed)
    write_json(out_dir / "train.json", to_squad_v2(train, "feedback-train"))
    write_json(out_dir / "holdout.json", to_squad_v2(holdout, "feedback-holdout"))
    write_json(out_dir / "report.json", report.as_dict())
    return report
