"""Customer-style rewrites keep the answer and change only how the question is written."""

from __future__ import annotations

import random
import string

from training.augment import KEY_NEIGHBOURS, augment_examples, chatty, lower_no_punctuation, preamble, typos
from training.squad import Answer, QAExample

EXAMPLES = [
    QAExample("q1", "How much does a replacement card cost?", "A replacement card costs £5.", (Answer("£5", 25),)),
    QAExample("q2", "What's the daily ATM limit?", "No limit is stated here.", (), is_impossible=True),
]


def test_each_example_gets_distinct_rewrites_with_its_answer_kept() -> None:
    out = augment_examples(EXAMPLES, variants=3, seed=7)
    assert len(out) == 6
    for original in EXAMPLES:
        rewrites = [e for e in out if e.id.startswith(original.id + "~")]
        assert len(rewrites) == 3
        assert len({e.question for e in rewrites} | {original.question}) == 4, "every rewrite differs"
        for e in rewrites:
            assert e.context == original.context and e.answers == original.answers
            assert e.is_impossible == original.is_impossible


def test_rewrites_are_reproducible_from_the_seed() -> None:
    assert augment_examples(EXAMPLES, 4, seed=3) == augment_examples(EXAMPLES, 4, seed=3)
    assert augment_examples(EXAMPLES, 4, seed=3) != augment_examples(EXAMPLES, 4, seed=4)


def test_lower_case_without_punctuation() -> None:
    text = lower_no_punctuation("What's the fee, please?", random.Random(0))
    assert text == text.lower() and not any(c in text for c in "?,")


def test_typos_change_only_long_words_and_keep_their_first_letter() -> None:
    rng = random.Random(1)
    for _ in range(200):
        changed = typos("How long does a transfer take", rng)
        before, after = "How long does a transfer take".split(), changed.split()
        assert len(after) == len(before)
        diffs = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
        assert 1 <= len(diffs) <= 2
        assert all(len(b) >= 4 and a[0] == b[0] for b, a in diffs)


def test_keyboard_neighbours_are_adjacent_keys() -> None:
    assert set(KEY_NEIGHBOURS) == set(string.ascii_lowercase)
    assert {"a", "d", "w"} <= set(KEY_NEIGHBOURS["s"]) and "p" not in KEY_NEIGHBOURS["s"]


def test_chatty_and_preamble_keep_the_question_text() -> None:
    rng = random.Random(5)
    assert "ow much does a replacement card cost" in chatty("How much does a replacement card cost?", rng)
    long = preamble("How much does a replacement card cost?", rng)
    assert "How much does a replacement card cost?" in long and len(long) > 60
