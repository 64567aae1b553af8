"""The vertical's rule checks, as data: a versioned YAML file of rules evaluated on every answer.

Each rule has an ``id``, an ``action`` (append_disclaimer, redact, flag, escalate, block), a ``message`` and a
``when`` block of conditions that must all hold. Conditions are a closed set of typed checks (regexes on question or
answer, personal payment data, score, linked entity types, numbers that contradict graph facts), so adding a rule
never needs code. A broken file fails start-up with ``file:line: field: reason``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.enrich.pii import DETECTORS, find_pii

Action = Literal["append_disclaimer", "redact", "flag", "escalate", "block"]
NumberKind = Literal["money", "percent", "days", "weeks"]

_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?"
NUMBER_PATTERNS: dict[str, re.Pattern[str]] = {
    "money": re.compile(rf"(?:£|GBP ?|€|EUR ?){_NUMBER}|{_NUMBER} ?(?:pounds?|GBP|euros?|EUR)\b", re.IGNORECASE),
    "percent": re.compile(rf"{_NUMBER} ?(?:%|percent\b|per cent\b)", re.IGNORECASE),
    "days": re.compile(rf"{_NUMBER} (?:working |business |calendar )?days?\b", re.IGNORECASE),
    "weeks": re.compile(rf"{_NUMBER} weeks?\b", re.IGNORECASE),
}


class RuleFileError(ValueError):
    """The rules file cannot be used; ``str()`` is ``file:line: field: reason``."""


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


class PiiCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[str] = Field(min_length=1)
    where: list[Literal["question", "answer"]] = Field(default=["question", "answer"], min_length=1)

    @field_validator("kinds")
    @classmethod
    def _known(cls, kinds: list[str]) -> list[str]:
        unknown = set(kinds) - DETECTORS.keys()
        if unknown:
            raise ValueError(f"unknown PII kinds {sorted(unknown)}; known: {sorted(DETECTORS)}")
        return kinds


class When(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question_matches: list[str] | None = None
    answer_matches: list[str] | None = None
    pii: PiiCondition | None = None
    score_below: float | None = Field(default=None, ge=0, le=1)
    entity_types: list[str] | None = None
    contradicts_graph: dict[NumberKind, list[str]] | None = None
    abstained: bool | None = None

    @field_validator("question_matches", "answer_matches")
    @classmethod
    def _compiles(cls, patterns: list[str] | None) -> list[str] | None:
        for p in patterns or []:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regular expression {p!r}: {exc}") from exc
        return patterns


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    description: str = ""
    action: Action
    message: str = Field(min_length=1)
    when: When


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1)
    rules: list[Rule]

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # `version: 1` or `version: 2026.11` are natural to write; keep them as the text the author typed
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


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
    # numeric graph facts of the linked entities: (entity name, property, value)
    graph_facts: list[tuple[str, str, Any]] = field(default_factory=list)


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
            kinds = sorted({m.kind for t in texts for m in find_pii(t, w.pii.kinds)})
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
        return {
            "answer_value": ", ".join(_fmt(s) for s in stated),
            "graph_value": f"{_fmt(value)}{unit}",
            "entity": name,
            "property": prop,
        }
    return None


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
    def load(cls, path: Path) -> RuleSet:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RuleFileError(f"{path}: cannot read rules file: {exc.strerror}") from exc
        try:
            root = yaml.compose(text)
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else "?"
            raise RuleFileError(f"{path}:{line}: YAML syntax: {getattr(exc, 'problem', exc)}") from exc
        try:
            parsed = RuleFile.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            raise RuleFileError(f"{path}:{_line_of(root, loc)}: {_loc_text(loc)}: {err['msg']}") from exc
        seen: dict[str, int] = {}
        for index, rule in enumerate(parsed.rules):
            if rule.id in seen:
                line = _line_of(root, ("rules", index, "id"))
                raise RuleFileError(f"{path}:{line}: rules[{index}].id: duplicate id {rule.id!r}")
            seen[rule.id] = index
        return cls(parsed.version, parsed.rules, str(path))


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "file"


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """Line (1-based) of the deepest YAML node on the path ``loc``."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if node is None:
            break
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
