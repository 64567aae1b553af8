"""Served numbers: what customers get once the abstention threshold applies, beside the top-span numbers.

Abstaining on an answerable question and answering an unanswerable one are both errors, so both rates are reported.
Predictions are collected once with no threshold (the best span and its score per question); any threshold is then
applied afterwards, which makes the precision/coverage curve and the threshold search free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from training.squad import QAExample
from training.squad_metric import best_over_references


@dataclass(frozen=True, slots=True)
class ServedReport:
    """Scores at one threshold. Percentages are over the questions named in each field."""

    threshold: float
    answerable: int
    unanswerable: int
    top_span_em: float  # answerable questions, best span, no threshold
    top_span_f1: float
    served_em: float  # answerable questions, an abstention scores 0
    served_f1: float
    answerable_abstained: float  # share of answerable questions abstained on (an error)
    unanswerable_abstained: float  # share of unanswerable questions abstained on (right)
    overall_f1: float  # SQuAD v2 style: every question; an unanswerable one scores 1 when abstained

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 2) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True, slots=True)
class QuestionOutcome:
    """One question's best prediction with its EM/F1 against the references (0 for an unanswerable one)."""

    answerable: bool
    score: float
    em: float
    f1: float


def outcomes(
    examples: Sequence[QAExample], predictions: Mapping[str, str], scores: Mapping[str, float]
) -> list[QuestionOutcome]:
    out: list[QuestionOutcome] = []
    for ex in examples:
        prediction = predictions.get(ex.id, "")
        refs = [a.text for a in ex.answers]
        answerable = bool(refs) and not ex.is_impossible
        em, f1 = best_over_references(prediction, refs) if answerable and prediction else (0.0, 0.0)
        out.append(QuestionOutcome(answerable, float(scores.get(ex.id, 0.0)), em, f1))
    return out


def served_report(items: Sequence[QuestionOutcome], threshold: float) -> ServedReport:
    answerable = [q for q in items if q.answerable]
    unanswerable = [q for q in items if not q.answerable]

    def share(values: Sequence[float], n: int) -> float:
        return 100.0 * sum(values) / n if n else 0.0

    answered = [q.score >= threshold for q in answerable]
    abstained_unanswerable = [q.score < threshold for q in unanswerable]
    served_f1 = [q.f1 if ok else 0.0 for q, ok in zip(answerable, answered, strict=True)]
    return ServedReport(
        threshold=threshold,
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        top_span_em=share([q.em for q in answerable], len(answerable)),
        top_span_f1=share([q.f1 for q in answerable], len(answerable)),
        served_em=share([q.em if ok else 0.0 for q, ok in zip(answerable, answered, strict=True)], len(answerable)),
        served_f1=share(served_f1, len(answerable)),
        answerable_abstained=share([float(not ok) for ok in answered], len(answerable)),
        unanswerable_abstained=share([float(a) for a in abstained_unanswerable], len(unanswerable)),
        overall_f1=share(served_f1 + [float(a) for a in abstained_unanswerable], len(items)),
    )


def precision_coverage_curve(items: Sequence[QuestionOutcome], points: int = 21) -> list[dict[str, float]]:
    """Per threshold: the share of questions answered (coverage) and the share of those answered right (EM)."""
    rows = []
    for threshold in np.linspace(0.0, 1.0, points):
        answered = [q for q in items if q.score >= threshold]
        rows.append(
            {
                "threshold": round(float(threshold), 3),
                "coverage": round(len(answered) / len(items), 4) if items else 0.0,
                "precision": round(sum(q.em for q in answered) / len(answered), 4) if answered else 1.0,
            }
        )
    return rows


def choose_threshold(
    items: Sequence[QuestionOutcome],
    max_answerable_abstained: float = 15.0,
    min_unanswerable_abstained: float = 80.0,
) -> tuple[float, bool]:
    """The threshold with the best overall (SQuAD v2) F1 among those meeting both abstention limits.

    Returns (threshold, met). When no threshold meets both, the one closest to meeting them is returned with
    ``met=False``: the caller must say so rather than pretend.
    """
    candidates = sorted({0.0, *(round(q.score, 6) for q in items), 1.0})
    best: tuple[float, float] | None = None
    closest: tuple[float, float] | None = None
    for threshold in candidates:
        report = served_report(items, threshold)
        miss = max(0.0, report.answerable_abstained - max_answerable_abstained) + max(
            0.0, min_unanswerable_abstained - report.unanswerable_abstained
        )
        if miss == 0.0 and (best is None or report.overall_f1 > best[1]):
            best = (threshold, report.overall_f1)
        if closest is None or miss < closest[1]:
            closest = (threshold, miss)
    if best is not None:
        return best[0], True
    assert closest is not None
    return closest[0], False
