"""Property-based tests (hypothesis) of windows and span offsets on arbitrary unicode, on the real tokenizer.

Contexts mix right-to-left scripts, combining marks, zero-width joiners, emoji with modifiers, CJK, currency and
runs of odd whitespace with whatever else hypothesis draws. For every such context: each window fits the model,
every context token of the full text sits in some window, and every span decoded from any pair of context tokens
slices its context exactly, the same span the training labels point at. ``VQA_HYPOTHESIS_EXAMPLES`` (default
150) sets the examples per property.
"""

from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from app.qa.reader import Reader, WindowPrediction
from app.qa.windows import Window, WindowConfig, encode_windows, label_window

PIECES = [
    "Refunds take 5 working days.",
    "مرحبا بكم في البنك",  # Arabic (RTL)
    "שלום, העמלה היא 5 ₪",  # Hebrew (RTL) with a currency sign
    "e\u0301",  # e + combining acute
    "Zu\u0308rich",  # combining diaeresis inside a word
    "a\u0302\u0323\u0308",  # a stack of combining marks
    "👨\u200d👩\u200d👧\u200d👦",  # ZWJ family
    "👍🏽",  # emoji + skin-tone modifier
    "🏳️\u200d🌈",  # flag sequence with a variation selector and ZWJ
    "\u200b",  # zero-width space
    "\u200f",  # right-to-left mark
    "\ufeff",  # byte-order mark inside text
    "   ",
    "\t\t",
    "\n\n\n",
    "\u00a0\u2003\u3000",  # no-break, em and ideographic spaces
    "中文的银行卡年费是十英镑",
    "£1,234.56",
    "IBAN GB29 NWBK 6016 1331 9268 19",
    "x",
    " ",
]

unicode_text = st.lists(
    st.one_of(st.sampled_from(PIECES), st.text(min_size=1, max_size=6)), min_size=1, max_size=40
).map("".join)
SMALL = WindowConfig(max_seq_len=40, stride=12, max_question_tokens=12)
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("VQA_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _context_token_spans(window: Window) -> list[tuple[int, int]]:
    return window.offsets[window.context_start : window.context_end]


@PROPERTY_SETTINGS
@given(context=unicode_text, question=unicode_text)
def test_windows_fit_and_cover_every_context_token(tokenizer, context: str, question: str) -> None:  # type: ignore[no-untyped-def]
    assume(question.strip())
    windows = encode_windows(tokenizer, question, [context], SMALL)
    everything = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    if not everything:
        assert windows == [], "a context without tokens gives no window"
        return
    assert windows, "a context with tokens gives at least one window"
    covered: set[tuple[int, int]] = set()
    for window in windows:
        assert len(window) <= SMALL.max_seq_len
        spans = _context_token_spans(window)
        assert spans, "every window holds context"
        for start, end in spans:
            assert 0 <= start <= end <= len(context)
        assert [s for s, _ in spans] == sorted(s for s, _ in spans), "offsets run forward"
        covered.update(spans)
    missing = [tuple(span) for span in everything if tuple(span) not in covered]
    assert not missing, f"context tokens in no window: {missing[:5]}"
    for before, after in zip(windows, windows[1:], strict=False):
        assert _context_token_spans(after)[0][0] <= _context_token_spans(before)[-1][1], "no gap between windows"


@PROPERTY_SETTINGS
@given(context=unicode_text, picks=st.tuples(st.integers(0, 10_000), st.integers(0, 10_000), st.integers(0, 10_000)))
def test_decoded_spans_slice_their_context_and_match_the_labels(  # type: ignore[no-untyped-def]
    tokenizer, context: str, picks: tuple[int, int, int]
) -> None:
    windows = encode_windows(tokenizer, "What is it?", ["", context], SMALL)
    assume(windows)
    window = windows[picks[0] % len(windows)]
    first, last = window.context_start, window.context_end - 1
    start = first + picks[1] % (last - first + 1)
    end = start + picks[2] % (last - start + 1)
    predictions = [
        WindowPrediction([(math.log(0.9), start, end)] if w is window else [], math.log(0.01)) for w in windows
    ]
    result = Reader("unused").postprocess(["", context], windows, predictions, min_score=0.0)
    answer = result.answers[0]
    assert answer.context_index == 1
    assert 0 <= answer.start <= answer.end <= len(context)
    assert context[answer.start : answer.end] == answer.text
    assert answer.text, "a span of at least one token is never empty"
    assert answer.text == answer.text.strip() or not answer.text.strip(), "no surrounding whitespace"
    # training labels and serving decode agree: the label of this span decodes to the same characters
    label_start, label_end = label_window(window, answer.start, answer.end)
    assert (window.offsets[label_start][0], window.offsets[label_end][1]) == (answer.start, answer.end)
