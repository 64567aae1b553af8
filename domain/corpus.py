"""A pack's corpus: markdown documents with a YAML front matter, validated one by one and as a set.

Front matter fields: ``id`` and ``title`` (required), ``type``, ``entities`` (graph ids the document is about),
``effective`` (the date from which the document's undated statements hold; default: they hold from today on) and
``examples`` (worked examples the lint recomputes, see :class:`WorkedExample`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from domain import yaml_lines
from domain.formula import Formula, FormulaError
from domain.quantities import numbers_in
from kg.pack import PackError

FRONT_MATTER = re.compile(r"\A---\n(.*?)\n---\n", re.S)
FACT_REFERENCE = re.compile(r"^(?P<entity>[a-z][a-z0-9_]*:[a-z0-9][a-z0-9_.-]*)\.(?P<property>[a-z][a-z0-9_]*)$")


class WorkedExample(BaseModel):
    """Arithmetic stated in a document, recomputed by ``vqa pack lint``.

    ``text`` is an exact excerpt of the body (it locates the example and exempts the numbers it names in ``given``
    and ``result`` from the graph comparison). ``given`` binds formula names to numbers or to graph facts
    (``"rate:arranged-overdraft-ear.percent"``, read on the document's date). ``result`` is the number as the text
    writes it (``"£13.99"``); it must equal ``formula`` to the precision it is written with. An example without
    ``formula`` only marks illustrative numbers (a customer's own amount repeated back) as not being facts.
    """

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=3)
    given: dict[str, float | str] = Field(default_factory=dict)
    formula: str | None = None
    result: str | None = None

    @field_validator("given")
    @classmethod
    def _references(cls, given: dict[str, float | str]) -> dict[str, float | str]:
        for name, value in given.items():
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a formula name")
            if isinstance(value, str) and not FACT_REFERENCE.match(value):
                raise ValueError(f"{name}: {value!r} is neither a number nor 'entity:id.property'")
        return given

    @model_validator(mode="after")
    def _formula(self) -> WorkedExample:
        if self.formula is None:
            if self.result is not None or self.given:
                raise ValueError("given/result need a formula")
            return self
        if self.result is None:
            raise ValueError("a formula needs the result the text states")
        if self.result not in self.text:
            raise ValueError(f"result {self.result!r} does not occur in text")
        try:
            names = Formula(self.formula).names
        except FormulaError as exc:
            raise ValueError(f"formula: {exc}") from exc
        unknown = names - self.given.keys()
        if unknown:
            raise ValueError(f"formula uses {sorted(unknown)}, which given does not define")
        stated = numbers_in(self.text)
        for name, value in self.given.items():
            if not isinstance(value, str) and not any(abs(value - n) < 1e-9 for n in stated):
                raise ValueError(
                    f"given.{name}: {value:g} does not occur in text (inputs are the document's numbers; "
                    "write constants into the formula)"
                )
        return self


class FrontMatter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=120)
    title: str = Field(min_length=1)
    type: str = "document"
    entities: list[str] = Field(default_factory=list)
    effective: date | None = None
    examples: list[WorkedExample] = Field(default_factory=list)

    @field_validator("id", "title", mode="before")
    @classmethod
    def _text(cls, value: object, info: ValidationInfo) -> object:
        return str(value) if isinstance(value, int | float) else value


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    title: str
    type: str
    entities: frozenset[str]
    body: str  # the text after the front matter, stripped: what retrieval, the reader and the QA sets see
    path: Path
    body_line: int  # file line of body[0]
    effective: date | None = None
    examples: tuple[WorkedExample, ...] = ()

    def line_of(self, offset: int) -> int:
        """File line of ``body[offset]``."""
        return self.body_line + self.body.count("\n", 0, offset)


def load_corpus(folder: Path) -> list[Document]:
    """Every ``*.md`` document of ``folder``, validated; ids unique; each example's text found in its body."""
    if not folder.is_dir():
        raise PackError(folder, None, "corpus folder missing")
    docs: list[Document] = []
    seen: dict[str, Path] = {}
    for path in sorted(folder.glob("*.md")):
        doc = read_document(path)
        if doc.id in seen:
            raise PackError(path, 2, f"id: duplicate document id {doc.id!r} (also {seen[doc.id]})")
        seen[doc.id] = path
        docs.append(doc)
    if not docs:
        raise PackError(folder, None, "no documents (*.md)")
    return docs


def read_document(path: Path) -> Document:
    text = path.read_text(encoding="utf-8")
    match = FRONT_MATTER.match(text)
    if match is None:
        raise PackError(path, 1, "front matter: missing (a '---' block with id, title, entities)")
    data, root = yaml_lines.parse(match.group(1), path, first_line=2)
    if not isinstance(data, dict):
        raise PackError(path, 2, "front matter: expected a mapping with id and title")
    meta = yaml_lines.validate(FrontMatter, data, root, path, first_line=2)
    rest = text[match.end() :]
    body = rest.strip()
    body_start = match.end() + (len(rest) - len(rest.lstrip()))
    doc = Document(
        id=meta.id,
        title=meta.title,
        type=meta.type,
        entities=frozenset(meta.entities),
        body=body,
        path=path,
        body_line=text.count("\n", 0, body_start) + 1,
        effective=meta.effective,
        examples=tuple(meta.examples),
    )
    for index, example in enumerate(meta.examples):
        if example.text not in body:
            line = yaml_lines.line_of(root, ("examples", index, "text")) + 1
            raise PackError(path, line, f"examples[{index}].text: not found in the document body")
    return doc
