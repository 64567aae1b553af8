"""``pack.json``: what a pack is (name, version), where its parts live, and what its graph properties measure."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# What a graph property measures. The lint reads corpus numbers into these units: days and weeks compare as days,
# months and years as months; working days stay apart from calendar days.
PropertyKind = Literal["money", "percent", "days", "working_days", "weeks", "months", "years", "hours", "conditions"]
Bound = Literal["min", "min_exclusive", "max", "max_exclusive"]


class PropertySpec(BaseModel):
    """How the corpus states one graph property."""

    model_config = ConfigDict(extra="forbid")

    kind: PropertyKind
    bound: Bound | None = Field(
        default=None, description="the value is a limit: 'more than £100' is min_exclusive, 'up to £100' is max"
    )
    cues: list[str] = Field(
        default_factory=list, description="phrases near a number that say it states this property ('a month')"
    )
    # kind "conditions": the property is a list of condition names; ``terms`` gives the phrases for each and
    # ``trigger`` the word that introduces them ("free if the card was stolen or is faulty").
    terms: dict[str, list[str]] = Field(default_factory=dict)
    trigger: str | None = None


class QASetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    path: str
    splits: list[Literal["train", "dev", "test"]] = Field(
        min_length=1, description="the document splits (split_of) this set's documents must all come from"
    )
    source: Literal["built", "hand-written"] = Field(
        description="built: written by `vqa pack build-qa` from the fact catalogue; hand-written: never rebuilt"
    )


class QASpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    facts: str | None = Field(default="qa/facts.yaml", description="fact catalogue the built sets come from")
    sets: list[QASetSpec] = Field(default_factory=list)

    @field_validator("sets")
    @classmethod
    def _unique(cls, sets: list[QASetSpec]) -> list[QASetSpec]:
        names = [s.name for s in sets]
        if len(names) != len(set(names)):
            raise ValueError(f"QA set names must be unique, got {names}")
        return sets


class GraphFiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entities: str = "graph/entities.jsonl"
    relations: str = "graph/relations.jsonl"
    linking_examples: str | None = Field(
        default=None,
        description="JSON lines {question, entities}: customers' questions labelled with what they are about; the "
        "entity linker compares questions with them",
    )


class LintSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ignore_lines: list[str] = Field(
        default_factory=list, description="regexes of corpus lines that are not the pack's statements ('^Customer:')"
    )


class PackManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: str = Field(min_length=1, max_length=40)
    description: str = ""
    timezone: str = Field(default="UTC", description="where 'today' is: the day facts are resolved on")
    currency: str = Field(default="GBP", pattern=r"^[A-Z]{3}$", description="currency of money facts without one")
    corpus: str = "corpus"
    graph: GraphFiles = Field(default_factory=GraphFiles)
    rules: str | None = "rules.yaml"
    qa: QASpec = Field(default_factory=QASpec)
    calibration: str | None = Field(default="calibration.json", description="the pack's calibration slot")
    properties: dict[str, PropertySpec] = Field(default_factory=dict)
    lint: LintSpec = Field(default_factory=LintSpec)
