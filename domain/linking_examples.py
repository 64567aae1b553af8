"""Labelled questions for entity linking: what customers ask, and which graph entities each question is about.

The pack's ``graph.linking_examples`` file holds one JSON object per line, ``{"question": ..., "entities": [...],
"source": ...}``; ``entities`` may be empty ("about nothing in the graph": such an example keeps the linker from
linking look-alike questions); a question has one label (the file is refused where two lines disagree). The fact
catalogue's questions (``qa/facts.yaml``) are examples too, each about its fact's entity, unless the file labels them.
The linker compares a question's sentence vector with every example's (``app.enrich.linking``).
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


def question_key(question: str) -> str:
    """What makes two examples the same question: case and surrounding space do not count."""
    return question.casefold().strip()


def load_linking_examples(path: Path, known_entities: set[str]) -> tuple[LinkingExample, ...]:
    """Read and check the file (``PackError`` with its line on the first bad row or unknown entity id)."""
    if not path.is_file():
        raise PackError(path, None, "missing: the linking examples named in pack.json graph.linking_examples")
    out: list[LinkingExample] = []
    first_seen: dict[str, tuple[int, frozenset[str]]] = {}  # question (case-folded) -> line and labels
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
        labels = frozenset(row.entities)
        key = question_key(row.question)
        if key in first_seen:
            seen_line, seen_labels = first_seen[key]
            if seen_labels != labels:
                raise PackError(
                    path,
                    number,
                    f"entities: {sorted(labels)} but line {seen_line} labels the same question "
                    f"{sorted(seen_labels)}; one question, one label",
                )
            continue  # the same example twice counts once
        first_seen[key] = (number, labels)
        out.append(LinkingExample(row.question, labels))
    return tuple(out)


def with_catalogue(
    examples: tuple[LinkingExample, ...], catalogue: list[tuple[str, str]]
) -> tuple[LinkingExample, ...]:
    """The file's examples, then each catalogue question (with its fact's entity) the file does not already label.

    The file is labelled by hand with what each question is about; a fact's entity is what the fact is stated of,
    which is not always the question's subject (the notice before a rate cut is a fact of the product, the question
    is about its rate). Where both have the question, the file's label is the one used.
    """
    labelled = {question_key(e.question) for e in examples}
    extra: list[LinkingExample] = []
    for question, entity in catalogue:
        key = question_key(question)
        if key not in labelled:
            labelled.add(key)
            extra.append(LinkingExample(question, frozenset({entity})))
    return examples + tuple(extra)
