"""Numbers with units in prose, normalised so that differently written statements of one fact compare equal.

"£5", "5 GBP" and "five pounds" are 5 GBP; "14 days" and "two weeks" are 14 days; "3.1%" and "3.10 per cent" are
3.1 percent; "2 years" is 24 months. Working days stay apart from calendar days. Each quantity also carries the
limit it states ("more than £100" is an exclusive minimum), the period a money amount is per ("£500 a day"), and
whether it is the old or new value of a stated change ("falls from £30 to £25").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Literal

Kind = Literal["money", "percent", "days", "working_days", "months", "hours"]
Bound = Literal["min", "min_exclusive", "max", "max_exclusive"]
Role = Literal["before", "after"]

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50,
    "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000}
_WORD = "|".join(sorted([*_UNITS, *_SCALES], key=len, reverse=True))
_WORDNUM = rf"(?:a(?=[\s-]+(?:hundred|thousand|million)\b)|(?:{_WORD}))(?:[\s-]+(?:and[\s-]+)?(?:{_WORD}))*"
_DIGITS = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_NUMBER = rf"(?<![\w.,/£€$])(?:{_DIGITS}|{_WORDNUM})(?![\w/])"
_MAGNITUDE = r"(?:\s?(?P<mag>million|billion|bn|m|k)\b)?"

_MONEY = re.compile(
    rf"(?P<sym>£|€|\$)\s?(?P<n1>{_DIGITS}){_MAGNITUDE}"
    rf"|\b(?P<code>GBP|EUR|USD)\s?(?P<n2>{_DIGITS})"
    rf"|(?P<n3>{_NUMBER})(?:\s(?P<mag3>million|thousand))?\s?(?P<word>pounds?|GBP|euros?|EUR|dollars?|USD)\b",
    re.IGNORECASE,
)
_PER = re.compile(r"\s*(?:a|per|each|every)\s+(day|week|month|year|transaction|payment|purchase)\b", re.IGNORECASE)
_PERCENT = re.compile(rf"(?P<n>{_NUMBER})\s?(?:%|per\s?cent\b|percent\b)", re.IGNORECASE)
_DURATION = re.compile(
    rf"(?P<n>{_NUMBER})[\s-]+(?P<qual>working\s|business\s|calendar\s)?(?P<unit>days?|weeks?|months?|years?|hours?)"
    r"(?:'|’)?(?!\w)",
    re.IGNORECASE,
)
_RANGE_HEAD = re.compile(rf"(?P<n>{_NUMBER})\s+(?:to|-|–|and|or)\s+$", re.IGNORECASE)

_CURRENCY = {"£": "GBP", "€": "EUR", "$": "USD", "pound": "GBP", "gbp": "GBP", "euro": "EUR", "eur": "EUR",
             "dollar": "USD", "usd": "USD"}  # fmt: skip
_DURATION_UNIT: dict[str, tuple[Kind, int]] = {
    "day": ("days", 1), "week": ("days", 7), "month": ("months", 1), "year": ("months", 12), "hour": ("hours", 1),
}  # fmt: skip
_PER_UNIT = {"payment": "transaction", "purchase": "transaction"}

_BOUND_WORDS: list[tuple[str, Bound]] = [
    (r"\b(?:more than|over|above|exceeding|greater than|in excess of)", "min_exclusive"),
    (r"\b(?:less than|under|below|fewer than)", "max_exclusive"),
    (r"\b(?:at least|minimum(?: of)?|min\.?|from|starting at|start at|starts? at|no less than|not less than"
     r"|between)", "min"),
    (r"\b(?:up to(?: a total of)?|at most|maximum(?: of)?|max\.?|no more than|not more than|within"
     r"|limited to|capped at)", "max"),
]  # fmt: skip
_BEFORE = [(re.compile(p + r"\s*$", re.IGNORECASE), bound) for p, bound in _BOUND_WORDS]
_AFTER: list[tuple[re.Pattern[str], Bound]] = [
    (re.compile(r"^\s*(?:or more|or over|and over|or above|minimum)\b", re.IGNORECASE), "min"),
    (re.compile(r"^\s*(?:or less|or under|maximum)\b", re.IGNORECASE), "max"),
]
_CHANGE_VERB = re.compile(
    r"\b(?:chang(?:es|ed|ing|e)|falls?|falling|fell|rises?|rising|rose|goes (?:up|down)|going (?:up|down)"
    r"|increas(?:es|ed|ing|e)|decreas(?:es|ed|ing|e)|reduc(?:es|ed|ing|e)|drops?|dropped|is cut|cut|moves?)"
    r"\s+(?:\w+\s+){0,3}?from\s*$",
    re.IGNORECASE,
)
_CHANGE_LINK = re.compile(r"^\s*(?:[A-Za-z()]+\s+){0,3}?to\s*$", re.IGNORECASE)
_RANGE_LINK = re.compile(r"^\s*(?:to|and|-|–)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Quantity:
    kind: Kind
    value: float  # in the kind's base unit (days, months, hours, the currency's major unit, percent points)
    text: str
    start: int
    end: int
    decimals: int = 0  # digits after the decimal point as written: the precision the text claims
    written: float | None = None  # the number as written, before units ("5" of "5 years", "1" of "£1 million")
    currency: str | None = None
    per: str | None = None  # money per day / month / transaction
    bound: Bound | None = None
    role: Role | None = None  # old ("before") or new ("after") value of a stated change


def word_number(text: str) -> float | None:
    """'fifty-eight' -> 58, 'a thousand' -> 1000, 'two hundred and five' -> 205; None if not a number."""
    total = current = 0
    seen = False
    for token in re.split(r"[\s-]+", text.lower().strip()):
        if token in ("and", ""):
            continue
        if token == "a":
            current = max(current, 1)
            continue
        if token in _UNITS:
            current += _UNITS[token]
        elif token == "hundred":
            current = max(current, 1) * 100
        elif token in _SCALES:
            total += max(current, 1) * _SCALES[token]
            current = 0
        else:
            return None
        seen = True
    return float(total + current) if seen else None


def parse_number(text: str) -> tuple[float, int] | None:
    """(value, decimals written) of digits or number words."""
    text = text.strip()
    if re.fullmatch(_DIGITS, text):
        decimals = len(text.split(".", 1)[1]) if "." in text else 0
        return float(text.replace(",", "")), decimals
    value = word_number(text)
    return (value, 0) if value is not None else None


def numbers_in(text: str) -> list[float]:
    """Every number written in ``text``, with or without a unit ('£10,000' and '5' of '5 years' give 10000, 5)."""
    out = []
    for m in re.finditer(rf"(?<![\w.,])(?:{_DIGITS}|{_WORDNUM})(?!\w)", text, re.IGNORECASE):
        parsed = parse_number(m.group())
        if parsed is not None:
            out.append(parsed[0])
    return out


def find_quantities(text: str, default_currency: str = "GBP") -> list[Quantity]:
    """Every money amount, percentage and duration in ``text``, in order, with bounds and change roles."""
    found: list[Quantity] = []
    for m in _MONEY.finditer(text):
        if m["sym"]:
            number, currency, magnitude = m["n1"], _CURRENCY[m["sym"]], m["mag"]
        elif m["code"]:
            number, currency, magnitude = m["n2"], m["code"].upper(), None
        else:
            number, currency, magnitude = m["n3"], _CURRENCY[m["word"].lower().rstrip("s")], m["mag3"]
        parsed = parse_number(number)
        if parsed is None:
            continue
        value, decimals = parsed
        scale = {"million": 1e6, "m": 1e6, "billion": 1e9, "bn": 1e9, "k": 1e3, "thousand": 1e3}.get(
            (magnitude or "").lower(), 1
        )
        per_match = _PER.match(text, m.end())
        per = per_match[1].lower() if per_match else None
        found.append(
            Quantity(
                "money",
                value * scale,
                m.group(),
                m.start(),
                m.end(),
                decimals,
                value,
                currency,
                _PER_UNIT.get(per or "", per),
            )
        )
    for m in _PERCENT.finditer(text):
        parsed = parse_number(m["n"])
        if parsed is not None:
            found.append(Quantity("percent", parsed[0], m.group(), m.start(), m.end(), parsed[1], parsed[0]))
    for m in _DURATION.finditer(text):
        parsed = parse_number(m["n"])
        if parsed is None:
            continue
        unit = m["unit"].lower().rstrip("s")
        kind, factor = _DURATION_UNIT[unit]
        if m["qual"] and m["qual"].strip().lower() in ("working", "business") and unit == "day":
            kind = "working_days"
        found.append(Quantity(kind, parsed[0] * factor, m.group(), m.start(), m.end(), parsed[1], parsed[0]))
        head = _RANGE_HEAD.search(text, 0, m.start())
        if head is not None:  # "one to seven years": the first number takes the second's unit
            first = parse_number(head["n"])
            if first is not None:
                end = head.start() + len(head["n"])
                found.append(Quantity(kind, first[0] * factor, head["n"], head.start(), end, first[1], first[0]))
    found.sort(key=lambda q: q.start)
    return _with_bounds_and_roles(text, _without_overlaps(found))


def _without_overlaps(quantities: list[Quantity]) -> list[Quantity]:
    out: list[Quantity] = []
    for q in quantities:
        if out and q.start < out[-1].end:
            continue
        out.append(q)
    return out


def _with_bounds_and_roles(text: str, quantities: list[Quantity]) -> list[Quantity]:
    out = [replace(q, bound=_bound(text, q)) for q in quantities]
    for i in range(len(out) - 1):
        first, second = out[i], out[i + 1]
        if first.kind != second.kind:
            continue
        between = text[first.end : second.start]
        if _CHANGE_VERB.search(text, 0, first.start) and _CHANGE_LINK.match(between):
            out[i], out[i + 1] = replace(first, role="before", bound=None), replace(second, role="after", bound=None)
        elif _RANGE_LINK.match(between):
            # "£1,000 to £35,000", "between £100 and £30,000": a range of an inclusive minimum and maximum
            out[i], out[i + 1] = replace(first, bound="min"), replace(second, bound=second.bound or "max")
    return out


def _bound(text: str, q: Quantity) -> Bound | None:
    before = text[max(0, q.start - 30) : q.start]
    for pattern, bound in _BEFORE:
        if pattern.search(before):
            return bound
    after = text[q.end : q.end + 20]
    for pattern, bound in _AFTER:
        if pattern.search(after):
            return bound
    return None


# ------------------------------------------------------------------------------------------------------- dates
_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november",
     "december"], start=1)}  # fmt: skip
_MONTH = "|".join(_MONTHS)
_DATE = re.compile(
    rf"\b(?P<marker>from|until|till|to|on|before|after|by|starting|effective|ends?(?: on)?)\s+"
    rf"(?:(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+)?(?P<month>{_MONTH})\s+(?P<year>\d{{4}})\b"
    rf"|\b(?P<rel>until|till|before|after|from)\s+then\b",
    re.IGNORECASE,
)
Marker = Literal["from", "until", "on"]


@dataclass(frozen=True, slots=True)
class DateMarker:
    """A date a statement is tied to: in force ``from`` it, ``until`` it (inclusive), or ``on`` it."""

    marker: Marker
    day: date
    start: int
    end: int


def find_dates(text: str) -> list[DateMarker]:
    """Dates with the word that ties a statement to them; 'until then' refers to the last date before it."""
    out: list[DateMarker] = []
    last: date | None = None
    for m in _DATE.finditer(text):
        if m["rel"]:
            if last is None:
                continue
            word = m["rel"].lower()
            if word in ("until", "till", "before"):
                out.append(DateMarker("until", last - timedelta(days=1), m.start(), m.end()))
            else:
                out.append(DateMarker("from", last, m.start(), m.end()))
            continue
        day = date(int(m["year"]), _MONTHS[m["month"].lower()], int(m["day"] or 1))
        last = day
        word = m["marker"].lower()
        if word in ("until", "till", "to", "by", "ends", "end", "ends on", "end on"):
            out.append(DateMarker("until", day, m.start(), m.end()))
        elif word == "before":
            out.append(DateMarker("until", day - timedelta(days=1), m.start(), m.end()))
        elif word == "on":
            out.append(DateMarker("on", day, m.start(), m.end()))
        else:
            out.append(DateMarker("from", day, m.start(), m.end()))
    return out


# --------------------------------------------------------------------------------------------------- sentences
_SENTENCE_END = re.compile(r"[.!?]+[\"”')]*\s+")
_ABBREVIATIONS = ("p.a", "e.g", "i.e", "etc", "approx", "no", "mr", "mrs", "ms", "dr", "st", "vs")


def sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence) pieces of one line of prose; abbreviations such as 'p.a.' do not end a sentence."""
    out: list[tuple[int, str]] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        word = re.search(r"([\w.]+)$", text[start : m.start()])
        if word is not None and word[1].lower().rstrip(".") in _ABBREVIATIONS:
            continue
        if m.end() < len(text) and not (text[m.end()].isupper() or text[m.end()] in "\"“(£€$0123456789"):
            continue
        out.append((start, text[start : m.end()].rstrip()))
        start = m.end()
    if start < len(text) and text[start:].strip():
        out.append((start, text[start:].rstrip()))
    return out
