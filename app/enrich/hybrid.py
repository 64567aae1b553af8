"""Hybrid passage retrieval: BM25 and dense (sentence-encoder) scores fused into one ranking.

Two fusions are offered; :data:`DEFAULT_FUSION` is the one tuned on the domain dev sets (``bench/eval_retrieval.py
--tune``; numbers in ``bench/RESULTS.md``):

- ``rrf``: reciprocal rank fusion, ``sum_i w_i / (rrf_k + rank_i)`` over the two rankings (rank 1 = best; a passage
  with no query word in it has no BM25 rank and gets nothing from BM25). Scale-free, so nothing to normalise.
- ``weighted``: ``bm25_weight * bm25 / max(bm25) + dense_weight * cosine``: keeps how far apart the scores are,
  which ranks alone forget.

Passages of documents about an entity linked in the question get ``entity_bonus`` added to their fused score (on the
fused scale: a top RRF score is about ``(bm25_weight + dense_weight) / (rrf_k + 1)``). The fused score is what the
response reports and what the reader combines with its span score when it chooses among passages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.enrich.dense import DenseIndex, SentenceEncoder
from app.enrich.retrieval import Passage, PassageRetriever, Retrieved

FusionMethod = Literal["rrf", "weighted", "bm25", "dense"]


@dataclass(frozen=True, slots=True)
class FusionConfig:
    method: FusionMethod = "rrf"
    rrf_k: float = 60.0
    bm25_weight: float = 1.0
    dense_weight: float = 1.0
    entity_bonus: float = 0.0
    # A passage no query word occurs in is a candidate only when its cosine similarity reaches this: gibberish and
    # off-topic questions (cosine about 0.1-0.15 here) retrieve nothing rather than the least bad passage.
    min_similarity: float = 0.2


# Tuned on packs/fintech/qa/dev.json and the dev part of qa/tuning_customer.jsonl (never on customer.json): see
# bench/RESULTS.md, "Hybrid retrieval" (and why a reciprocal-rank fusion that a later rerun preferred is not served).
DEFAULT_FUSION = FusionConfig(method="weighted", bm25_weight=1.0, dense_weight=4.0, entity_bonus=0.4)


def _ranks(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """1-based rank of every score (best = 1, ties broken by position); ineligible entries get +inf."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=float)
    ranks[order] = np.arange(1, len(scores) + 1, dtype=float)
    ranks[~eligible] = np.inf
    return ranks


def fuse(bm25: np.ndarray, dense: np.ndarray | None, config: FusionConfig) -> np.ndarray:
    """One fused score per passage from BM25 scores and (when there is an encoder) cosine similarities."""
    if dense is None or config.method == "bm25":
        return bm25
    if config.method == "dense":
        return dense
    if config.method == "rrf":
        bm25_ranks = _ranks(bm25, bm25 > 0)
        dense_ranks = _ranks(dense, np.ones(len(dense), dtype=bool))
        return config.bm25_weight / (config.rrf_k + bm25_ranks) + config.dense_weight / (config.rrf_k + dense_ranks)
    top = float(bm25.max()) if len(bm25) else 0.0
    normalised = bm25 / top if top > 0 else bm25
    return config.bm25_weight * normalised + config.dense_weight * dense


class HybridRetriever:
    """BM25 + dense passage retrieval over one corpus. Build once; :meth:`search` is thread-safe.

    Without an encoder (``encoder=None``) it is plain BM25 with the same interface.
    """

    def __init__(
        self,
        bm25: PassageRetriever,
        encoder: SentenceEncoder | None = None,
        index: DenseIndex | None = None,
        fusion: FusionConfig = DEFAULT_FUSION,
    ) -> None:
        if (encoder is None) != (index is None):
            raise ValueError("give both the encoder and its dense index, or neither")
        if index is not None and len(index) != len(bm25.passages):
            raise ValueError(f"dense index has {len(index)} vectors for {len(bm25.passages)} passages")
        self.bm25 = bm25
        self.encoder = encoder
        self.index = index
        self.fusion = fusion

    @property
    def passages(self) -> list[Passage]:
        return self.bm25.passages

    @property
    def dense(self) -> bool:
        return self.encoder is not None

    def encode_query(self, query: str) -> np.ndarray | None:
        """The query's unit vector (None without an encoder); pass it to :meth:`search` to encode once per request."""
        return None if self.encoder is None else self.encoder.encode([query])[0]

    def scores(
        self, query: str, entity_ids: Iterable[str] = (), query_vector: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Fused score of every passage, and which passages are candidates at all (see ``min_similarity``)."""
        bm25 = self.bm25.scores(query)
        dense: np.ndarray | None = None
        if self.index is not None and self.fusion.method != "bm25":
            vector = query_vector if query_vector is not None else self.encode_query(query)
            assert vector is not None
            dense = self.index.scores(vector)
        fused = fuse(bm25, dense, self.fusion)
        eligible = bm25 > 0
        if dense is not None:
            eligible |= dense >= self.fusion.min_similarity
        linked = set(entity_ids)
        if linked and self.fusion.entity_bonus:
            about = np.array([bool(p.entities & linked) for p in self.bm25.passages])
            fused = fused + self.fusion.entity_bonus * about
        return fused, eligible

    def search(
        self, query: str, k: int = 5, entity_ids: Iterable[str] = (), query_vector: np.ndarray | None = None
    ) -> list[Retrieved]:
        """The ``k`` best candidate passages, best first (none when nothing in the corpus is near the question)."""
        fused, eligible = self.scores(query, entity_ids, query_vector)
        fused = np.where(eligible, fused, -np.inf)
        order = np.argsort(-fused, kind="stable")[:k]
        return [Retrieved(self.bm25.passages[i], float(fused[i])) for i in order if eligible[i]]
