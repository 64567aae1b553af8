"""Detectors of other people's payment identifiers in text: card numbers, IBANs, UK sort code + account number.

Checksums (Luhn for cards, mod-97 for IBANs) keep prices, phone numbers and dates from being taken for card numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_UK_ACCOUNT = re.compile(r"\b\d{2}-\d{2}-\d{2}[ ,/]+(?:account(?: number)?:? ?)?\d{8}\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class PiiMatch:
    kind: str
    start: int
    end: int


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    compact = text.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return len(compact) >= 15 and int(number) % 97 == 1


def find_card_numbers(text: str) -> list[PiiMatch]:
    out = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn_ok(digits):
            out.append(PiiMatch("card_number", m.start(), m.end()))
    return out


def find_ibans(text: str) -> list[PiiMatch]:
    return [PiiMatch("iban", m.start(), m.end()) for m in _IBAN.finditer(text) if _iban_ok(m.group())]


def find_uk_accounts(text: str) -> list[PiiMatch]:
    return [PiiMatch("account_number", m.start(), m.end()) for m in _UK_ACCOUNT.finditer(text)]


DETECTORS: dict[str, Callable[[str], list[PiiMatch]]] = {
    "card_number": find_card_numbers,
    "iban": find_ibans,
    "account_number": find_uk_accounts,
}


def find_pii(text: str, kinds: list[str]) -> list[PiiMatch]:
    found = [m for kind in kinds for m in DETECTORS[kind](text)]
    return sorted(found, key=lambda m: m.start)


def redact(text: str, matches: list[PiiMatch]) -> str:
    """Mask every digit and letter of each match except the last four characters (as card receipts do)."""
    chars = list(text)
    for m in matches:
        keep_from = m.end - 4
        for i in range(m.start, keep_from):
            if chars[i].isalnum():
                chars[i] = "•"
    return "".join(chars)
