"""Evaluate a checkpoint on a SQuAD-format file through the service's own Reader (one decoding implementation)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from app.qa.reader import Reader
from training.squad import QAExample, dataset_name, load_examples
from training.squad_metric import squad_scores


@dataclass(slots=True)
class EvalOutcome:
    exact_match: float
    f1: float
    questions: int
    seconds: float
    predictions: dict[str, str]
    scores: dict[str, float]  # calibrated probability of each prediction

    def summary(self) -> dict[str, float | int]:
        return {
            "exact_match": round(self.exact_match, 2),
            "f1": round(self.f1, 2),
            "questions": self.questions,
            "seconds": round(self.seconds, 1),
            "questions_per_second": round(self.questions / self.seconds, 1) if self.seconds else 0.0,
        }


def evaluate_examples(
    reader: Reader,
    examples: Sequence[QAExample],
    chunk: int = 256,
    max_answer_len: int = 30,
    progress: bool = True,
) -> EvalOutcome:
    """Predict the best span of every answerable example (no abstention: SQuAD v1.1 scores every question)."""
    started = time.perf_counter()
    predictions: dict[str, str] = {}
    scores: dict[str, float] = {}
    bar = tqdm(total=len(examples), desc="eval", unit="q", disable=not progress)
    for i in range(0, len(examples), chunk):
        part = examples[i : i + chunk]
        results = reader.answer_batch(
            [(ex.question, [ex.context]) for ex in part], max_answer_len=max_answer_len, min_score=0.0
        )
        for ex, result in zip(part, results, strict=True):
            predictions[ex.id] = result.answers[0].text if result.answers else ""
            scores[ex.id] = result.best_score
        bar.update(len(part))
    bar.close()
    references = {ex.id: [a.text for a in ex.answers] for ex in examples if not ex.is_impossible}
    metric = squad_scores(predictions, references)
    return EvalOutcome(
        exact_match=metric["exact_match"],
        f1=metric["f1"],
        questions=int(metric["questions"]),
        seconds=time.perf_counter() - started,
        predictions=predictions,
        scores=scores,
    )


def evaluate_file(reader: Reader, path: Path, limit: int | None = None, progress: bool = True) -> EvalOutcome:
    return evaluate_examples(reader, load_examples(path, limit=limit), progress=progress)


def write_report(
    outcome: EvalOutcome,
    dataset: Path,
    checkpoint: Path,
    out_dir: Path,
    extra: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """JSON (with every prediction and score) and a markdown summary side by side."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = dataset_name(dataset)
    json_path = out_dir / f"eval-{stem}.json"
    md_path = out_dir / f"eval-{stem}.md"
    json_path.write_text(
        json.dumps(
            {
                "checkpoint": str(checkpoint),
                "dataset": str(dataset),
                **outcome.summary(),
                **(extra or {}),
                "predictions": outcome.predictions,
                "scores": {k: round(v, 6) for k, v in outcome.scores.items()},
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    s = outcome.summary()
    text = (
        f"# Evaluation of `{checkpoint}`\n\n"
        "Top span (answerable questions, no threshold):\n\n"
        "| dataset | questions | EM | F1 | seconds | q/s |\n|---|---|---|---|---|---|\n"
        f"| `{dataset.name}` | {s['questions']} | {s['exact_match']} | {s['f1']} | {s['seconds']} | "
        f"{s['questions_per_second']} |\n"
    )
    served = (extra or {}).get("served")
    if served:
        text += (
            f"\nAs served (threshold {served['threshold']}):\n\n"
            "| answerable | served EM | served F1 | answerable abstained % | unanswerable | "
            "unanswerable abstained % | overall F1 (v2) |\n|---|---|---|---|---|---|---|\n"
            f"| {served['answerable']} | {served['served_em']} | {served['served_f1']} | "
            f"{served['answerable_abstained']} | {served['unanswerable']} | {served['unanswerable_abstained']} | "
            f"{served['overall_f1']} |\n"
        )
    md_path.write_text(text, encoding="utf-8")
    return json_path, md_path
