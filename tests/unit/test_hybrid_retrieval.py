"""Fusion of BM25 and dense scores, the on-disk vector cache, and choosing among passages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.enrich.dense import CachedVectors, DenseIndex, VectorCache, passage_cache_key
from app.enrich.hybrid import FusionConfig, HybridRetriever, fuse
from app.enrich.retrieval import PassageRetriever
from app.qa.choice import rank_answers
from app.qa.reader import SpanAnswer
from domain.corpus import load_corpus


def test_rrf_rewards_agreement_and_ignores_passages_without_query_words() -> None:
    bm25 = np.array([3.0, 0.0, 1.0])
    dense = np.array([0.2, 0.9, 0.5])
    fused = fuse(bm25, dense, FusionConfig("rrf", rrf_k=10))
    # passage 0: bm25 rank 1 + dense rank 3; passage 1: no bm25 rank + dense rank 1; passage 2: ranks 2 and 2
    assert fused == pytest.approx([1 / 11 + 1 / 13, 1 / 11, 1 / 12 + 1 / 12])
    assert fused[1] < min(fused[0], fused[2]), "best dense rank alone loses to two good ranks"


def test_weighted_fusion_normalises_bm25_by_its_best() -> None:
    fused = fuse(np.array([4.0, 2.0]), np.array([0.1, 0.5]), FusionConfig("weighted", dense_weight=2.0))
    assert fused == pytest.approx([1.0 + 0.2, 0.5 + 1.0])


class _FakeEncoder:
    """Maps known texts to fixed unit vectors (the real encoder is tested in tests/integration)."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = {k: np.asarray(v, dtype=np.float32) / np.linalg.norm(v) for k, v in table.items()}

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def _corpus(tmp_path: Path) -> PassageRetriever:
    head = "---\nid: {}\ntitle: {}\nentities: [{}]\n---\n"
    (tmp_path / "a.md").write_text(head.format("fees", "Fees", "fee:x") + "A banker's draft costs ten pounds.\n")
    (tmp_path / "b.md").write_text(head.format("tap", "Tap", "limit:y") + "Pay by tapping up to one hundred.\n")
    return PassageRetriever.from_documents(load_corpus(tmp_path))


def test_dense_finds_a_passage_with_no_shared_word_and_gibberish_finds_nothing(tmp_path: Path) -> None:
    bm25 = _corpus(tmp_path)
    encoder = _FakeEncoder({"contactless ceiling?": [0, 1], "xyzzy": [0.1, -1], "draft": [1, 0]})
    index = DenseIndex(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    hybrid = HybridRetriever(bm25, encoder, index, FusionConfig("weighted", dense_weight=4.0))  # type: ignore[arg-type]
    assert bm25.search("contactless ceiling?") == [], "no word in common"
    assert [r.passage.doc_id for r in hybrid.search("contactless ceiling?", k=1)] == ["tap"]
    assert hybrid.search("xyzzy", k=2) == [], "below min_similarity and no word in common"
    boosted = hybrid.search("draft", k=2, entity_ids=["limit:y"])
    assert [r.passage.doc_id for r in boosted][0] == "fees", "a small bonus does not beat a clear match"


def test_vector_cache_hits_only_for_the_same_key_and_recovers_from_a_bad_file(tmp_path: Path) -> None:
    cache = VectorCache(tmp_path)
    calls: list[int] = []

    def compute() -> np.ndarray:
        calls.append(1)
        return np.ones((2, 3), dtype=np.float32)

    first: CachedVectors = cache.get_or_compute("k1", 2, compute)
    second = cache.get_or_compute("k1", 2, compute)
    assert (first.cache_hit, second.cache_hit, len(calls)) == (False, True, 1)
    assert np.array_equal(first.vectors, second.vectors)
    (tmp_path / "k1.npy").write_bytes(b"not numpy")
    assert cache.get_or_compute("k1", 2, compute).cache_hit is False and len(calls) == 2
    assert cache.get_or_compute("k1", 3, compute).cache_hit is False, "row count differs: recomputed"


def test_cache_key_changes_with_the_corpus_and_the_encoder() -> None:
    class Enc:
        max_length = 256
        identity = "a"

    enc = Enc()
    key = passage_cache_key(enc, ["one", "two"])  # type: ignore[arg-type]
    assert passage_cache_key(enc, ["one", "two"]) == key  # type: ignore[arg-type]
    assert passage_cache_key(enc, ["one", "two!"]) != key  # type: ignore[arg-type]
    assert passage_cache_key(enc, ["onetwo"]) != passage_cache_key(enc, ["one", "two"])  # type: ignore[arg-type]
    enc.identity = "b"
    assert passage_cache_key(enc, ["one", "two"]) != key  # type: ignore[arg-type]


def test_the_retrieval_score_can_overrule_a_slightly_better_span() -> None:
    in_second = SpanAnswer("£10", 0.6, 0, 3, 1)
    in_first = SpanAnswer("£5", 0.5, 0, 2, 0)
    scores = [2.0, 1.0]
    assert rank_answers([in_second, in_first], scores, retrieval_weight=0.0)[0] is in_second
    assert rank_answers([in_second, in_first], scores, retrieval_weight=1.0)[0] is in_first
