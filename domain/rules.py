"""A pack's ``rules.yaml``: the schema of its rule checks and their loading (the service evaluates them).

Each rule has an ``id``, an ``action`` (append_disclaimer, redact, flag, escalate, block), a ``message`` and a
``when`` block of conditions that must all hold. Conditions are a closed set of typed checks, so adding a rule never
needs code. A broken file is reported as ``file:line: field: reason``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain import yaml_lines
from kg.pack import PackError

Action = Literal["append_disclaimer", "redact", "flag", "escalate", "block"]
NumberKind = Literal["money", "percent", "days", "weeks"]
# The service's detectors (app/enrich/pii.py) implement exactly these; a test holds the two together.
PiiKind = Literal["card_number", "iban", "account_number"]


class PiiCondition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: list[PiiKind] = Field(min_length=1)
    where: list[Literal["question", "answer"]] = Field(default=["question", "answer"], min_length=1)


class When(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question_matches: list[str] | None = None
    answer_matches: list[str] | None = None
    pii: PiiCondition | None = None
    score_below: float | None = Field(default=None, ge=0, le=1)
    entity_types: list[str] | None = None
    contradicts_graph: dict[NumberKind, list[str]] | None = None
    # a linked entity has a fact whose value changes within this many days (0: on any future date)
    changes_within_days: int | None = Field(default=None, ge=0)
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


def load_rules(path: Path) -> RuleFile:
    """Read and validate a rules file; any problem raises :class:`PackError` with the line it is on."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PackError(path, None, f"cannot read rules file: {exc.strerror}") from exc
    data, root = yaml_lines.parse(text, path)
    parsed = yaml_lines.validate(RuleFile, data, root, path)
    seen: dict[str, int] = {}
    for index, rule in enumerate(parsed.rules):
        if rule.id in seen:
            line = yaml_lines.line_of(root, ("rules", index, "id"))
            raise PackError(path, line, f"rules[{index}].id: duplicate id {rule.id!r}")
        seen[rule.id] = index
    return parsed
