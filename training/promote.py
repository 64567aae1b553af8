"""``vqa promote``: a candidate checkpoint against the serving one on the gate sets, refused on a regression.

Each gate set is answered by both checkpoints through the service's own Reader, and two numbers are gated (0-100):
the top-span F1 (answerable questions, best span, no threshold: the model's reading) and the served F1 (SQuAD v2
style, every question counts: an answerable one scores its F1 if answered at the checkpoint's own abstention
threshold, 0 if it abstained; an unanswerable one scores 1 when abstained on: what customers get). The candidate is
refused when either falls more than ``tolerance`` points below the serving model's on any gate, so neither a worse
reader hidden by a new threshold nor a threshold that answers what it should not gets through.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.qa.reader import Reader
from training.abstention import outcomes, served_report
from training.evaluate import evaluate_examples
from training.squad import load_examples


@dataclass(frozen=True, slots=True)
class GateSet:
    name: str
    path: Path
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class GateScore:
    questions: int
    unanswerable: int
    threshold: float
    top_span_f1: float  # answerable questions, best span, no threshold
    served_f1: float  # every question, at the threshold (the gated number)


@dataclass(frozen=True, slots=True)
class GateComparison:
    gate: str
    baseline: GateScore
    candidate: GateScore
    tolerance: float

    @property
    def delta(self) -> float:
        """Served F1, candidate minus baseline."""
        return self.candidate.served_f1 - self.baseline.served_f1

    @property
    def top_span_delta(self) -> float:
        return self.candidate.top_span_f1 - self.baseline.top_span_f1

    @property
    def worst_delta(self) -> float:
        return min(self.delta, self.top_span_delta)

    @property
    def passed(self) -> bool:
        return self.worst_delta >= -self.tolerance


@dataclass(frozen=True, slots=True)
class PromotionReport:
    baseline: str
    candidate: str
    tolerance: float
    gates: list[GateComparison]
    skipped: dict[str, str]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "candidate": self.candidate,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "gates": [
                {"gate": g.gate, "baseline": asdict(g.baseline), "candidate": asdict(g.candidate),
                 "served_f1_delta": round(g.delta, 2), "top_span_f1_delta": round(g.top_span_delta, 2),
                 "passed": g.passed}
                for g in self.gates
            ],  # fmt: skip
            "skipped": self.skipped,
        }

    def table(self) -> str:
        lines = [
            f"baseline:  {self.baseline}",
            f"candidate: {self.candidate}",
            f"gate: neither served F1 (abstentions count) nor top-span F1 may fall more than {self.tolerance:g} "
            "points on any set",
            "",
            "| gate | questions | served F1 baseline | served F1 candidate | delta | top-span F1 baseline | "
            "top-span F1 candidate | delta | result |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for g in self.gates:
            lines.append(
                f"| {g.gate} | {g.candidate.questions} | {g.baseline.served_f1:.2f} | {g.candidate.served_f1:.2f} | "
                f"{g.delta:+.2f} | {g.baseline.top_span_f1:.2f} | {g.candidate.top_span_f1:.2f} | "
                f"{g.top_span_delta:+.2f} | {'pass' if g.passed else 'REGRESSION'} |"
            )
        for gate, why in self.skipped.items():
            lines.append(f"| {gate} | - | - | - | - | - | - | - | skipped: {why} |")
        return "\n".join(lines)


def score_gate(reader: Reader, gate: GateSet, progress: bool = False) -> GateScore:
    examples = load_examples(gate.path, limit=gate.limit)
    outcome = evaluate_examples(reader, examples, progress=progress)
    threshold = reader.card.no_answer_threshold
    served = served_report(outcomes(examples, outcome.predictions, outcome.scores), threshold)
    return GateScore(
        questions=len(examples),
        unanswerable=served.unanswerable,
        threshold=round(threshold, 4),
        top_span_f1=round(served.top_span_f1, 2),
        served_f1=round(served.overall_f1, 2),
    )


def compare(
    baseline: Path,
    candidate: Path,
    gates: Sequence[GateSet],
    tolerance: float,
    skipped: dict[str, str] | None = None,
    device: str = "auto",
    threads: int | None = None,
    progress: bool = False,
) -> PromotionReport:
    """Score both checkpoints on every gate set (one model in memory at a time)."""
    scores: dict[str, list[GateScore]] = {g.name: [] for g in gates}
    labels = []
    for path in (baseline, candidate):
        reader = Reader(path, device=device, num_threads=threads)
        reader.load()
        labels.append(f"{reader.card.name} {reader.card.version} ({path})")
        for gate in gates:
            scores[gate.name].append(score_gate(reader, gate, progress=progress))
        del reader
    return PromotionReport(
        baseline=labels[0],
        candidate=labels[1],
        tolerance=tolerance,
        gates=[GateComparison(g.name, scores[g.name][0], scores[g.name][1], tolerance) for g in gates],
        skipped=dict(skipped or {}),
    )
