"""Linking a question to the graph's entities: aliases first (typo- and inflection-tolerant, ``kg.linker``), then,
when no alias matched, the entity whose description is most similar to the question (sentence-encoder cosine),
accepted only above a threshold tuned on labelled dev questions (``bench/eval_linking.py --tune``).

Two rules from the graph's own relations say what a question is about when it names a product with one of its parts:

- a product and one of its own fees, limits or rates ("the early repayment charge on the mortgage"): the question is
  about the part, so the product is dropped;
- a product with a rate word ("interest", "rate", "AER", "APR", "EAR") and exactly one ``HAS_RATE`` rate ("what rate
  does the Easy Saver pay"): the question is about that rate; a term that defines it (AER, APR) is dropped too.

The question's vector is the one dense retrieval already computed: linking costs one matrix-vector product more.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from app.enrich.dense import SentenceEncoder
from domain.corpus import Document
from kg.linker import EntityLinker, EntityMention, EntityRef
from kg.pack import EntityRow, RelationRow

RATE_WORDS = frozenset({"interest", "rate", "aer", "apr", "ear"})
PART_RELATIONS = frozenset({"HAS_FEE", "HAS_LIMIT", "HAS_RATE"})


@dataclass(frozen=True, slots=True)
class LinkingConfig:
    typos: bool = True
    stems: bool = True
    embedding: bool = True
    # Tuned on packs/fintech/qa/linking_dev.jsonl (never on customer.json); see bench/RESULTS.md.
    embedding_threshold: float = 0.3
    embedding_margin: float = 0.05  # best minus second-best cosine: ties between two entities link neither


def entity_description(row: EntityRow) -> str:
    """What the encoder compares questions with: name, type, aliases and a description when the pack gives one."""
    parts = [f"{row.name} ({row.type.lower()})"]
    description = row.props.get("description")
    if isinstance(description, str):
        parts.append(description)
    if row.aliases:
        parts.append("Also called: " + ", ".join(row.aliases))
    return ". ".join(parts)


def corpus_words(documents: Iterable[Document]) -> set[str]:
    """Words of the corpus: spelt right by definition, so never "repaired" into an alias word."""
    words: set[str] = set()
    for doc in documents:
        words.update(w.lower() for w in doc.body.replace("\n", " ").split())
        words.update(w.lower() for w in doc.title.split())
    return {w.strip(".,;:!?()\"'’") for w in words}


class QuestionLinker:
    """Aliases, then the embedding fallback. Build once; :meth:`link` is thread-safe."""

    def __init__(
        self,
        lexical: EntityLinker,
        entities: Sequence[EntityRef] = (),
        entity_vectors: np.ndarray | None = None,
        encoder: SentenceEncoder | None = None,
        config: LinkingConfig = LinkingConfig(),
        relations: Sequence[RelationRow] = (),
    ) -> None:
        self.lexical = lexical
        self.entities = list(entities)
        self.entity_vectors = entity_vectors
        self.encoder = encoder
        self.config = config
        by_id = {e.id: e for e in self.entities}
        self._parts: dict[str, set[str]] = {}  # product id -> its fees, limits and rates
        rates: dict[str, list[str]] = {}
        self._defined_by: dict[str, set[str]] = {}  # rate id -> the terms that define it
        for r in relations:
            if r.type in PART_RELATIONS:
                self._parts.setdefault(r.source, set()).add(r.target)
            if r.type == "HAS_RATE" and r.target in by_id:
                rates.setdefault(r.source, []).append(r.target)
            if r.type == "DEFINED_BY":
                self._defined_by.setdefault(r.source, set()).add(r.target)
        self._rate_of = {product: by_id[ids[0]] for product, ids in rates.items() if len(ids) == 1}

    @classmethod
    def from_pack(
        cls,
        rows: Sequence[EntityRow],
        documents: Iterable[Document] = (),
        encoder: SentenceEncoder | None = None,
        config: LinkingConfig = LinkingConfig(),
        relations: Sequence[RelationRow] = (),
    ) -> QuestionLinker:
        refs = [EntityRef(r.id, r.name, r.type) for r in rows]
        lexical = EntityLinker(
            [(ref, row.aliases) for ref, row in zip(refs, rows, strict=True)],
            corpus_words(documents),
            repair_typos=config.typos,
            normalise=config.stems,
        )
        vectors = encoder.encode([entity_description(r) for r in rows]) if encoder is not None and rows else None
        return cls(lexical, refs, vectors, encoder, config, relations)

    @property
    def size(self) -> int:
        return self.lexical.size

    def link(
        self, text: str, query_vector: np.ndarray | None = None, document_entities: Iterable[str] | None = None
    ) -> list[EntityMention]:
        """Mentions of entities in ``text``; pass the text's sentence vector when you have it (saves an encoding).

        ``document_entities``: the entities of the documents retrieved for the text (their front matter). When
        given, the embedding fallback only picks among them: a question is about what its best passages are about.
        """
        mentions = self.link_aliases(text)
        if mentions:
            return mentions
        return self.link_by_similarity(text, query_vector, document_entities)

    def link_aliases(self, text: str) -> list[EntityMention]:
        """Names and aliases only (typo- and inflection-tolerant), read through the relation rules."""
        mentions = self.lexical.link(text)
        return self._about(text, mentions) if mentions else []

    def link_by_similarity(
        self, text: str, query_vector: np.ndarray | None = None, document_entities: Iterable[str] | None = None
    ) -> list[EntityMention]:
        """The fallback alone: the entity most similar to the text, if similar enough (see :meth:`link`)."""
        if not self.config.embedding or self.entity_vectors is None or not text.strip():
            return []
        if query_vector is None:
            if self.encoder is None:
                return []
            query_vector = self.encoder.encode([text])[0]
        similarity = self.entity_vectors @ query_vector
        if document_entities is not None:
            allowed = set(document_entities)
            similarity = np.where([e.id in allowed for e in self.entities], similarity, -1.0)
        order = np.argsort(-similarity)
        best = float(similarity[order[0]])
        second = float(similarity[order[1]]) if len(order) > 1 else -1.0
        if best < self.config.embedding_threshold or best - second < self.config.embedding_margin:
            return []
        entity = self.entities[int(order[0])]
        # Nothing in the text names it: the mention spans the whole question.
        return [EntityMention(entity, text, 0, len(text), "embedding", round(best, 4))]

    def _about(self, text: str, mentions: list[EntityMention]) -> list[EntityMention]:
        """Apply the two relation rules (module docstring) to what the aliases found."""
        linked = {m.entity.id for m in mentions}
        rate_keys = {self.lexical.normal_form(w) for w in RATE_WORDS}
        rate_words = [t for t in self.lexical.tokens(text) if t.key in rate_keys]
        out: list[EntityMention] = []
        for m in mentions:
            if self._parts.get(m.entity.id, set()) & linked:
                continue  # the product's own fee/limit/rate is named: that is the subject
            rate = self._rate_of.get(m.entity.id)
            # A rate word inside the product's own name ("Fixed Rate Bond") does not ask for its rate.
            asks_rate = any(not m.start <= t.start < m.end for t in rate_words)
            if asks_rate and rate is not None and not any(e.startswith("rate:") for e in linked):
                m = EntityMention(rate, m.text, m.start, m.end, m.method, m.score)
            out.append(m)
        rates = {m.entity.id for m in out if m.entity.type == "Rate"}
        defining = set().union(*(self._defined_by.get(r, set()) for r in rates)) if rates else set()
        unique: dict[str, EntityMention] = {}
        for m in out:
            if m.entity.id not in defining:
                unique.setdefault(m.entity.id, m)
        return sorted(unique.values(), key=lambda m: m.start)
