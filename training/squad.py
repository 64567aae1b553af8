"""SQuAD-format files: read (plain or gzip), hash, and write predictions."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    start: int

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True, slots=True)
class QAExample:
    """One question over one context, with its reference answers (none when ``is_impossible``)."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...] = field(default_factory=tuple)
    is_impossible: bool = False
    title: str = ""


class SquadFormatError(ValueError):
    """A file that is not SQuAD format; the message names the file and the first bad record."""


def read_squad_json(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise SquadFormatError(f"{path}: cannot read SQuAD JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise SquadFormatError(f'{path}: expected an object with a "data" list (SQuAD format)')
    return data


def iter_examples(path: Path) -> Iterator[QAExample]:
    """Yield every question of a SQuAD v1.1/v2.0 file in file order."""
    data = read_squad_json(path)
    for a, article in enumerate(data["data"]):
        title = str(article.get("title", ""))
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            try:
                context = paragraph["context"]
                qas = paragraph["qas"]
            except (KeyError, TypeError) as exc:
                raise SquadFormatError(f"{path}: data[{a}].paragraphs[{p}] lacks {exc}") from exc
            for q, qa in enumerate(qas):
                try:
                    answers = tuple(Answer(text=x["text"], start=int(x["answer_start"])) for x in qa.get("answers", []))
                    yield QAExample(
                        id=str(qa["id"]),
                        question=qa["question"],
                        context=context,
                        answers=answers,
                        is_impossible=bool(qa.get("is_impossible", False)) or not answers,
                        title=title,
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    raise SquadFormatError(f"{path}: data[{a}].paragraphs[{p}].qas[{q}] is malformed: {exc}") from exc


def load_examples(path: Path, limit: int | None = None) -> list[QAExample]:
    examples: list[QAExample] = []
    for example in iter_examples(path):
        if limit is not None and len(examples) >= limit:
            break
        examples.append(example)
    return examples


def dataset_name(path: Path) -> str:
    """``squad-v1.1-dev.json.gz`` -> ``squad-v1.1-dev``: the file name without its data-format extensions."""
    name = path.name
    for suffix in (".gz", ".json", ".jsonl"):
        name = name.removesuffix(suffix)
    return name


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
