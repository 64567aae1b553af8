"""The domain QA set of a pack: built from its fact catalogue and corpus, split by document, checked span by span.

``qa/facts.yaml`` lists facts with a regular expression for how documents state them and the questions customers ask
about them. Every document that states a fact gets every question (plus one deterministic customer-style variant:
chatty, lower-case, or with a typo), answered by the exact span the expression matched. Documents about the fact's
entity that do not state it get unanswerable questions (``is_impossible``). Documents, not questions, are split into
train/dev/test, so no document appears in two splits.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from app.enrich.retrieval import load_documents

SPLITS = (("train", 0.7), ("dev", 0.15), ("test", 0.15))
PREFIXES = ("hi, ", "hello ", "quick question - ", "hey, ", "sorry to bother you but ", "hiya ", "good morning, ")
SUFFIXES = (" thanks", " pls", " cheers", "??", " thank you", " x")


class DomainQAError(ValueError):
    """The fact catalogue, a document or a built QA file is inconsistent; the message says where."""


def split_of(doc_id: str) -> str:
    """Stable split by a hash of the document id (about 70/15/15)."""
    bucket = int(hashlib.sha1(doc_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if bucket < edge:
            return name
    return SPLITS[-1][0]


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


def build(pack: Path) -> dict[str, dict[str, Any]]:
    """SQuAD v2-format datasets per split, built from ``pack/qa/facts.yaml`` and ``pack/corpus``."""
    catalogue = yaml.safe_load((pack / "qa" / "facts.yaml").read_text(encoding="utf-8"))
    facts = catalogue["facts"]
    for fact in facts:
        try:
            fact["_re"] = re.compile(fact["answer"])
        except re.error as exc:
            raise DomainQAError(f"facts.yaml: fact {fact['id']}: bad answer expression: {exc}") from exc
    datasets: dict[str, dict[str, Any]] = {
        name: {"version": f"v2.0 {pack.name} {catalogue['version']}", "data": []} for name, _ in SPLITS
    }
    for doc in load_documents(pack / "corpus"):
        qas: list[dict[str, Any]] = []
        for fact in facts:
            # Only documents about the fact's entity: "14 days" in the bond terms is no answer to a loan question.
            about = fact["entity"] in doc.entities
            match = fact["_re"].search(doc.body) if about else None
            if match is not None:
                answer = {"text": match.group(), "answer_start": match.start()}
                for n, question in enumerate(fact["questions"]):
                    for k, text in enumerate((question, customer_variant(question, f"{doc.id}/{fact['id']}/{n}"))):
                        qas.append(
                            {
                                "id": f"{doc.id}/{fact['id']}/{n}{'ab'[k]}",
                                "question": text,
                                "answers": [answer],
                                "is_impossible": False,
                            }
                        )
            elif about:
                for n, question in enumerate(fact["questions"][:3]):
                    qas.append(
                        {
                            "id": f"{doc.id}/{fact['id']}/{n}x",
                            "question": question,
                            "answers": [],
                            "is_impossible": True,
                        }
                    )
        if qas:
            paragraph = {"context": doc.body, "qas": qas}
            datasets[split_of(doc.id)]["data"].append({"title": doc.id, "paragraphs": [paragraph]})
    return datasets


def write(pack: Path, datasets: dict[str, dict[str, Any]]) -> dict[str, Counter[str]]:
    counts: dict[str, Counter[str]] = {}
    for name, data in datasets.items():
        path = pack / "qa" / f"{name}.json"
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        counts[name] = check_file(path)
    check_disjoint(pack)
    return counts


def check_file(path: Path) -> Counter[str]:
    """Every answer slices its context exactly; ids are unique; returns counts of documents and questions."""
    data = json.loads(path.read_text(encoding="utf-8"))
    counts: Counter[str] = Counter()
    seen: set[str] = set()
    for article in data["data"]:
        counts["documents"] += 1
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                if qa["id"] in seen:
                    raise DomainQAError(f"{path}: duplicate question id {qa['id']}")
                seen.add(qa["id"])
                if qa["is_impossible"]:
                    if qa["answers"]:
                        raise DomainQAError(f"{path}: {qa['id']} is impossible but has answers")
                    counts["unanswerable"] += 1
                    continue
                for answer in qa["answers"]:
                    start = answer["answer_start"]
                    if context[start : start + len(answer["text"])] != answer["text"]:
                        raise DomainQAError(
                            f"{path}: {qa['id']}: context[{start}:{start + len(answer['text'])}] is "
                            f"{context[start : start + len(answer['text'])]!r}, not {answer['text']!r}"
                        )
                counts["answerable"] += 1
    return counts


def check_disjoint(pack: Path) -> None:
    owners: dict[str, str] = {}
    for name, _ in SPLITS:
        data = json.loads((pack / "qa" / f"{name}.json").read_text(encoding="utf-8"))
        for article in data["data"]:
            if article["title"] in owners:
                raise DomainQAError(f"document {article['title']} is in {owners[article['title']]} and {name}")
            owners[article["title"]] = name


def retrieval_recall(pack: Path, split: str = "dev", k: int = 5, entity_boost: float = 0.5) -> dict[str, float]:
    """Share of answerable ``split`` questions whose document is among the top-k retrieved passages' documents."""
    from app.enrich.retrieval import PassageRetriever
    from kg.linker import EntityLinker, EntityRef
    from kg.pack import GraphPack

    retriever = PassageRetriever.from_folder(pack / "corpus", entity_boost)
    graph = GraphPack.load(pack)
    linker = EntityLinker([(EntityRef(e.id, e.name, e.type), e.aliases) for e in graph.entities])
    data = json.loads((pack / "qa" / f"{split}.json").read_text(encoding="utf-8"))
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
