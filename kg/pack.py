"""A pack's graph rows: ``entities.jsonl`` and ``relations.jsonl``, one JSON object per line.

Every row is validated before anything is written to a graph; a bad row is reported with its file, line and field.
An entity's ``props`` hold the facts that are always true; ``dated`` holds facts with effective dates
(``valid_from`` / ``valid_to``, both inclusive, either open), so that a scheduled change is modelled rather than
contradicted: ``{"valid_to": "2026-11-30", "props": {"percent": 3.25}}, {"valid_from": "2026-12-01", ...}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kg.linker import fold

ScalarValue = str | int | float | bool
PropertyValue = ScalarValue | list[str] | list[int] | list[float]


class PackError(ValueError):
    """A malformed pack file; ``str()`` is ``file:line: field: reason`` (line left out when it has none)."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class DatedProps(BaseModel):
    """Facts in force from ``valid_from`` to ``valid_to`` (inclusive; a missing end is open)."""

    model_config = ConfigDict(extra="forbid")

    valid_from: date | None = None
    valid_to: date | None = None
    props: dict[str, ScalarValue] = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> DatedProps:
        if self.valid_from is None and self.valid_to is None:
            raise ValueError("give valid_from and/or valid_to (undated facts belong in props)")
        if self.valid_from is not None and self.valid_to is not None and self.valid_to < self.valid_from:
            raise ValueError(f"valid_to {self.valid_to} is before valid_from {self.valid_from}")
        return self


class EntityRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*:[a-z0-9][a-z0-9_.-]*$", max_length=120)
    type: str = Field(pattern=r"^[A-Z][A-Za-z]*$", max_length=40)
    name: str = Field(min_length=1, max_length=200)
    aliases: list[str] = Field(default_factory=list, max_length=50)
    props: dict[str, PropertyValue] = Field(default_factory=dict)
    dated: list[DatedProps] = Field(default_factory=list, max_length=50)

    def timelines(self) -> dict[str, list[DatedProps]]:
        """Dated periods per property, in date order."""
        out: dict[str, list[DatedProps]] = {}
        for period in self.dated:
            for key in period.props:
                out.setdefault(key, []).append(period)
        for periods in out.values():
            periods.sort(key=lambda p: p.valid_from or date.min)
        return out


class RelationRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    # Relationship types end up in Cypher text (they cannot be parameters): only this strict shape is accepted.
    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,39}$")
    target: str
    props: dict[str, PropertyValue] = Field(default_factory=dict)


RESERVED_PROPS = frozenset({"id", "type", "name", "aliases"})
# Dated facts are stored on the node as parallel lists under these suffixes (see kg.timeline); pack rows may not
# use them as property names.
RESERVED_SUFFIX = "__"


@dataclass(frozen=True, slots=True)
class GraphPack:
    """The graph rows of one pack, validated as a whole (unique ids and aliases, known relation ends)."""

    name: str
    version: str
    entities: list[EntityRow]
    relations: list[RelationRow]
    entity_lines: dict[str, tuple[Path, int]]

    @classmethod
    def read(cls, name: str, version: str, entities_path: Path, relations_path: Path) -> GraphPack:
        entities = _read_jsonl(entities_path, EntityRow)
        seen: dict[str, int] = {}
        alias_owner: dict[str, tuple[str, int]] = {}
        for line, entity in entities:
            if entity.id in seen:
                raise PackError(entities_path, line, f"id: duplicate {entity.id!r} (first on line {seen[entity.id]})")
            _check_props(entities_path, line, entity)
            for alias in {entity.name, *entity.aliases}:
                key = fold(alias.strip())[0]
                owner = alias_owner.get(key)
                if owner is not None and owner[0] != entity.id:
                    raise PackError(
                        entities_path,
                        line,
                        f"aliases: {alias!r} also names {owner[0]} (line {owner[1]}); an alias must name one entity",
                    )
                alias_owner[key] = (entity.id, line)
            seen[entity.id] = line
        relations = _read_jsonl(relations_path, RelationRow)
        for line, relation in relations:
            for end in ("source", "target"):
                if getattr(relation, end) not in seen:
                    raise PackError(relations_path, line, f"{end}: unknown entity {getattr(relation, end)!r}")
        return cls(
            name,
            version,
            [e for _, e in entities],
            [r for _, r in relations],
            {e.id: (entities_path, line) for line, e in entities},
        )

    def entity(self, entity_id: str) -> EntityRow | None:
        return next((e for e in self.entities if e.id == entity_id), None)


def _check_props(path: Path, line: int, entity: EntityRow) -> None:
    clash = RESERVED_PROPS & entity.props.keys()
    if clash:
        raise PackError(path, line, f"props: {sorted(clash)} are reserved names")
    for index, period in enumerate(entity.dated):
        clash = (RESERVED_PROPS | entity.props.keys()) & period.props.keys()
        if clash:
            raise PackError(
                path, line, f"dated[{index}].props: {sorted(clash)} are reserved or already undated in props"
            )
    for key in [*entity.props, *(k for p in entity.dated for k in p.props)]:
        if RESERVED_SUFFIX in key:
            raise PackError(path, line, f"props: {key!r}: '{RESERVED_SUFFIX}' is reserved for dated facts")
    for key, periods in entity.timelines().items():
        for before, after in pairwise(periods):
            if before.valid_to is None or after.valid_from is None or after.valid_from <= before.valid_to:
                raise PackError(
                    path,
                    line,
                    f"dated: {key}: periods overlap ({before.valid_from or '…'}..{before.valid_to or '…'} and "
                    f"{after.valid_from or '…'}..{after.valid_to or '…'}); close the first with valid_to",
                )
        if len({_value_type(p.props[key]) for p in periods}) > 1:
            raise PackError(path, line, f"dated: {key}: every period's value must have the same type")


def _value_type(value: ScalarValue) -> str:
    # Graph properties are typed lists: 3 and 3.25 may share one, "3" and 3 may not.
    if isinstance(value, bool):
        return "bool"
    return "number" if isinstance(value, int | float) else "str"


def first_error(exc: Exception) -> str:
    """``field: reason`` of the first error of a pydantic or JSON error."""
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "row"
        return f"{field}: {err['msg']}"
    return str(exc)


def _read_jsonl(path: Path, model: type[Any]) -> list[tuple[int, Any]]:
    if not path.is_file():
        raise PackError(path, None, "missing")
    rows = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("//"):
            continue
        try:
            rows.append((number, model.model_validate(json.loads(text))))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise PackError(path, number, first_error(exc)) from exc
    return rows
