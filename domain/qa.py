"""A pack's QA sets (SQuAD v2 format): every span slices its context, contexts are the current document bodies,
and documents are split train/dev/test by a hash of their id, so no document is in two splits."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain import yaml_lines
from domain.corpus import Document
from domain.manifest import QASetSpec
from kg.pack import PackError

SPLITS = (("train", 0.7), ("dev", 0.15), ("test", 0.15))


def split_of(doc_id: str) -> str:
    """Stable split by a hash of the document id (about 70/15/15). Renaming a document moves it; keep ids."""
    bucket = int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if bucket < edge:
            return name
    return SPLITS[-1][0]


def check_qa_file(
    path: Path, documents: Mapping[str, Document] | None = None, entities: Collection[str] | None = None
) -> Counter[str]:
    """Counts of documents, answerable and unanswerable questions; raises :class:`PackError` on the first problem.

    Checks: unique question ids, ``context[answer_start:][:len(text)] == text`` for every answer, unanswerable
    questions without answers; with ``documents``, every article names a corpus document and its context is that
    document's body exactly (a stale context means the corpus changed after the set was written); with
    ``entities``, the graph ids a question is labelled with (hand-written sets' ``entities``) exist.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PackError(path, getattr(exc, "lineno", None), f"cannot read QA set: {exc}") from exc
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for article in data.get("data", []):
        title = article.get("title", "")
        counts["documents"] += 1
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            if documents is not None:
                doc = documents.get(title)
                if doc is None:
                    raise PackError(path, None, f"{title}: title: no corpus document with this id")
                if context != doc.body:
                    raise PackError(
                        path,
                        None,
                        f"{title}: context: differs from the document body ({doc.path}); rebuild built sets with "
                        "`vqa pack build-qa`, re-anchor hand-written spans",
                    )
            for qa in paragraph["qas"]:
                _check_question(path, qa, context, seen, counts)
                unknown = sorted(set(qa.get("entities", [])) - set(entities)) if entities is not None else []
                if unknown:
                    raise PackError(path, None, f"{qa['id']}: entities: unknown graph ids {unknown}")
    return counts


def _check_question(path: Path, qa: dict[str, Any], context: str, seen: set[str], counts: Counter[str]) -> None:
    qa_id = qa["id"]
    if qa_id in seen:
        raise PackError(path, None, f"{qa_id}: id: duplicate question id")
    seen.add(qa_id)
    if qa.get("is_impossible"):
        if qa["answers"]:
            raise PackError(path, None, f"{qa_id}: answers: unanswerable (is_impossible) but has answers")
        counts["unanswerable"] += 1
        return
    if not qa["answers"]:
        raise PackError(path, None, f"{qa_id}: answers: answerable but has none")
    for index, answer in enumerate(qa["answers"]):
        start, text = answer["answer_start"], answer["text"]
        if context[start : start + len(text)] != text:
            raise PackError(
                path,
                None,
                f"{qa_id}: answers[{index}]: context[{start}:{start + len(text)}] is "
                f"{context[start : start + len(text)]!r}, not {text!r}",
            )
    counts["answerable"] += 1


def check_splits(root: Path, sets: list[QASetSpec]) -> None:
    """Each set's documents come from its declared splits; no document is in two built sets."""
    owners: dict[str, str] = {}
    for spec in sets:
        path = root / spec.path
        data = json.loads(path.read_text(encoding="utf-8"))
        for article in data["data"]:
            doc_id = article["title"]
            split = split_of(doc_id)
            if split not in spec.splits:
                raise PackError(
                    path, None, f"{doc_id}: split: the document is in {split}, and set {spec.name} takes {spec.splits}"
                )
            if spec.source == "built":
                if doc_id in owners:
                    raise PackError(path, None, f"{doc_id}: document is in {owners[doc_id]} and {spec.name}")
                owners[doc_id] = spec.name


class CatalogueFact(BaseModel):
    """One fact of the catalogue: how documents state it (a regex) and the questions customers ask about it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    entity: str
    answer: str
    questions: list[str] = Field(min_length=1)

    @field_validator("answer")
    @classmethod
    def _compiles(cls, answer: str) -> str:
        try:
            re.compile(answer)
        except re.error as exc:
            raise ValueError(f"bad regular expression: {exc}") from exc
        return answer


class FactCatalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: str
    facts: list[CatalogueFact]

    @classmethod
    def load(cls, path: Path) -> FactCatalogue:
        if not path.is_file():
            raise PackError(path, None, "missing: the fact catalogue named in pack.json qa.facts")
        data, root = yaml_lines.parse(path.read_text(encoding="utf-8"), path)
        catalogue = yaml_lines.validate(cls, data, root, path)
        seen: set[str] = set()
        for index, fact in enumerate(catalogue.facts):
            if fact.id in seen:
                raise PackError(path, yaml_lines.line_of(root, ("facts", index, "id")), f"facts[{index}].id: duplicate")
            seen.add(fact.id)
        return catalogue

    def entity_lines(self, path: Path) -> dict[str, int]:
        """Line of each fact's ``entity`` key (for errors about unknown entities)."""
        _, root = yaml_lines.parse(path.read_text(encoding="utf-8"), path)
        return {f.id: yaml_lines.line_of(root, ("facts", i, "entity")) for i, f in enumerate(self.facts)}
