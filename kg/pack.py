"""A domain pack's graph data: ``pack.json`` plus ``graph/entities.jsonl`` and ``graph/relations.jsonl``.

Every row is validated before anything is written to a graph; a bad row is reported with its file, line and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ScalarValue = str | int | float | bool
PropertyValue = ScalarValue | list[str] | list[int] | list[float]


class PackError(ValueError):
    """A malformed pack file; ``str()`` names file, line and field."""

    def __init__(self, path: Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class PackMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    version: str = Field(min_length=1, max_length=40)
    description: str = ""


class EntityRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z][a-z0-9_]*:[a-z0-9][a-z0-9_.-]*$", max_length=120)
    type: str = Field(pattern=r"^[A-Z][A-Za-z]*$", max_length=40)
    name: str = Field(min_length=1, max_length=200)
    aliases: list[str] = Field(default_factory=list, max_length=50)
    props: dict[str, PropertyValue] = Field(default_factory=dict)


class RelationRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str
    # Relationship types end up in Cypher text (they cannot be parameters): only this strict shape is accepted.
    type: str = Field(pattern=r"^[A-Z][A-Z0-9_]{0,39}$")
    target: str
    props: dict[str, PropertyValue] = Field(default_factory=dict)


RESERVED_PROPS = frozenset({"id", "type", "name", "aliases"})


@dataclass(frozen=True, slots=True)
class GraphPack:
    root: Path
    meta: PackMeta
    entities: list[EntityRow]
    relations: list[RelationRow]

    @classmethod
    def load(cls, root: Path) -> GraphPack:
        meta_path = root / "pack.json"
        if not meta_path.is_file():
            raise PackError(meta_path, None, "missing: a pack needs pack.json with name and version")
        try:
            meta = PackMeta.model_validate(json.loads(meta_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise PackError(meta_path, None, _first_error(exc)) from exc
        entities_path = root / "graph" / "entities.jsonl"
        relations_path = root / "graph" / "relations.jsonl"
        entities = [(line, row) for line, row in _read_jsonl(entities_path, EntityRow)]
        seen: dict[str, int] = {}
        for line, entity in entities:
            if entity.id in seen:
                raise PackError(entities_path, line, f"id: duplicate {entity.id!r} (first on line {seen[entity.id]})")
            clash = RESERVED_PROPS & entity.props.keys()
            if clash:
                raise PackError(entities_path, line, f"props: {sorted(clash)} are reserved names")
            seen[entity.id] = line
        relations = [(line, row) for line, row in _read_jsonl(relations_path, RelationRow)]
        for line, relation in relations:
            for end in ("source", "target"):
                if getattr(relation, end) not in seen:
                    raise PackError(relations_path, line, f"{end}: unknown entity {getattr(relation, end)!r}")
        return cls(root, meta, [e for _, e in entities], [r for _, r in relations])


def _first_error(exc: Exception) -> str:
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
            raise PackError(path, number, _first_error(exc)) from exc
    return rows
