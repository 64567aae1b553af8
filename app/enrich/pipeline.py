"""After the reader: apply the rule checks to the answer and its graph facts, and shape what the client sees."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

from app.enrich.graph import Enrichment
from app.enrich.pii import DETECTORS, find_pii, redact
from app.enrich.rules import RuleContext, RuleOutcome, RuleSet
from app.qa.abstention import AbstentionReason
from app.qa.reader import ReaderResult, SpanAnswer


@dataclass(slots=True)
class CheckedAnswer:
    answers: list[SpanAnswer]
    redacted: list[bool]
    abstained: bool
    abstain_reason: AbstentionReason | None
    outcomes: list[RuleOutcome] = field(default_factory=list)
    abstain_detail: str = ""


def check_answer(
    rules: RuleSet, question: str, result: ReaderResult, enrichment: Enrichment, today: date | None = None
) -> CheckedAnswer:
    """Evaluate every rule, then carry out the actions that change the answer (block, redact).

    ``today`` is the day the enrichment's facts were resolved on (changes are counted from it).
    """
    ctx = RuleContext(
        question=question,
        answers=[a.text for a in result.answers],
        best_score=result.best_score,
        abstained=result.abstained,
        entity_types={m.entity.type for _, m in enrichment.mentions},
        graph_facts=[(f.entity.name, key, value) for f in enrichment.facts for key, value in f.props.items()],
        graph_changes=[(f.entity.name, change) for f in enrichment.facts for change in f.changes],
        today=today or date.today(),
    )
    outcomes = rules.evaluate(ctx)
    answers = list(result.answers)
    redacted = [False] * len(answers)
    blocked = next((o for o in outcomes if o.action == "block"), None)
    if blocked is not None:
        return CheckedAnswer([], [], True, AbstentionReason.BLOCKED, outcomes, f"{blocked.rule_id}: {blocked.message}")
    if any(o.action == "redact" for o in outcomes):
        for i, answer in enumerate(answers):
            matches = find_pii(answer.text, list(DETECTORS))
            if matches:
                answers[i] = replace(answer, text=redact(answer.text, matches))
                redacted[i] = True
    return CheckedAnswer(answers, redacted, result.abstained, result.abstain_reason, outcomes, result.abstain_detail)
