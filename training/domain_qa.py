"""The built QA sets of a domain pack: made from its fact catalogue and corpus, split by document.

``qa/facts.yaml`` lists facts with a regular expression for how documents state them and the questions customers ask
about them. Every document that states a fact gets every question (plus one deterministic customer-style variant:
chatty, lower-case, or with a typo), answered by the exact span the expression matched. Documents about the fact's
entity that do not state it get unanswerable questions (``is_impossible``). Documents, not questions, are split into
train/dev/test (:func:`domain.qa.split_of`), so no document appears in two splits. Checking the sets is the pack's
job (``DomainPack.check_qa``).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from typing import Any

from domain.pack import DomainPack
from domain.qa import SPLITS, check_qa_file, check_splits, split_of
from kg.pack import PackError

PREFIXES = ("hi, ", "hello ", "quick question - ", "hey, ", "sorry to bother you but ", "hiya ", "good morning, ")
SUFFIXES = (" thanks", " pls", " cheers", "??", " thank you", " x")


def customer_variant(question: str, seed: str) -> str:
    """A deterministic informal rewrite: chatty prefix/suffix, lower case without '?', or a typo."""
    rng = random.Random(seed)
    q = question
    style = rng.randrange(3)
    if style == 0:
        q = rng.choice(PREFIXES) + q[0].lower() + q[1:]
    elif style == 1:
        q = q.lower().rstrip("?") + rng.choice(SUFFIXES)
    words = q.split(" ")
    long_words = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if style == 2 or (long_words and rng.random() < 0.4):
        if long_words:
            i = rng.choice(long_words)
            w = words[i]
            j = rng.randrange(1, len(w) - 2)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]  # swap two neighbouring letters
            q = " ".join(words)
    return q if q != question else question.rstrip("?") + " please"


def build(pack: DomainPack) -> dict[str, dict[str, Any]]:
    """SQuAD v2-format datasets per split, built from the pack's fact catalogue and corpus."""
    catalogue = pack.catalogue
    if catalogue is None:
        raise PackError(pack.root / "pack.json", None, "qa.facts: the pack names no fact catalogue to build from")
    facts = [(fact, re.compile(fact.answer)) for fact in catalogue.facts]
    datasets: dict[str, dict[str, Any]] = {
        name: {"version": f"v2.0 {pack.name} {catalogue.version}", "data": []} for name, _ in SPLITS
    }
    for doc in pack.documents:
        qas: list[dict[str, Any]] = []
        for fact, expression in facts:
            # Only documents about the fact's entity: "14 days" in the bond terms is no answer to a loan question.
            about = fact.entity in doc.entities
            match = expression.search(doc.body) if about else None
            if match is not None:
                answer = {"text": match.group(), "answer_start": match.start()}
                for n, question in enumerate(fact.questions):
                    for k, text in enumerate((question, customer_variant(question, f"{doc.id}/{fact.id}/{n}"))):
                        qas.append(
                            {
                                "id": f"{doc.id}/{fact.id}/{n}{'ab'[k]}",
                                "question": text,
                                "answers": [answer],
                                "is_impossible": False,
                            }
                        )
            elif about:
                for n, question in enumerate(fact.questions[:3]):
                    qas.append(
                        {"id": f"{doc.id}/{fact.id}/{n}x", "question": question, "answers": [], "is_impossible": True}
                    )
        if qas:
            paragraph = {"context": doc.body, "qas": qas}
            datasets[split_of(doc.id)]["data"].append({"title": doc.id, "paragraphs": [paragraph]})
    return datasets


def write(pack: DomainPack, datasets: dict[str, dict[str, Any]]) -> dict[str, Counter[str]]:
    """Write each built set of the manifest (one split each) and check what was written."""
    documents = {d.id: d for d in pack.documents}
    built = [s for s in pack.manifest.qa.sets if s.source == "built"]
    counts: dict[str, Counter[str]] = {}
    for spec in built:
        if len(spec.splits) != 1:
            raise PackError(pack.root / "pack.json", None, f"qa.sets.{spec.name}: a built set takes exactly one split")
        path = pack.root / spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        data = datasets[spec.splits[0]]
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        counts[spec.name] = check_qa_file(path, documents)
    check_splits(pack.root, built)
    return counts


def retrieval_recall(pack: DomainPack, split: str = "dev", k: int = 5, entity_boost: float = 0.5) -> dict[str, float]:
    """Share of answerable ``split`` questions whose document is among the top-k retrieved passages' documents."""
    from app.enrich.retrieval import PassageRetriever
    from kg.linker import EntityLinker, EntityRef

    retriever = PassageRetriever.from_documents(pack.documents, entity_boost)
    linker = EntityLinker([(EntityRef(e.id, e.name, e.type), e.aliases) for e in pack.graph.entities])
    data = json.loads(pack.qa_path(split).read_text(encoding="utf-8"))
    doc_hits = doc_hits_plain = answer_hits = answer_hits_plain = total = 0
    for article in data["data"]:
        for qa in article["paragraphs"][0]["qas"]:
            if qa["is_impossible"]:
                continue
            total += 1
            answer = qa["answers"][0]["text"]
            linked = [m.entity.id for m in linker.link(qa["question"])]
            boosted = retriever.search(qa["question"], k, linked)
            plain = retriever.search(qa["question"], k)
            doc_hits += article["title"] in {r.passage.doc_id for r in boosted}
            doc_hits_plain += article["title"] in {r.passage.doc_id for r in plain}
            answer_hits += any(answer in r.passage.text for r in boosted)
            answer_hits_plain += any(answer in r.passage.text for r in plain)
    n = max(total, 1)
    # "document": the question's own document is retrieved; "answer": some retrieved passage holds the answer
    # text (most facts are stated in several documents, so this is what a reader needs).
    return {
        "questions": total,
        f"document_recall@{k}": round(doc_hits / n, 4),
        f"answer_recall@{k}": round(answer_hits / n, 4),
        f"document_recall@{k}_bm25_only": round(doc_hits_plain / n, 4),
        f"answer_recall@{k}_bm25_only": round(answer_hits_plain / n, 4),
    }
