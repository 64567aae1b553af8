"""Request bodies for load tests: what a busy support desk sends, deterministic from a seed.

Used by ``bench/soak.py`` and the e2e concurrency and drain tests. Four kinds of context text (prose, unicode with
right-to-left scripts, combining marks and emoji sequences, flattened finance tables, and long multi-section
documents) and questions from one-liners to chatty multi-sentence messages longer than the model's question budget.

The realistic mix (:func:`realistic_mix`): 70% short requests with one context, 20% questions without contexts (the
service retrieves from its corpus), 10% requests with a 30,000-character context.
"""

from __future__ import annotations

import random
from typing import Any

LONG_CONTEXT_CHARS = 30_000

_PRODUCTS = ["Everyday Current Account", "Easy Saver", "Fixed Rate Bond", "Visa Debit card", "Personal Loan"]
_FEES = ["card replacement", "CHAPS payment", "unarranged overdraft", "foreign cash withdrawal", "paper statement"]

_PROSE = [
    "The {product} pays {rate}% AER variable on balances up to £{limit:,}, calculated daily and paid monthly.",
    "A {fee} costs £{amount}, except when the card was stolen or is faulty, when it is free of charge.",
    "Card payments can be disputed within {days} days of the transaction date; refunds arrive within 5 working days.",
    "Transfers above £{limit:,} need a one-time passcode sent to the mobile number registered on the account.",
    "The bank's complaints team answers within {days} days and the Financial Ombudsman Service can review the outcome.",
    "Contactless payments are limited to £{amount} each; above that the terminal asks for chip and PIN.",
]

# Right-to-left scripts, combining marks, a zero-width joiner family, flags and CJK: offsets must still slice.
_UNICODE = [
    "Le client a payé {amount} € à la café\u0301 de la gare; la re\u0301clamation est ouverte depuis {days} jours.",
    "الرسوم الشهرية للحساب هي {amount} جنيه، وتُدفع في اليوم الأول من كل شهر.",
    "עמלת העברה בינלאומית היא {amount} ש״ח לכל העברה, והיא נגבית ביום הביצוע.",
    "Family account 👩\u200d👩\u200d👧\u200d👦 holders get {rate}% on savings; 🇬🇧 and 🇪🇺 transfers cost £{amount}.",
    "口座維持手数料は月額{amount}円です。振込は{days}営業日以内に処理されます。",
    "Z\u0351a\u0352l\u0353g\u0354o text and 𝔣𝔞𝔫𝔠𝔶 letters: the fee is £{amount} after {days} days.",
]

_TABLE_HEADER = "| Product | Fee | Amount (GBP) | Rate | Days |\n|---|---|---|---|---|"
_TABLE_ROW = "| {product} | {fee} | {amount}.00 | {rate}% | {days} |"

_SHORT_QUESTIONS = [
    "What does a {fee} cost?",
    "How long do I have to dispute a card payment?",
    "What rate does the {product} pay?",
    "How much is the fee?",
    "what is the limit",
]
_CHATTY_PREAMBLE = (
    "Hi there, I have been a customer for years and I am moving house next month, so I am sorting out all my "
    "accounts, direct debits, standing orders and cards before the move, and my partner asked me to check a few "
    "things with you as well because we share the household bills and we want to avoid any surprises. "
)


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        product=rng.choice(_PRODUCTS),
        fee=rng.choice(_FEES),
        rate=rng.choice(["1.25", "3.10", "4.75"]),
        limit=rng.choice([1000, 25000, 85000]),
        amount=rng.choice([5, 10, 25, 100]),
        days=rng.choice([5, 14, 120]),
    )


def prose(rng: random.Random, sentences: int) -> str:
    return " ".join(_fill(rng.choice(_PROSE), rng) for _ in range(sentences))


def unicode_text(rng: random.Random, sentences: int) -> str:
    return " ".join(_fill(rng.choice(_UNICODE + _PROSE), rng) for _ in range(sentences))


def table(rng: random.Random, rows: int) -> str:
    """A fee schedule flattened to text, as finance reports come out of PDF extraction."""
    lines = [_TABLE_HEADER, *(_fill(_TABLE_ROW, rng) for _ in range(rows))]
    return "Fee schedule (effective 1 December).\n" + "\n".join(lines) + "\nFees are charged monthly in arrears."


def long_document(rng: random.Random, chars: int = LONG_CONTEXT_CHARS) -> str:
    """About ``chars`` characters of sections mixing prose, tables and unicode, cut at a sentence boundary."""
    parts: list[str] = []
    size = 0
    section = 1
    while size < chars:
        kind = rng.random()
        body = table(rng, 12) if kind < 0.25 else unicode_text(rng, 8) if kind < 0.4 else prose(rng, 10)
        part = f"Section {section}.\n{body}\n"
        parts.append(part)
        size += len(part)
        section += 1
    text = "".join(parts)[:chars]
    return text[: text.rfind(".") + 1] or text


def question(rng: random.Random) -> str:
    """Mostly short questions; one in four is a chatty message longer than the model's question budget."""
    asked = _fill(rng.choice(_SHORT_QUESTIONS), rng)
    return _CHATTY_PREAMBLE * rng.randint(1, 2) + asked if rng.random() < 0.25 else asked


def short_request(rng: random.Random) -> dict[str, Any]:
    """One context of a few hundred characters: prose, unicode or a table."""
    kind = rng.random()
    text = table(rng, 6) if kind < 0.3 else unicode_text(rng, 4) if kind < 0.6 else prose(rng, 4)
    return {"question": question(rng), "contexts": [{"id": "c0", "text": text}], "min_score": 0}


def question_only_request(rng: random.Random) -> dict[str, Any]:
    """No contexts: the service retrieves passages from its corpus."""
    return {"question": question(rng), "min_score": 0}


def long_request(rng: random.Random, chars: int = LONG_CONTEXT_CHARS) -> dict[str, Any]:
    return {"question": question(rng), "contexts": [{"id": "doc", "text": long_document(rng, chars)}], "min_score": 0}


def realistic_mix(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """(kind, body): 70% short, 20% question only, 10% a 30,000-character context."""
    draw = rng.random()
    if draw < 0.7:
        return "short", short_request(rng)
    if draw < 0.9:
        return "question_only", question_only_request(rng)
    return "long", long_request(rng)


def offsets_hold(body: dict[str, Any], response: dict[str, Any]) -> bool:
    """Every answer's ``text`` is its context sliced at ``[start:end]`` (retrieved passages are not in the body)."""
    contexts = body.get("contexts") or []
    for answer in response.get("answers", []):
        if not contexts or answer.get("redacted"):
            continue
        text = contexts[answer["context_index"]]["text"]
        if text[answer["start"] : answer["end"]] != answer["text"]:
            return False
    return True
