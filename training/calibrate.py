"""Temperature scaling so that ``score`` is a probability of being right, and the abstention threshold.

"Right" means the best span matches a reference answer exactly (SQuAD EM); for an unanswerable question (SQuAD v2)
any span is wrong. The logits of every window are computed once; each candidate temperature then only re-runs the
cheap span decoder. The temperature minimises the binary cross-entropy between the best span's score and its
correctness on the *fit* questions; the expected calibration error (ECE, 15 equal-width bins) is reported before and
after on separate *held-out* questions.

The threshold follows one of two policies: the lowest score reaching a target precision (SQuAD, where every question
is answerable), or, for a domain set with unanswerable questions, the best overall F1 among thresholds that abstain
on at most a given share of answerable questions and on at least a given share of unanswerable ones (both are
errors a customer notices). The held-out report gives both error rates and the precision/coverage curve.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.qa.batcher import plan_length_groups
from app.qa.card import Calibration, ModelCard
from app.qa.reader import Reader, WindowJob, WindowPrediction
from app.qa.spans import SpanCandidates, SpanDecoder
from training.abstention import (
    QuestionOutcome,
    choose_threshold,
    precision_coverage_curve,
    served_report,
)
from training.squad import QAExample
from training.squad_metric import best_over_references

log = logging.getLogger(__name__)

TEMPERATURE_GRID = tuple(float(t) for t in np.geomspace(0.25, 8.0, 49))


@dataclass(slots=True)
class QuestionLogits:
    """Raw logits of every window of one question, trimmed to each window's length, on the CPU."""

    start: list[torch.Tensor]
    end: list[torch.Tensor]
    mask: list[torch.Tensor]
    correct: bool
    answerable: bool = True
    f1: float = 0.0


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """How the abstention threshold is chosen: a target precision, or limits on both abstention errors."""

    target_precision: float | None = 0.8
    max_answerable_abstained: float | None = None  # percent
    min_unanswerable_abstained: float | None = None  # percent

    @property
    def uses_limits(self) -> bool:
        return self.max_answerable_abstained is not None or self.min_unanswerable_abstained is not None

    def describe(self) -> str:
        if self.uses_limits:
            return (
                f"best overall F1 abstaining on <= {self.max_answerable_abstained}% of answerable and >= "
                f"{self.min_unanswerable_abstained}% of unanswerable questions"
            )
        return f"lowest threshold reaching precision {self.target_precision}"


@dataclass(slots=True)
class CalibrationReport:
    temperature: float
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    threshold: float
    target_precision: float | None
    precision_at_threshold: float
    coverage_at_threshold: float
    fit_questions: int
    heldout_questions: int
    accuracy: float
    reliability: list[dict[str, float]]
    policy: str = ""
    policy_met: bool = True
    served_fit: dict[str, float | int] | None = None  # both abstention error rates on the fit questions
    served_heldout: dict[str, float | int] | None = None  # ... and on the held-out questions
    precision_coverage: list[dict[str, float]] | None = None  # held-out, at the fitted temperature

    def as_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def collect_logits(reader: Reader, examples: Sequence[QAExample], batch_windows: int = 64) -> list[QuestionLogits]:
    """Run the model once over every window; mark each question right or wrong by its best span at T=1."""
    per_question = [reader.preprocess(ex.question, [ex.context]) for ex in examples]
    flat = [(q, w) for q, windows in enumerate(per_question) for w in windows]
    store: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    order = sorted(range(len(flat)), key=lambda k: len(flat[k][1]))
    for i in tqdm(range(0, len(order), batch_windows), desc="logits", unit="batch"):
        chunk = order[i : i + batch_windows]
        for group in plan_length_groups([len(flat[k][1]) for k in chunk]):
            picked = [chunk[g] for g in group]
            start, end, mask = reader.logits([WindowJob(flat[k][1]) for k in picked])
            for row, k in enumerate(picked):
                n = len(flat[k][1])
                store[k] = (start[row, :n].float().cpu(), end[row, :n].float().cpu(), mask[row, :n].cpu())
    out: list[QuestionLogits] = []
    cursor = 0
    decoder = SpanDecoder(1.0)  # the best span does not depend on the temperature
    for ex, windows in zip(examples, per_question, strict=True):
        keys = range(cursor, cursor + len(windows))
        cursor += len(windows)
        item = QuestionLogits(
            [store[k][0] for k in keys], [store[k][1] for k in keys], [store[k][2] for k in keys], False
        )
        predictions = []
        if windows:
            decoded = _decode(item, decoder, max_answer_len=30, top_k=1)
            nulls = decoded.null_log_probs.tolist()
            predictions = [WindowPrediction(c, nulls[i]) for i, c in enumerate(decoded.to_lists())]
        result = reader.postprocess([ex.context], windows, predictions, top_k=1, min_score=0.0)
        prediction = result.answers[0].text if result.answers else ""
        refs = [a.text for a in ex.answers]
        item.answerable = bool(refs) and not ex.is_impossible
        if item.answerable and prediction:
            em, item.f1 = best_over_references(prediction, refs)
            item.correct = em == 1.0
        out.append(item)
    return out


