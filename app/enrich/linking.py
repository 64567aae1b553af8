"""Linking a question to the graph's entities: aliases (typo- and inflection-tolerant, ``kg.linker``) and the pack's
labelled example questions (``domain.linking_examples``), compared by sentence-encoder cosine:

- a question very close to a labelled example (``example_threshold``) is about what that example is about, whatever
  its aliases say ("can i pay extra off my mortgage without being charged" names the mortgage, but asks about its
  early repayment charge; an example labelled "about nothing" keeps look-alike questions unlinked);
- otherwise the aliases decide;
- when no alias matched, the most similar entity description or labelled example is accepted above
  ``embedding_threshold``.

Both thresholds are tuned on the dev part of ``qa/tuning_customer.jsonl`` (``bench/eval_linking.py --tune``), never on
``customer.json``.

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

from app.enrich.dense import DenseIndex, SentenceEncoder, VectorCache
from domain.corpus import Document
from domain.linking_examples import LinkingExample
from kg.linker import EntityLinker, EntityMention, EntityRef
from kg.pack import EntityRow, RelationRow

RATE_WORDS = frozenset({"interest", "rate", "aer", "apr", "ear"})
PART_RELATIONS = frozenset({"HAS_FEE", "HAS_LIMIT", "HAS_RATE"})


@dataclass(frozen=True, slots=True)
class LinkingConfig:
    typos: bool = True
    stems: bool = True
    embedding: bool = True
    examples: bool = True  # compare with the pack's labelled example questions (else entity descriptions only)
    # Tuned on the dev part of packs/fintech/qa/tuning_customer.jsonl (never on customer.json); see bench/RESULTS.md.
    embedding_threshold: float = 0.55
    # Best minus the best other answer's cosine must reach this (0: off; the tuning grid found no margin that helps).
    embedding_margin: float = 0.0
    example_threshold: float = 0.75


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
    """Aliases and labelled examples, then the embedding fallback. Build once; :meth:`link` is thread-safe."""

    def __init__(
        self,
        lexical: EntityLinker,
        entities: Sequence[EntityRef] = (),
        entity_vectors: np.ndarray | None = None,
        encoder: SentenceEncoder | None = None,
        config: LinkingConfig = LinkingConfig(),
        relations: Sequence[RelationRow] = (),
        examples: Sequence[LinkingExample] = (),
        example_vectors: np.ndarray | None = None,
    ) -> None:
        self.lexical = lexical
        self.entities = list(entities)
        self.entity_vectors = entity_vectors
        self.encoder = encoder
        self.config = config
        by_id = {e.id: e for e in self.entities}
        self._by_id = by_id
        if example_vectors is not None and len(example_vectors) != len(examples):
            raise ValueError(f"{len(example_vectors)} example vectors for {len(examples)} examples")
        # Examples about entities this linker does not know are dropped, with their vectors.
        known = [e.entities <= by_id.keys() for e in examples]
        self._examples = [e for e, keep in zip(examples, known, strict=True) if keep]
        self._example_vectors = (
            example_vectors[np.asarray(known, dtype=bool)] if example_vectors is not None and self._examples else None
        )
        # The candidate answers of the similarity stages, and which entities each names (rows: answers, columns:
        # self.entities), so that restricting them to a document's entities is one array operation per request.
        column = {e.id: i for i, e in enumerate(self.entities)}
        self._description_answers = [frozenset({e.id}) for e in self.entities]
        self._example_answers = [e.entities for e in self._examples]
        self._description_names = np.eye(len(self.entities), dtype=bool)
        self._example_names = np.zeros((len(self._examples), len(self.entities)), dtype=bool)
        for row, example in enumerate(self._examples):
            self._example_names[row, [column[i] for i in example.entities]] = True
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
        examples: Sequence[LinkingExample] = (),
        cache: VectorCache | None = None,
    ) -> QuestionLinker:
        """``cache``: keep the examples' vectors on disk beside the passages' (start-up encodes them only once)."""
        refs = [EntityRef(r.id, r.name, r.type) for r in rows]
        lexical = EntityLinker(
            [(ref, row.aliases) for ref, row in zip(refs, rows, strict=True)],
            corpus_words(documents),
            repair_typos=config.typos,
            normalise=config.stems,
        )
        known = {r.id for r in rows}
        examples = [e for e in examples if e.entities <= known]
        vectors = encoder.encode([entity_description(r) for r in rows]) if encoder is not None and rows else None
        example_vectors: np.ndarray | None = None
        if encoder is not None and examples:
            example_vectors = DenseIndex.build(encoder, [e.question for e in examples], cache)[0].vectors
        return cls(lexical, refs, vectors, encoder, config, relations, examples, example_vectors)

    @property
    def size(self) -> int:
        return self.lexical.size

    def link(
        self, text: str, query_vector: np.ndarray | None = None, document_entities: Iterable[str] | None = None
    ) -> list[EntityMention]:
        """Mentions of entities in ``text``; pass the text's sentence vector when you have it (saves an encoding).

        Without a vector, a text the aliases link is not encoded (about 12 ms on 2 CPU cores) just to compare it with
        the labelled examples: the aliases decide. The question-only flow always has the vector from retrieval.

        ``document_entities``: the entities of the documents retrieved for the text (their front matter). When
        given, the embedding fallback only picks among them: a question is about what its best passages are about.
        """
        by_alias = self.link_aliases(text)
        if by_alias and query_vector is None:
            return by_alias
        return self.resolve(text, by_alias, query_vector, document_entities)

    def resolve(
        self,
        text: str,
        by_alias: Sequence[EntityMention],
        query_vector: np.ndarray | None = None,
        document_entities: Iterable[str] | None = None,
    ) -> list[EntityMention]:
        """:meth:`link` for a caller that has the alias mentions already (:meth:`link_aliases` of the same text)."""
        if not self.config.embedding or not text.strip():
            return list(by_alias)
        vector = self._vector(text, query_vector)
        if vector is None:
            return list(by_alias)
        to_examples: np.ndarray | None = None
        if self.config.examples and self._example_vectors is not None:
            to_examples = self._example_vectors @ vector
            best = int(np.argmax(to_examples))
            if to_examples[best] >= self.config.example_threshold:
                return self._mentions_of(text, by_alias, self._examples[best].entities, float(to_examples[best]))
        if by_alias:
            return list(by_alias)
        return self._closest(text, vector, to_examples, document_entities)

    def link_aliases(self, text: str) -> list[EntityMention]:
        """Names and aliases only (typo- and inflection-tolerant), read through the relation rules."""
        mentions = self.lexical.link(text)
        return self._about(text, mentions) if mentions else []

    def _vector(self, text: str, query_vector: np.ndarray | None) -> np.ndarray | None:
        if query_vector is not None:
            return query_vector
        return None if self.encoder is None else self.encoder.encode([text])[0]

    def _closest(
        self,
        text: str,
        vector: np.ndarray,
        to_examples: np.ndarray | None,
        document_entities: Iterable[str] | None,
    ) -> list[EntityMention]:
        """Best answer among entity descriptions and (non-empty) labelled examples, with its margin over the rest.

        ``to_examples``: the text's cosine to every example, as :meth:`resolve` computed it (None: examples off)."""
        answers: list[frozenset[str]] = []
        scores: list[np.ndarray] = []
        names: list[np.ndarray] = []
        if self.entity_vectors is not None:
            answers.extend(self._description_answers)
            scores.append(self.entity_vectors @ vector)
            names.append(self._description_names)
        if to_examples is not None:
            answers.extend(self._example_answers)
            scores.append(to_examples)
            names.append(self._example_names)
        if not answers:
            return []
        similarity = np.concatenate(scores)
        named = np.concatenate(names)
        usable = named.any(axis=1)  # an example about nothing is never the fallback's answer
        if document_entities is not None:
            allowed = set(document_entities)
            outside = np.array([e.id not in allowed for e in self.entities], dtype=bool)
            usable &= ~(named & outside).any(axis=1)
        similarity = np.where(usable, similarity, -1.0)
        order = np.argsort(-similarity, kind="stable")
        best = answers[int(order[0])]
        score = float(similarity[order[0]])
        # The margin is over the best *other* answer: many examples share their labels.
        second = next((float(similarity[i]) for i in order[1:] if answers[int(i)] != best), -1.0)
        if score < self.config.embedding_threshold or score - second < self.config.embedding_margin:
            return []
        return self._mentions_of(text, [], best, score)

    def _mentions_of(
        self, text: str, by_alias: Sequence[EntityMention], entity_ids: frozenset[str], score: float
    ) -> list[EntityMention]:
        """Mentions of ``entity_ids``: an alias mention keeps its span; the others span the whole question."""
        spans = {m.entity.id: m for m in by_alias}
        mentions: list[EntityMention] = []
        for entity_id in sorted(entity_ids):
            named = spans.get(entity_id)
            entity = self._by_id[entity_id]
            mentions.append(named or EntityMention(entity, text, 0, len(text), "embedding", round(score, 4)))
        return sorted(mentions, key=lambda m: m.start)

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
