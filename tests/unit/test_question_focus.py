"""Long questions keep the part that asks (the same cut in training and serving), on the real tokenizer."""

from __future__ import annotations

import pytest

from app.qa.windows import WindowConfig, encode_windows, focus_question

PREAMBLE = (
    "hi there, hope you're well. we're moving house next week and the solicitor has just emailed to say the "
    "completion money has to be with them by friday, my partner is away and I've never done this before. "
)


def _tokens(tokenizer, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_short_question_is_kept_whole(tokenizer) -> None:  # type: ignore[no-untyped-def]
    question = "  How much does a CHAPS payment cost?  "
    assert focus_question(tokenizer, question, 64) == question.strip()


def test_long_preamble_keeps_the_question_at_the_end(tokenizer) -> None:  # type: ignore[no-untyped-def]
    question = PREAMBLE * 2 + "How much does a CHAPS payment cost? thanks so much, Jo"
    kept = focus_question(tokenizer, question, 32)
    assert kept.endswith("How much does a CHAPS payment cost?")
    assert _tokens(tokenizer, kept) <= 32


def test_sentences_before_the_question_are_kept_while_they_fit(tokenizer) -> None:  # type: ignore[no-untyped-def]
    question = PREAMBLE * 3 + "I lost my card. What does a replacement cost?"
    kept = focus_question(tokenizer, question, 24)
    assert kept == "I lost my card. What does a replacement cost?"


def test_question_without_a_question_mark_is_found_by_its_opening_word(tokenizer) -> None:  # type: ignore[no-untyped-def]
    question = PREAMBLE * 2 + "how long does a transfer to another bank take. cheers"
    kept = focus_question(tokenizer, question, 20)
    assert kept.startswith("how long does a transfer")


def test_question_first_then_a_long_story_keeps_the_question(tokenizer) -> None:  # type: ignore[no-untyped-def]
    question = "What is the daily ATM limit? " + PREAMBLE * 3
    kept = focus_question(tokenizer, question, 16)
    assert kept == "What is the daily ATM limit?"


@pytest.mark.parametrize("text", ["word " * 200, "a? " * 200, "?" * 500, "how " * 300, "\n\n" + "x. " * 300])
def test_no_asking_sentence_or_a_huge_one_keeps_the_tail_within_budget(tokenizer, text: str) -> None:  # type: ignore[no-untyped-def]
    kept = focus_question(tokenizer, text, 16)
    assert kept and _tokens(tokenizer, kept) <= 16
    assert text.strip().endswith(kept.split()[-1])


def test_windows_use_the_focused_question(tokenizer) -> None:  # type: ignore[no-untyped-def]
    config = WindowConfig(max_seq_len=96, stride=16, max_question_tokens=24)
    question = PREAMBLE * 2 + "What does a CHAPS payment cost?"
    windows = encode_windows(tokenizer, question, ["A CHAPS payment costs £25."], config)
    (window,) = windows
    head = tokenizer.decode(window.input_ids[1 : window.context_start - 1])
    assert head == "what does a chaps payment cost?"
    assert len(window) <= config.max_seq_len
