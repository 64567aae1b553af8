"""The vertical's rule checks, evaluated on every answer.

The rules are data: the domain pack's ``rules.yaml`` (schema and loading in :mod:`domain.rules`). Conditions are a
closed set of typed checks (regexes on question or answer, personal payment data, score, linked entity types,
numbers that contradict graph facts, facts about to change), so adding a rule never needs code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from app.enrich.pii import find_pii
from domain.rules import Action, NumberKind, Rule, RuleFile, load_rules
from kg.timeline import ScheduledChange

_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
NUMBER_PATTERNS: dict[str, re.Pattern[str]] = {
    "money": re.compile(rf"(?:£|GBP ?|€|EUR ?){_NUMBER}|{_NUMBER} ?(?:pounds?|GBP|euros?|EUR)\b", re.IGNORECASE),
    "percent": re.compile(rf"{_NUMBER} ?(?:%|percent\b|per cent\b)", re.IGNORECASE),
    "days": re.compile(rf"{_NUMBER} (?:working |business |calendar )?days?\b", re.IGNORECASE),
    "weeks": re.compile(rf"{_NUMBER} weeks?\b", re.IGNORECASE),
}


def numbers_of_kind(text: str, kind: str) -> list[float]:
    values = []
    for m in NUMBER_PATTERNS[kind].finditer(text):
        groups = list(m.groups())
        # each alternative has (integer, fraction) groups; take the pair that matched
        for i in range(0, len(groups), 2):
            if groups[i] is not None:
                fraction = groups[i + 1]
                values.append(float(groups[i].replace(",", "") + (f".{fraction}" if fraction else "")))
                break
    return values


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    rule_id: str
    action: Action
    message: str


@dataclass(slots=True)
class RuleContext:
    """What a rule sees of one request."""

    question: str
    answers: list[str]
    best_score: float
    abstained: bool
    entity_types: set[str]
    # graph facts of the linked entities as in force today: (entity name, property, value)
    graph_facts: list[tuple[str, str, Any]] = field(default_factory=list)
    # changes the graph schedules for them: (entity name, change)
    graph_changes: list[tuple[str, ScheduledChange]] = field(default_factory=list)
    today: date = field(default_factory=date.today)


class _Compiled:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        w = rule.when
        self.question = [re.compile(p, re.IGNORECASE) for p in w.question_matches or []]
        self.answer = [re.compile(p, re.IGNORECASE) for p in w.answer_matches or []]

    def evaluate(self, ctx: RuleContext) -> RuleOutcome | None:
        w = self.rule.when
        details: dict[str, str] = {}
        if self.question and not any(p.search(ctx.question) for p in self.question):
            return None
        if self.answer and not any(p.search(a) for p in self.answer for a in ctx.answers):
            return None
        if w.pii is not None:
            texts = ([ctx.question] if "question" in w.pii.where else []) + (
                ctx.answers if "answer" in w.pii.where else []
            )
            kinds = sorted({m.kind for t in texts for m in find_pii(t, [str(k) for k in w.pii.kinds])})
            if not kinds:
                return None
            details["pii"] = ", ".join(kinds)
        if w.score_below is not None and not (ctx.answers and ctx.best_score < w.score_below):
            return None
        if w.entity_types is not None and not (ctx.entity_types & set(w.entity_types)):
            return None
        if w.abstained is not None and ctx.abstained != w.abstained:
            return None
        if w.contradicts_graph is not None:
            conflict = _contradiction(ctx, w.contradicts_graph)
            if conflict is None:
                return None
            details.update(conflict)
        if w.changes_within_days is not None:
            change = _next_change(ctx, w.changes_within_days)
            if change is None:
                return None
            details.update(change)
        message = self.rule.message
        for key, value in details.items():
            message = message.replace("{" + key + "}", value)
        return RuleOutcome(self.rule.id, self.rule.action, message)


def _fmt(value: float) -> str:
    return f"{value:g}"


def _contradiction(ctx: RuleContext, kinds: dict[NumberKind, list[str]]) -> dict[str, str] | None:
    """The answer states a number of a kind the graph also holds for a linked entity, and matches none of them."""
    answer_text = " ".join(ctx.answers[:1])  # the best answer is the one a customer reads
    for kind, props in kinds.items():
        stated = numbers_of_kind(answer_text, kind)
        if not stated:
            continue
        facts = [
            (name, prop, float(v))
            for name, prop, v in ctx.graph_facts
            if prop in props and isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if not facts:
            continue
        if any(abs(s - v) < 1e-9 for s in stated for _, _, v in facts):
            continue
        name, prop, value = facts[0]
        unit = {"percent": "%", "days": " days", "weeks": " weeks"}.get(kind, "")
        if kind == "money":
            currency = next((v for n, p, v in ctx.graph_facts if n == name and p == "currency"), None)
            unit = f" {currency}" if currency else ""
        upcoming = [
            f"{_fmt(c.value)}{unit} from {c.effective.isoformat()}"
            for n, c in ctx.graph_changes
            if n == name and c.property == prop and isinstance(c.value, int | float)
        ]
        return {
            "answer_value": ", ".join(_fmt(s) for s in stated),
            "graph_value": f"{_fmt(value)}{unit}" + (f" ({'; '.join(upcoming)})" if upcoming else ""),
            "entity": name,
            "property": prop,
        }
    return None


def _next_change(ctx: RuleContext, within_days: int) -> dict[str, str] | None:
    """The first change the graph schedules for a linked entity within ``within_days`` (0: any)."""
    for name, change in sorted(ctx.graph_changes, key=lambda nc: nc[1].effective):
        days = (change.effective - ctx.today).days
        if days < 0 or (within_days and days > within_days):
            continue
        return {
            "entity": name,
            "property": change.property,
            "graph_value": _fmt_any(change.previous),
            "new_value": _fmt_any(change.value) if change.value is not None else "no longer applies",
            "date": change.effective.isoformat(),
        }
    return None


def _fmt_any(value: Any) -> str:
    return _fmt(float(value)) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


class RuleSet:
    """A loaded, validated rules file. :meth:`evaluate` runs every rule in file order."""

    def __init__(self, version: str, rules: Sequence[Rule], source: str = "") -> None:
        self.version = version
        self.source = source
        self._rules = [_Compiled(r) for r in rules]

    @property
    def rules(self) -> list[Rule]:
        return [c.rule for c in self._rules]

    def evaluate(self, ctx: RuleContext) -> list[RuleOutcome]:
        return [o for c in self._rules if (o := c.evaluate(ctx)) is not None]

    @classmethod
    def empty(cls) -> RuleSet:
        return cls("none", [])

    @classmethod
    def from_file(cls, rule_file: RuleFile, source: str = "") -> RuleSet:
        return cls(rule_file.version, rule_file.rules, source)

    @classmethod
    def load(cls, path: Path) -> RuleSet:
        """Read a rules file (a broken one raises :class:`kg.pack.PackError` with ``file:line: field: reason``)."""
        return cls.from_file(load_rules(path), str(path))
