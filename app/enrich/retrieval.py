"""Passages from the domain corpus for questions asked without contexts: BM25, boosted by linked graph entities.

The corpus comes from the domain pack (``domain.corpus.Document``: body plus the graph ids it is about). Documents
are cut into passages of whole paragraphs; passages whose document is about an entity linked in the question get
their BM25 score multiplied by ``1 + entity_boost``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import bm25s
import numpy as np

from domain.corpus import Document


@dataclass(frozen=True, slots=True)
class Passage:
    id: str  # "<doc id>#<index>"
    doc_id: str
    title: str
    text: str
    entities: frozenset[str]


@dataclass(frozen=True, slots=True)
class Retrieved:
    passage: Passage
    score: float


def passages_of(documents: Sequence[Document], max_words: int = 120) -> list[Passage]:
    """Documents cut into passages of whole paragraphs, at most about ``max_words`` words each."""
    passages: list[Passage] = []
    for doc in documents:
        chunk: list[str] = []
        words = 0
        index = 0
        for paragraph in (p.strip() for p in doc.body.split("\n\n")):
            if not paragraph:
                continue
            n = len(paragraph.split())
            if chunk and words + n > max_words:
                passages.append(Passage(f"{doc.id}#{index}", doc.id, doc.title, "\n\n".join(chunk), doc.entities))
                index += 1
                chunk, words = [], 0
            chunk.append(paragraph)
            words += n
        if chunk:
            passages.append(Passage(f"{doc.id}#{index}", doc.id, doc.title, "\n\n".join(chunk), doc.entities))
    return passages


class PassageRetriever:
    """BM25 over passages (title + text), built once; :meth:`search` is read-only and thread-safe."""

    def __init__(self, passages: list[Passage], entity_boost: float = 0.5) -> None:
        self.passages = passages
        self.entity_boost = entity_boost
        tokens = bm25s.tokenize([f"{p.title}\n{p.text}" for p in passages], stopwords="en", show_progress=False)
        self._index = bm25s.BM25()
        self._index.index(tokens, show_progress=False)
        self._vocab = tokens.vocab

    @classmethod
    def from_documents(cls, documents: Sequence[Document], entity_boost: float = 0.5) -> PassageRetriever:
        return cls(passages_of(documents), entity_boost)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage (in ``passages`` order) for the query; 0 where no query word occurs."""
        query_tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
        known = [t for t in query_tokens if t in self._vocab]
        return np.asarray(self._index.get_scores(known), dtype=float) if known else np.zeros(len(self.passages))

    def search(self, query: str, k: int = 5, entity_ids: Iterable[str] = ()) -> list[Retrieved]:
        scores = self.scores(query)
        linked = set(entity_ids)
        if linked:
            boost = np.array([1.0 + self.entity_boost if p.entities & linked else 1.0 for p in self.passages])
            scores = scores * boost
        order = np.argsort(-scores, kind="stable")[:k]
        return [Retrieved(self.passages[i], float(scores[i])) for i in order if scores[i] > 0]
