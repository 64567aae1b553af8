"""Official SQuAD v1.1 EM/F1 against hand-computed cases."""

from __future__ import annotations

import pytest

from training.squad_metric import best_over_references, exact_match_score, f1_score, normalize_answer, squad_scores


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  a   fee of £5.00 ", "fee of £500"),
        ("An apple, the pear", "apple pear"),
        ("theatre", "theatre"),  # articles only as whole words
    ],
)
def test_normalization_matches_the_official_script(raw: str, normalized: str) -> None:
    assert normalize_answer(raw) == normalized


def test_f1_hand_computed() -> None:
    # pred tokens: monthly fee five ; ref: fee five pounds -> common 2, P=2/3, R=2/3, F1=2/3
    assert f1_score("monthly fee five", "the fee five pounds") == pytest.approx(2 / 3)
    assert f1_score("nothing shared", "fee") == 0.0
    assert f1_score("fee fee", "fee") == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeated tokens count once each


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert exact_match_score("The 120 days.", "120 days") == 1.0
    assert exact_match_score("120 day", "120 days") == 0.0


def test_max_over_references_and_missing_predictions() -> None:
    assert best_over_references("Denver Broncos", ["Broncos", "Denver Broncos"]) == (1.0, 1.0)
    scores = squad_scores(
        {"q1": "Denver Broncos", "q2": "Carolina"}, {"q1": ["Broncos"], "q2": ["Panthers"], "q3": ["x"]}
    )
    # q1: EM 0, F1 = 2*0.5*1/1.5 = 0.667; q2: 0; q3 missing: 0
    assert scores["questions"] == 3
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(100 * (2 / 3) / 3)