def _decode(item: QuestionLogits, decoder: SpanDecoder, max_answer_len: int, top_k: int) -> SpanCandidates:
    """Decode one question's stored windows, padded to a common width (padding is outside the context mask)."""
    width = max(len(s) for s in item.start)
    n = len(item.start)
    start = torch.full((n, width), -1e4)
    end = torch.full((n, width), -1e4)
    mask = torch.zeros((n, width), dtype=torch.bool)
    for row, (s, e, m) in enumerate(zip(item.start, item.end, item.mask, strict=True)):
        start[row, : len(s)], end[row, : len(e)], mask[row, : len(m)] = s, e, m
    return decoder.decode(start, end, mask, torch.full((n,), max_answer_len), top_k)


def best_scores(questions: Sequence[QuestionLogits], temperature: float, max_answer_len: int = 30) -> np.ndarray:
    """Best-span probability of every question at ``temperature`` (max over its windows)."""
    decoder = SpanDecoder(temperature)
    scores = np.zeros(len(questions))
    for q, item in enumerate(questions):
        if not item.start:
            continue
        best = _decode(item, decoder, max_answer_len, 1).log_probs.max().item()
        scores[q] = math.exp(best) if best > float("-inf") else 0.0
    return scores


def expected_calibration_error(scores: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (scores > lo) & (scores <= hi) if lo > 0 else (scores >= lo) & (scores <= hi)
        if inside.any():
            ece += inside.mean() * abs(scores[inside].mean() - correct[inside].mean())
    return float(ece)


def reliability_bins(scores: np.ndarray, correct: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (scores >= lo) & ((scores < hi) if hi < 1 else (scores <= hi))
        rows.append(
            {
                "low": float(lo),
                "high": float(hi),
                "count": int(inside.sum()),
                "mean_score": float(scores[inside].mean()) if inside.any() else 0.0,
                "accuracy": float(correct[inside].mean()) if inside.any() else 0.0,
            }
        )
    return rows


def _nll(scores: np.ndarray, correct: np.ndarray) -> float:
    p = np.clip(scores, 1e-6, 1 - 1e-6)
    return float(-np.mean(correct * np.log(p) + (1 - correct) * np.log(1 - p)))


def threshold_for_precision(scores: np.ndarray, correct: np.ndarray, target: float) -> tuple[float, float, float]:
    """Lowest score threshold whose answered questions reach ``target`` precision: (threshold, precision, coverage).

    If no threshold reaches it, the one with the best precision is returned (and its precision says so).
    """
    order = np.argsort(-scores)
    hits = np.cumsum(correct[order])
    answered = np.arange(1, len(order) + 1)
    precision = hits / answered
    ok = np.nonzero(precision >= target)[0]
    k = int(ok.max()) if ok.size else int(np.argmax(precision))
    return float(scores[order][k]), float(precision[k]), float((k + 1) / len(order))


def outcomes_at(questions: Sequence[QuestionLogits], temperature: float) -> list[QuestionOutcome]:
    """Each question's calibrated best score with its EM/F1, for the served numbers and the threshold search."""
    scores = best_scores(questions, temperature)
    return [
        QuestionOutcome(q.answerable, float(score), float(q.correct), q.f1)
        for q, score in zip(questions, scores, strict=True)
    ]


def fit(
    fit_set: Sequence[QuestionLogits],
    heldout: Sequence[QuestionLogits],
    policy: ThresholdPolicy | float,
) -> CalibrationReport:
    if not isinstance(policy, ThresholdPolicy):  # a bare number is a target precision
        policy = ThresholdPolicy(target_precision=policy)
    fit_correct = np.array([q.correct for q in fit_set], dtype=float)
    held_correct = np.array([q.correct for q in heldout], dtype=float)
    losses = {t: _nll(best_scores(fit_set, t), fit_correct) for t in tqdm(TEMPERATURE_GRID, desc="temperature")}
    temperature = min(losses, key=lambda t: losses[t])
    before = best_scores(heldout, 1.0)
    after = best_scores(heldout, temperature)
    fit_scores = best_scores(fit_set, temperature)
    met = True
    if policy.uses_limits:
        threshold, met = choose_threshold(
            outcomes_at(fit_set, temperature),
            policy.max_answerable_abstained if policy.max_answerable_abstained is not None else 100.0,
            policy.min_unanswerable_abstained if policy.min_unanswerable_abstained is not None else 0.0,
        )
        answered = fit_scores >= threshold
        precision = float(fit_correct[answered].mean()) if answered.any() else 1.0
        coverage = float(answered.mean())
    else:
        assert policy.target_precision is not None
        threshold, precision, coverage = threshold_for_precision(fit_scores, fit_correct, policy.target_precision)
        met = precision >= policy.target_precision
    held_outcomes = outcomes_at(heldout, temperature)
    return CalibrationReport(
        temperature=round(temperature, 4),
        ece_before=round(expected_calibration_error(before, held_correct), 4),
        ece_after=round(expected_calibration_error(after, held_correct), 4),
        nll_before=round(_nll(before, held_correct), 4),
        nll_after=round(_nll(after, held_correct), 4),
        threshold=round(threshold, 4),
        target_precision=policy.target_precision if not policy.uses_limits else None,
        precision_at_threshold=round(precision, 4),
        coverage_at_threshold=round(coverage, 4),
        fit_questions=len(fit_set),
        heldout_questions=len(heldout),
        accuracy=round(float(held_correct.mean()), 4) if len(heldout) else 0.0,
        reliability=reliability_bins(after, held_correct),
        policy=policy.describe(),
        policy_met=met,
        served_fit=served_report(outcomes_at(fit_set, temperature), threshold).as_dict(),
        served_heldout=served_report(held_outcomes, threshold).as_dict(),
        precision_coverage=precision_coverage_curve(held_outcomes),
    )


def plot_reliability(report: CalibrationReport, before: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for rows, label, colour in (
        (before, f"T=1 (ECE {report.ece_before:.3f})", "tab:red"),
        (report.reliability, f"T={report.temperature:.2f} (ECE {report.ece_after:.3f})", "tab:blue"),
    ):
        pts = [(r["mean_score"], r["accuracy"]) for r in rows if r["count"] > 0]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=colour, label=label)
    ax.set_xlabel("score (best span probability)")
    ax.set_ylabel("exact-match accuracy")
    ax.set_title(f"Reliability on {report.heldout_questions} held-out questions")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def calibrate_checkpoint(
    checkpoint: Path,
    fit_examples: Sequence[QAExample],
    heldout_examples: Sequence[QAExample],
    policy: ThresholdPolicy | float,
    fitted_on: str,
    out_dir: Path | None = None,
    write_card: bool = True,
) -> CalibrationReport:
    """Fit; write ``calibration.json`` and ``reliability.png`` to ``out_dir`` (default: next to the card); update
    the card unless ``write_card`` is false (a domain calibration belongs to its pack, not to the checkpoint)."""
    reader = Reader(checkpoint, backend="torch")  # the temperature belongs to the weights, not to a graph of them
    reader.load()
    fit_logits = collect_logits(reader, fit_examples)
    held_logits = collect_logits(reader, heldout_examples)
    report = fit(fit_logits, held_logits, policy)
    out = out_dir or checkpoint
    out.mkdir(parents=True, exist_ok=True)
    held_correct = np.array([q.correct for q in held_logits], dtype=float)
    before_rows = reliability_bins(best_scores(held_logits, 1.0), held_correct)
    try:
        plot_reliability(report, before_rows, out / "reliability.png")
    except ImportError:  # matplotlib is an optional extra (the 'train' extra); the numbers are in calibration.json
        log.warning("matplotlib not installed: no reliability.png")
    (out / "calibration.json").write_text(json.dumps(report.as_dict(), indent=1) + "\n", encoding="utf-8")
    if not write_card:
        return report
    card = ModelCard.load(checkpoint)
    card.calibration = Calibration(
        temperature=report.temperature,
        ece_before=report.ece_before,
        ece_after=report.ece_after,
        fitted_on=fitted_on,
        questions=report.fit_questions,
    )
    card.no_answer_threshold = report.threshold
    card.save(checkpoint)
    return report
