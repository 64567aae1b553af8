"""Windows, labels and character offsets on the real WordPiece tokenizer (no model weights)."""

from __future__ import annotations

import math

import pytest

from app.qa.abstention import AbstentionReason
from app.qa.reader import Reader, WindowPrediction
from app.qa.windows import Window, WindowConfig, encode_windows, label_window

SMALL = WindowConfig(max_seq_len=48, stride=16, max_question_tokens=16)
LONG_CONTEXT = " ".join(
    f"Clause {i}: the overdraft buffer for account type {i} is {i * 5} pounds." for i in range(1, 30)
)


def _reader() -> Reader:
    return Reader("unused")  # postprocess needs no weights


def _predict(windows: list[Window], spans: dict[int, tuple[int, int, float]]) -> list[WindowPrediction]:
    """Predictions that put the given (start token, end token, probability) in the given windows."""
    return [
        WindowPrediction([(math.log(spans[i][2]), spans[i][0], spans[i][1])] if i in spans else [], math.log(0.05))
        for i in range(len(windows))
    ]


def test_long_context_is_cut_into_overlapping_windows(tokenizer) -> None:  # type: ignore[no-untyped-def]
    windows = encode_windows(tokenizer, "What is the buffer?", [LONG_CONTEXT], SMALL)
    assert len(windows) > 3
    assert all(len(w) <= SMALL.max_seq_len for w in windows)
    for a, b in zip(windows, windows[1:], strict=False):
        # the next window starts before the previous one ends: they overlap
        assert b.offsets[b.context_start][0] < a.offsets[a.context_end - 1][1]
    # together they cover the whole context
    assert windows[0].offsets[windows[0].context_start][0] == 0
    assert windows[-1].offsets[windows[-1].context_end - 1][1] == len(LONG_CONTEXT)


def test_span_across_a_window_boundary_is_found_whole_and_merged(tokenizer) -> None:  # type: ignore[no-untyped-def]
    windows = encode_windows(tokenizer, "What is the buffer?", [LONG_CONTEXT], SMALL)
    first = windows[0]
    # An answer made of the last two context tokens of window 0 and the two tokens after them.
    cut = first.context_end - 2
    answer_start = first.offsets[cut][0]
    answer_end = windows[1].offsets[
        next(
            i
            for i in range(windows[1].context_start, windows[1].context_end)
            if windows[1].offsets[i][0] >= first.offsets[first.context_end - 1][1]
        )
        + 1
    ][1]
    assert label_window(first, answer_start, answer_end) == (0, 0), "window 0 only holds part of the answer"
    holders = {i: label_window(w, answer_start, answer_end) for i, w in enumerate(windows)}
    holders = {i: span for i, span in holders.items() if span != (0, 0)}
    assert holders, "some later window must hold the whole answer"
    spans = {i: (s, e, 0.8 - 0.1 * n) for n, (i, (s, e)) in enumerate(sorted(holders.items()))}
    result = _reader().postprocess([LONG_CONTEXT], windows, _predict(windows, spans), top_k=5)
    assert len(result.answers) == 1, "the same span seen in overlapping windows is one answer"
    best = result.answers[0]
    assert (best.start, best.end) == (answer_start, answer_end)
    assert LONG_CONTEXT[best.start : best.end] == best.text
    assert best.score == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("context", "answer"),
    [
        ("Die Gebühr in Zürich beträgt 5 Franken.", "Zürich"),
        ("Our naïve café fee is £5.00 per month.", "£5.00 per month"),
        ("Payments 😀 arrive   within \t two\n\nworking days 👍🏽 usually.", "two\n\nworking days"),
        ("Emoji first 👍🏽 then the answer: Visa Platinum card.", "Visa Platinum card"),
        ("   leading and trailing spaces around the IBAN number   ", "IBAN number"),
    ],
)
def test_offsets_slice_the_original_context(tokenizer, context: str, answer: str) -> None:  # type: ignore[no-untyped-def]
    start = context.index(answer)
    windows = encode_windows(tokenizer, "question?", [context], WindowConfig())
    assert len(windows) == 1
    w = windows[0]
    for s, e in w.offsets[w.context_start : w.context_end]:
        assert 0 <= s < e <= len(context)
        assert context[s:e].strip() == context[s:e], "token offsets never include surrounding whitespace"
    s_tok, e_tok = label_window(w, start, start + len(answer))
    result = _reader().postprocess([context], windows, _predict(windows, {0: (s_tok, e_tok, 0.9)}))
    got = result.answers[0]
    assert context[got.start : got.end] == got.text == answer


