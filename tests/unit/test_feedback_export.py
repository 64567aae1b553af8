"""Verdicts -> SQuAD v2 examples: corrections found in the stored passage, wrong answers unanswerable, by doc."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.store.records import AnswerRecord, FeedbackExample, PassageRecord, StoredFeedback, sha256_text
from training.feedback_export import build, example_from_feedback, export, in_holdout
from training.squad import load_examples

DISPUTES = "You can dispute a card payment within 120 days. Refunds are credited within 5 working days."
FEES = "Replacing a lost card costs 5 GBP; a stolen card is replaced free."
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def passage(text: str, pid: str, doc: str | None = None) -> PassageRecord:
    return PassageRecord(id=pid, doc_id=doc, sha256=sha256_text(text), chars=len(text), text=text)


def row(
    fid: int,
    verdict: str,
    corrected: str | None = None,
    *,
    question: str = "How long do I have to dispute a payment?",
    answer: str | None = "5 working days",
    passages: tuple[PassageRecord, ...] = (passage(FEES, "fees", "fees-doc"), passage(DISPUTES, "disputes", "faq")),
    answer_passage: int | None = 1,
    at: datetime = T0,
) -> FeedbackExample:
    start = passages[answer_passage].text.index(answer) if answer and answer_passage is not None else None  # type: ignore[union-attr]
    record = AnswerRecord(
        request_id=f"r{fid}",
        created_at=at,
        model_name="m",
        model_version="v1",
        question=question,
        answer_text=answer,
        answer_score=0.4,
        answer_start=start,
        answer_end=start + len(answer) if start is not None and answer else None,
        answer_passage=answer_passage if answer else None,
        abstained=answer is None,
        abstain_reason=None if answer else "low_confidence",
        passages=list(passages),
    )
    feedback = StoredFeedback(fid, f"r{fid}", at, "v1", verdict, corrected, None, None)
    return FeedbackExample(feedback, record)


def test_a_correction_is_located_in_the_stored_passage_it_came_from() -> None:
    example, skipped = example_from_feedback(row(1, "incorrect", "120 Days"))
    assert skipped is None and example is not None
    assert example.document == "doc:faq" and example.context == DISPUTES
    assert example.answer_text == "120 days", "case-insensitive match keeps the passage's own characters"
    assert example.answer_start is not None
    assert DISPUTES[example.answer_start : example.answer_start + len("120 days")] == "120 days"


def test_a_correction_found_in_another_passage_moves_the_example_there() -> None:
    example, _ = example_from_feedback(row(1, "partially_correct", "5 GBP"))
    assert example is not None and example.context == FEES and example.document == "doc:fees-doc"


def test_wrong_answers_without_correction_become_unanswerable_for_their_passage() -> None:
    example, _ = example_from_feedback(row(1, "incorrect"))
    assert example is not None and example.is_impossible and example.context == DISPUTES


def test_what_cannot_become_an_example_is_skipped_with_a_reason() -> None:
    assert example_from_feedback(row(1, "incorrect", "30 days"))[1] == "correction_not_in_passages"
    assert example_from_feedback(row(2, "partially_correct"))[1] == "partially_correct_without_correction"
    assert example_from_feedback(row(3, "incorrect", answer=None))[1] == "abstained_without_correction"
    confirmed_abstention, _ = example_from_feedback(row(4, "correct", answer=None))
    assert confirmed_abstention is not None and confirmed_abstention.is_impossible
    capped = (PassageRecord("fees", "fees-doc", "0" * 64, 60, None), passage(DISPUTES, "disputes", "faq"))
    assert example_from_feedback(row(5, "incorrect", "5 GBP", passages=capped))[1] == "correction_not_in_passages"


def test_duplicates_keep_the_newest_verdict_and_documents_never_straddle_the_split(tmp_path: Path) -> None:
    rows = [
        row(1, "correct", at=T0),
        row(2, "incorrect", "120 days", at=T0 + timedelta(hours=1)),  # same question and passage: wins
        row(3, "correct", question="How fast are refunds credited?", at=T0),
    ]
    for i in range(40):  # client contexts: documents named by their text hash
        text = f"Branch {i} opens at {i % 12 + 7} am on weekdays."
        rows.append(row(100 + i, "correct", question=f"When does branch {i} open?", answer=f"{i % 12 + 7} am",
                        passages=(passage(text, "0"),), answer_passage=0))  # fmt: skip
    train, holdout, report = build(rows, holdout_share=0.25, seed=3)
    assert report.duplicates == 1 and report.examples == 42
    dispute = next(e for e in train + holdout if e.question.startswith("How long"))
    assert dispute.answer_text == "120 days" and dispute.verdict == "incorrect"
    assert {e.document for e in train}.isdisjoint({e.document for e in holdout})
    assert 4 <= len(holdout) <= 20, "about a quarter of the documents are held out"
    assert all(in_holdout(e.document, 0.25, 3) for e in holdout)

    report = export(rows, tmp_path, holdout_share=0.25, seed=3)
    loaded = load_examples(tmp_path / "train.json") + load_examples(tmp_path / "holdout.json")
    assert len(loaded) == report.examples == 42
    for ex in loaded:
        for answer in ex.answers:
            assert ex.context[answer.start : answer.end] == answer.text
    assert json.loads((tmp_path / "report.json").read_text())["duplicates"] == 1
    assert json.loads((tmp_path / "train.json").read_text())["version"] == "v2.0"
