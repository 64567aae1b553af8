"""Choosing the answer among retrieved passages: the reader's span score combined with the passage's retrieval score.

A span the reader likes in a passage retrieval ranked low is often the right words in the wrong document; a passage
ranked first with a weaker span is often the one that answers. The combined score is
``log(span score) + retrieval_weight * retrieval score / best retrieval score among the passages read``; the answer
is the span with the best combined score, and it keeps its own calibrated ``score`` (which the abstention threshold
is compared with). ``retrieval_weight`` and how many passages are read were tuned on the domain dev split
(``bench/tune_passages.py``; README, "Questions without contexts").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from app.qa.reader import SpanAnswer


@dataclass(frozen=True, slots=True)
class PassageChoice:
    passages_read: int = 2
    retrieval_weight: float = 3.0


def combined_score(answer: SpanAnswer, passage_scores: Sequence[float], retrieval_weight: float) -> float:
    best = max(passage_scores) if passage_scores else 0.0
    share = passage_scores[answer.context_index] / best if best > 0 else 0.0
    return math.log(max(answer.score, 1e-12)) + retrieval_weight * share


def rank_answers(
    answers: Sequence[SpanAnswer], passage_scores: Sequence[float], retrieval_weight: float
) -> list[SpanAnswer]:
    """``answers`` (spans over the passages read, context_index = passage index) best combined score first."""
    return sorted(answers, key=lambda a: combined_score(a, passage_scores, retrieval_weight), reverse=True)
