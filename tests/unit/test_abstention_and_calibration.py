"""Served numbers with abstention, the threshold policies, and temperature fitting on synthetic logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.abstention import (
    QuestionOutcome,
    choose_threshold,
    outcomes,
    precision_coverage_curve,
    served_report,
)
from training.calibrate import QuestionLogits, ThresholdPolicy, best_scores, expected_calibration_error, fit
from training.squad import Answer, QAExample

ITEMS = [
    QuestionOutcome(True, 0.9, 1.0, 1.0),
    QuestionOutcome(True, 0.6, 0.0, 0.5),
    QuestionOutcome(True, 0.3, 1.0, 1.0),
    QuestionOutcome(True, 0.1, 0.0, 0.0),
    QuestionOutcome(False, 0.05, 0.0, 0.0),
    QuestionOutcome(False, 0.5, 0.0, 0.0),
]


def test_served_report_counts_both_abstention_errors() -> None:
    report = served_report(ITEMS, threshold=0.4)
    assert (report.answerable, report.unanswerable) == (4, 2)
    assert report.top_span_em == 50.0 and report.top_span_f1 == 62.5  # no threshold
    assert report.served_em == 25.0 and report.served_f1 == 37.5  # abstentions score 0
    assert report.answerable_abstained == 50.0  # 0.3 and 0.1 abstained on
    assert report.unanswerable_abstained == 50.0  # 0.05 abstained on, 0.5 answered (an error)
    assert report.overall_f1 == pytest.approx(100 * (1.0 + 0.5 + 1.0) / 6)


def test_threshold_meets_both_limits_when_it_can() -> None:
    threshold, met = choose_threshold(ITEMS, max_answerable_abstained=50.0, min_unanswerable_abstained=50.0)
    report = served_report(ITEMS, threshold)
    assert met and report.answerable_abstained <= 50.0 and report.unanswerable_abstained >= 50.0


def test_threshold_says_when_no_value_meets_the_limits() -> None:
    # abstaining on every unanswerable question (scores up to 0.5) costs two of four answerable ones
    threshold, met = choose_threshold(ITEMS, max_answerable_abstained=0.0, min_unanswerable_abstained=100.0)
    assert not met and 0.0 <= threshold <= 1.0


def test_precision_coverage_curve_falls_in_coverage_as_the_threshold_rises() -> None:
    rows = precision_coverage_curve(ITEMS, points=11)
    coverage = [r["coverage"] for r in rows]
    assert coverage[0] == 1.0 and coverage == sorted(coverage, reverse=True)
    assert rows[-1]["precision"] == 1.0  # nothing answered at threshold 1


def _question(rng: np.random.Generator, confident: bool, answerable: bool = True) -> QuestionLogits:
    """One window of 12 tokens; the span 3..4 is peaked when ``confident``; the model is right when confident."""
    start = torch.tensor(rng.normal(0, 1, 12), dtype=torch.float32)
    end = torch.tensor(rng.normal(0, 1, 12), dtype=torch.float32)
    boost = 9.0 if confident else 2.5
    start[3] += boost
    end[4] += boost
    mask = torch.zeros(12, dtype=torch.bool)
    mask[2:11] = True
    right = confident and answerable
    return QuestionLogits([start], [end], [mask], right, answerable, 1.0 if right else 0.0)


def test_fit_cools_overconfident_scores_and_limits_policy_abstains_on_unanswerable() -> None:
    rng = np.random.default_rng(0)
    fit_set = [_question(rng, i % 10 != 0) for i in range(60)] + [_question(rng, False, False) for _ in range(20)]
    held = [_question(rng, i % 10 != 0) for i in range(60)] + [_question(rng, False, False) for _ in range(20)]
    correct = np.array([q.correct for q in held], dtype=float)
    report = fit(fit_set, held, ThresholdPolicy(None, 15.0, 80.0))
    assert report.ece_after < expected_calibration_error(best_scores(held, 1.0), correct)
    assert report.policy_met and report.served_fit is not None and report.served_heldout is not None
    assert report.served_fit["answerable_abstained"] <= 15.0
    assert report.served_heldout["unanswerable_abstained"] >= 80.0
    assert report.precision_coverage and report.precision_coverage[0]["coverage"] == 1.0


def test_target_precision_policy_keeps_its_old_meaning() -> None:
    rng = np.random.default_rng(1)
    questions = [_question(rng, i % 3 != 0) for i in range(90)]
    report = fit(questions[:45], questions[45:], 0.9)
    assert report.target_precision == 0.9 and report.precision_at_threshold >= 0.9


def test_outcomes_score_predictions_against_references_and_never_credit_unanswerable_ones() -> None:
    examples = [
        QAExample("a1", "fee?", "The fee is £5 a month.", (Answer("£5 a month", 11),)),
        QAExample("a2", "limit?", "The limit is £500.", (Answer("£500", 13),)),
        QAExample("u1", "rate?", "No rate here.", (), is_impossible=True),
    ]
    got = outcomes(examples, {"a1": "£5 a month", "a2": "the limit", "u1": "No rate"}, {"a1": 0.9, "u1": 0.7})
    assert [(o.answerable, o.em) for o in got] == [(True, 1.0), (True, 0.0), (False, 0.0)]
    assert got[1].score == 0.0 and got[2].score == 0.7  # a missing score counts as 0