def test_empty_and_whitespace_contexts_give_no_window_and_keep_indices(tokenizer) -> None:  # type: ignore[no-untyped-def]
    contexts = ["", "  \n\t ", "The card limit is 3,000 pounds."]
    windows = encode_windows(tokenizer, "What is the limit?", contexts, WindowConfig())
    assert [w.context_index for w in windows] == [2]
    answer = "3,000 pounds"
    start = contexts[2].index(answer)
    s, e = label_window(windows[0], start, start + len(answer))
    result = _reader().postprocess(contexts, windows, _predict(windows, {0: (s, e, 0.7)}))
    assert result.answers[0].context_index == 2 and result.answers[0].text == answer


def test_only_whitespace_contexts_abstain_with_a_reason(tokenizer) -> None:  # type: ignore[no-untyped-def]
    windows = encode_windows(tokenizer, "What is the limit?", [" ", "\n"], WindowConfig())
    result = _reader().postprocess([" ", "\n"], windows, [])
    assert windows == [] and result.abstained and result.answers == []
    assert result.abstain_reason is AbstentionReason.NO_CONTEXT_TEXT


def test_low_score_abstains_and_threshold_zero_never_does(tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = "Transfers take one working day."
    windows = encode_windows(tokenizer, "How long?", [context], WindowConfig())
    preds = _predict(windows, {0: (windows[0].context_start + 2, windows[0].context_start + 4, 0.2)})
    low = _reader().postprocess([context], windows, preds, min_score=0.5)
    assert low.abstained and low.answers == [] and low.best_score == pytest.approx(0.2)
    assert not _reader().postprocess([context], windows, preds, min_score=0.0).abstained


def test_top_k_ranks_across_contexts(tokenizer) -> None:  # type: ignore[no-untyped-def]
    contexts = ["Fee A is 2 pounds.", "Fee B is 7 pounds."]
    windows = encode_windows(tokenizer, "fee?", contexts, WindowConfig())
    spans = {
        0: (windows[0].context_start + 3, windows[0].context_start + 4, 0.3),
        1: (windows[1].context_start + 3, windows[1].context_start + 4, 0.6),
    }
    result = _reader().postprocess(contexts, windows, _predict(windows, spans), top_k=2)
    assert [a.context_index for a in result.answers] == [1, 0]
    assert [a.text for a in result.answers] == ["7 pounds", "2 pounds"]


def test_long_question_is_truncated_to_its_token_budget(tokenizer) -> None:  # type: ignore[no-untyped-def]
    question = "why " * 200
    windows = encode_windows(tokenizer, question, ["Short context here."], SMALL)
    assert len(windows) == 1 and len(windows[0]) <= SMALL.max_seq_len
    assert windows[0].context_start == SMALL.max_question_tokens + 2  # [CLS] q(16) [SEP]


def test_label_marks_answers_outside_the_window_as_cls(tokenizer) -> None:  # type: ignore[no-untyped-def]
    windows = encode_windows(tokenizer, "What is the buffer?", [LONG_CONTEXT], SMALL)
    target = "145 pounds"  # clause 29: only in the last window
    start = LONG_CONTEXT.index(target)
    labels = [label_window(w, start, start + len(target)) for w in windows]
    assert labels[0] == (0, 0)
    s, e = labels[-1]
    assert s > 0 and LONG_CONTEXT[windows[-1].offsets[s][0] : windows[-1].offsets[e][1]] == target


def test_window_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="max_seq_len"):
        WindowConfig(max_seq_len=8)
    with pytest.raises(ValueError, match="max_question_tokens"):
        WindowConfig(max_seq_len=64, max_question_tokens=40)
