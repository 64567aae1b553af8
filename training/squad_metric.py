"""Official SQuAD v1.1 exact match and F1 (normalisation and max over references as in the official script)."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, drop articles (a, an, the), squash whitespace: the official order."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def f1_score(prediction: str, reference: str) -> float:
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def best_over_references(prediction: str, references: Sequence[str]) -> tuple[float, float]:
    """(EM, F1) of one prediction: the max over its references, as the official script does."""
    return (
        max(exact_match_score(prediction, r) for r in references),
        max(f1_score(prediction, r) for r in references),
    )


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """Percentages over every question in ``references``; a question without a prediction scores 0."""
    total = em = f1 = 0.0
    for qid, refs in references.items():
        ref_list = list(refs)
        if not ref_list:
            continue
        total += 1
        if qid not in predictions:
            continue
        e, f = best_over_references(predictions[qid], ref_list)
        em += e
        f1 += f
    if total == 0:
        return {"exact_match": 0.0, "f1": 0.0, "questions": 0}
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total, "questions": int(total)}
