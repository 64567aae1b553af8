"""Labelled questions for entity linking: what customers ask, and which graph entities each question is about.

The pack's ``graph.linking_examples`` file holds one JSON object per line, ``{"question": ..., "entities": [...],
"source": ...}``; ``entities`` may be empty ("about nothing in the graph": such an example keeps the linker from
linking look-alike questions). The fact catalogue's questions (``qa/facts.yaml``) are examples too: each is about its
fact's entity. The linker compares a question's sentence vector with every example's (``app.enrich.linking``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kg.pack import PackError, first_error


@dataclass(frozen=True, slots=True)
class LinkingExample:
    question: str
    entities: frozenset[str]


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=2000)
    entities: list[str] = Field(max_length=8)
    source: str = Field(default="", max_length=200)


def load_linking_examples(path: Path, known_entities: set[str]) -> tuple[LinkingExample, ...]:
    """Read and check the file (``PackError`` with its line on the first bad row or unknown entity id)."""
    if not path.is_file():
        raise PackError(path, None, "missing: the linking examples named in pack.json graph.linking_examples")
    out: list[LinkingExample] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = _Row.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise PackError(path, number, f"not JSON: {exc.msg}") from exc
        except ValidationError as exc:
            raise PackError(path, number, first_error(exc)) from exc
        unknown = sorted(set(row.entities) - known_entities)
        if unknown:
            raise PackError(path, number, f"entities: unknown ids {unknown}")
        out.append(LinkingExample(row.question, frozenset(row.entities)))
    return tuple(out)
