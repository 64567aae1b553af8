"""``vqa pack lint``: does the corpus say what the graph says?

Every money amount, percentage and period in the corpus that is about a linked entity (named in the sentence, else
in the document's front matter) is compared with that entity's graph facts of the same kind, read on the dates the
statement is about; a property's ``cues`` (pack.json) narrow which fact a number states. Findings:

``graph-mismatch``
    the number is none of the entity's facts of that kind (or states a limit the other way round: "between £100"
    where the graph says "more than £100"; or a period the limit is not per; or conditions it does not have).
``undated-change``
    the statement holds only for part of the time it claims: an undated "3.1%" while the graph changes 3.25% -> 3.1%
    on 2026-12-01, or a notice of a dated change the graph does not model with ``valid_from`` / ``valid_to``.
``duplicate-disagreement``
    two documents state different values for the same fact (a cued property the graph does not hold).
``worked-example``
    an example marked in the front matter does not compute to the result it states.

A statement is tied to dates by the nearest date in its sentence ("3.1% from 1 December 2026", "3.25% until then"),
else by the document's ``effective`` date, else it claims to hold from today on: it must then be true today and
after every change the graph schedules.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Literal

from domain.corpus import FACT_REFERENCE, Document, WorkedExample
from domain.formula import Formula
from domain.manifest import PropertySpec
from domain.pack import DomainPack
from domain.quantities import DateMarker, Kind, Quantity, find_dates, find_quantities, sentences
from kg.linker import EntityLinker, EntityRef
from kg.timeline import Period

FindingKind = Literal["graph-mismatch", "undated-change", "duplicate-disagreement", "worked-example"]
FINDING_KINDS: tuple[FindingKind, ...] = (
    "graph-mismatch",
    "undated-change",
    "duplicate-disagreement",
    "worked-example",
)

# property kind -> (quantity kind, factor to the quantity's base unit)
_KIND_OF: dict[str, tuple[Kind, int]] = {
    "money": ("money", 1), "percent": ("percent", 1), "days": ("days", 1), "weeks": ("days", 7),
    "working_days": ("working_days", 1), "months": ("months", 1), "years": ("months", 12), "hours": ("hours", 1),
}  # fmt: skip
_COMPARABLE = {"days": ("working_days",), "working_days": ("days",)}
_UNIT_TEXT = {"percent": "%", "days": " days", "working_days": " working days", "months": " months", "hours": " hours"}
_CUE_WINDOW = 60


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    path: Path
    line: int
    entity: str
    stated: str
    expected: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: {self.kind}: {self.entity}"
        return f"{where}: states {self.stated}, {self.expected}. {self.message}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": str(self.path),
            "line": self.line,
            "entity": self.entity,
            "stated": self.stated,
            "expected": self.expected,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class _Fact:
    entity: str
    prop: str
    spec: PropertySpec
    periods: tuple[Period, ...]
    currency: str
    per: str | None  # the entity's ``period`` ("day"), for money limits

    def value_on(self, day: date) -> Any:
        return next((p.value for p in self.periods if p.covers(day)), None)

    def change_days(self) -> list[date]:
        return sorted({p.valid_from for p in self.periods if p.valid_from} | {
            p.valid_to + timedelta(days=1) for p in self.periods if p.valid_to
        })

    def describe(self, value: Any) -> str:
        kind = self.spec.kind
        if kind == "money":
            return f"{_number(value)} {self.currency}" + (f" per {self.per}" if self.per else "")
        if kind == "weeks":
            return f"{_number(value)} weeks"
        if kind == "years":
            return f"{_number(value)} years"
        return f"{_number(value)}{_UNIT_TEXT.get(kind, '')}"

    def timeline_text(self) -> str:
        if len(self.periods) == 1 and self.periods[0].valid_from is None and self.periods[0].valid_to is None:
            return self.describe(self.periods[0].value)
        parts = []
        for p in self.periods:
            span = (f"from {p.valid_from}" if p.valid_from else "") + (
                f"{' ' if p.valid_from else ''}until {p.valid_to}" if p.valid_to else ""
            )
            parts.append(f"{self.describe(p.value)} {span}".strip())
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class _Window:
    """The days a statement claims to hold on: ``start`` and every change of the fact up to ``end`` (None: on)."""

    start: date
    end: date | None
    explicit: bool  # tied to a date in the sentence (not today / the document's effective date)

    def days(self, fact: _Fact) -> list[date]:
        inside = [d for d in fact.change_days() if d > self.start and (self.end is None or d <= self.end)]
        return [self.start, *inside]


@dataclass(frozen=True, slots=True)
class _Statement:
    doc: Document
    line: int
    quantity: Quantity


@dataclass
class LintReport:
    findings: list[Finding] = field(default_factory=list)
    checked: int = 0  # numbers and conditions compared with the graph
    examples: int = 0  # worked examples recomputed

    def by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for f in self.findings:
            counts[f.kind] += 1
        return dict(counts)


def lint_pack(pack: DomainPack, today: date) -> LintReport:
    return _Linter(pack, today).run()


class _Linter:
    def __init__(self, pack: DomainPack, today: date) -> None:
        self.pack = pack
        self.today = today
        self.report = LintReport()
        # The corpus is spelt right: no typo repair (it would read a corpus word as a nearby alias word).
        self.linker = EntityLinker(
            ((EntityRef(e.id, e.name, e.type), e.aliases) for e in pack.graph.entities), repair_typos=False
        )
        self.ignore = [re.compile(p) for p in pack.manifest.lint.ignore_lines]
        self.facts: dict[str, list[_Fact]] = {}
        for entity in pack.graph.entities:
            per = entity.props.get("period")
            self.facts[entity.id] = [
                _Fact(
                    entity.id,
                    prop,
                    spec,
                    tuple(periods),
                    pack.currency_of(entity.id),
                    _per(per) if isinstance(per, str) else None,
                )
                for prop, periods in pack.facts_of(entity.id).items()
                if (spec := pack.property_spec(prop)) is not None
            ]
        self.neighbours: dict[str, set[str]] = defaultdict(set)
        for relation in pack.graph.relations:  # outgoing only: a product's fees, not every product of the bank
            self.neighbours[relation.source].add(relation.target)
        self.statements: dict[tuple[str, str, date | None], list[_Statement]] = defaultdict(list)

    def run(self) -> LintReport:
        for doc in self.pack.documents:
            self._document(doc)
        self._duplicates()
        self.report.findings.sort(key=lambda f: (str(f.path), f.line, f.kind))
        return self.report

    # ------------------------------------------------------------------------------------------- one document
    def _document(self, doc: Document) -> None:
        exempt = self._example_spans(doc)
        offset = 0
        for line_text in doc.body.split("\n"):
            line_offset = offset
            offset += len(line_text) + 1
            if any(p.search(line_text) for p in self.ignore):
                continue
            for sentence_offset, sentence in sentences(line_text):
                base = line_offset + sentence_offset
                self._sentence(doc, doc.line_of(base), sentence, base, exempt)
        for example in doc.examples:
            if example.formula is not None:
                self._worked_example(doc, example)

    def _example_spans(self, doc: Document) -> list[tuple[int, int, WorkedExample]]:
        spans = []
        for example in doc.examples:
            start = doc.body.index(example.text)
            spans.append((start, start + len(example.text), example))
        return spans

    def _sentence(
        self, doc: Document, line: int, sentence: str, base: int, exempt: list[tuple[int, int, WorkedExample]]
    ) -> None:
        mentioned = {m.entity.id for m in self.linker.link(sentence)}
        dates = find_dates(sentence)
        quantities = find_quantities(sentence, self.pack.manifest.currency)
        for q in quantities:
            if _exempt(q, base, exempt, self.pack.manifest.currency):
                continue
            window = self._window(doc, q, _marker_for(q, dates, sentence, quantities))
            self._quantity(doc, line, sentence, q, mentioned, window)
        self._conditions(doc, line, sentence, mentioned, dates)

    def _window(self, doc: Document, q: Quantity, marker: DateMarker | None) -> _Window:
        if marker is not None:
            if q.role == "before":
                day = marker.day - timedelta(days=1)
                return _Window(day, day, True)
            if marker.marker == "from":
                return _Window(marker.day, None, True)
            if marker.marker == "on":
                return _Window(marker.day, marker.day, True)
            return _Window(min(self.today, marker.day), marker.day, True)
        if doc.effective is not None:
            return _Window(doc.effective, None, False)
        return _Window(self.today, None, False)

    def _candidates(self, doc: Document, mentioned: set[str], kind: str) -> list[_Fact]:
        """Facts of ``kind`` of the entities the sentence names, their graph neighbours and the document's entities
        (in that order: a mismatch is reported against the first)."""
        entities = list(dict.fromkeys([
            *sorted(mentioned),
            *sorted({n for e in mentioned for n in self.neighbours[e]} - mentioned),
            *sorted(doc.entities),
        ]))  # fmt: skip
        # calendar and working days are told apart, but a statement in one about a fact in the other is compared
        # (and found wrong): "within two weeks" about a delivery the graph gives as 5 working days
        kinds = {kind, *_COMPARABLE.get(kind, ())}
        return [f for e in entities for f in self.facts.get(e, []) if _kind(f.spec) in kinds]

    def _quantity(
        self, doc: Document, line: int, sentence: str, q: Quantity, mentioned: set[str], window: _Window
    ) -> None:
        candidates = self._candidates(doc, mentioned, q.kind)
        if not candidates:
            self._remember(doc, line, sentence, q, mentioned, window)
            return
        self.report.checked += 1
        # A cue ("late", "a month") says which fact a number states: prefer those facts, and report against them.
        cued = [f for f in candidates if _cue_near(sentence, q, f.spec.cues)]
        holding = [f for f in cued if self._holds(f, q, window)] or [
            f for f in candidates if self._holds(f, q, window)
        ]
        if holding:
            self._bound_and_period(doc, line, q, holding)
            if q.role is not None and window.explicit:
                self._modelled_change(doc, line, q, holding, window)
            return
        facts = cued or candidates
        somewhere = [f for f in candidates if any(_equal(f, p.value, q) for p in f.periods)]
        if somewhere and not window.explicit:
            fact = somewhere[0]
            self._find(
                "undated-change",
                doc,
                line,
                fact.entity,
                q.text,
                f"graph {fact.prop} = {fact.timeline_text()}",
                "The value changes over time: say which dates it applies to ('from 1 December 2026', 'until …') "
                "or set effective in the front matter.",
            )
            return
        if q.role is not None and window.explicit:
            unmodelled = [f for f in facts if len(f.periods) == 1 and f.periods[0].valid_from is None]
            if unmodelled:
                fact = unmodelled[0]
                self._find(
                    "undated-change",
                    doc,
                    line,
                    fact.entity,
                    f"{q.text} ({'until' if q.role == 'before' else 'from'} {window.start})",
                    f"graph {fact.prop} = {fact.timeline_text()} with no effective dates",
                    "The document schedules a change the graph does not model: give the fact valid_to / "
                    "valid_from periods in entities.jsonl (dated).",
                )
                return
        expected = "; ".join(
            f"{f.entity} {f.prop} = " + ", ".join(sorted({f.describe(f.value_on(d)) for d in window.days(f)}))
            for f in facts[:4]
        ) + ("; …" if len(facts) > 4 else "")
        when = f" on {window.start}" if window.explicit else ""
        self._find(
            "graph-mismatch",
            doc,
            line,
            facts[0].entity,
            q.text + when,
            f"graph {expected}",
            "Correct the document or the graph.",
        )

    def _holds(self, fact: _Fact, q: Quantity, window: _Window) -> bool:
        return all(_equal(fact, fact.value_on(d), q) for d in window.days(fact))

    def _bound_and_period(self, doc: Document, line: int, q: Quantity, holding: list[_Fact]) -> None:
        fact = holding[0]
        bound = fact.spec.bound
        if bound is not None and q.bound is not None and bound[:3] == q.bound[:3] and bound != q.bound:
            self._find(
                "graph-mismatch",
                doc,
                line,
                fact.entity,
                f"{q.text} as {_BOUND_TEXT[q.bound]}",
                f"graph {fact.prop} = {_BOUND_TEXT[bound]} {fact.describe(fact.periods[0].value)}",
                "The limit is stated the other way round (inclusive vs exclusive).",
            )
        if q.per is not None and fact.per is not None and q.per != fact.per:
            self._find(
                "graph-mismatch",
                doc,
                line,
                fact.entity,
                f"{q.text} per {q.per}",
                f"graph {fact.prop} = {fact.describe(fact.periods[0].value)}",
                "The limit is per a different period.",
            )

    def _modelled_change(self, doc: Document, line: int, q: Quantity, holding: list[_Fact], window: _Window) -> None:
        """A dated change statement ("from 1 December 2026 … from 3.25% to 3.1%") needs a change in the graph."""
        change_day = window.start + timedelta(days=1) if q.role == "before" else window.start
        if any(change_day in f.change_days() for f in holding):
            return
        fact = holding[0]
        self._find(
            "undated-change",
            doc,
            line,
            fact.entity,
            f"a change of {fact.prop} on {change_day} ({q.text} {'before' if q.role == 'before' else 'after'})",
            f"graph {fact.prop} = {fact.timeline_text()}",
            "Model the change in the graph with valid_to / valid_from periods (dated in entities.jsonl).",
        )

    # ------------------------------------------------------------------------------------- conditions (sets)
    def _conditions(
        self, doc: Document, line: int, sentence: str, mentioned: set[str], dates: list[DateMarker]
    ) -> None:
        day = dates[0].day if dates else (doc.effective or self.today)
        for entity in sorted(mentioned) or sorted(doc.entities):
            for fact in self.facts.get(entity, []):
                spec = fact.spec
                if spec.kind != "conditions" or spec.trigger is None:
                    continue
                trigger = re.search(
                    rf"\b{re.escape(spec.trigger)}\b(?: of charge)?\s+(?:if|when|where|for)\b(?P<clause>[^.;]*)",
                    sentence,
                    re.IGNORECASE,
                )
                if trigger is None:
                    continue
                stated = {
                    term
                    for term, phrases in spec.terms.items()
                    if any(re.search(rf"\b{re.escape(p)}\b", trigger["clause"], re.IGNORECASE) for p in phrases)
                }
                if not stated:
                    continue
                truth = set(fact.value_on(day) or [])
                exhaustive = re.search(r"\b(?:otherwise|only)\b", sentence, re.IGNORECASE) is not None
                self.report.checked += 1
                if stated - truth or (exhaustive and stated != truth):
                    said = " or ".join(sorted(stated)) + (" (and in no other case)" if exhaustive else "")
                    self._find(
                        "graph-mismatch",
                        doc,
                        line,
                        fact.entity,
                        f"{spec.trigger} if {said}",
                        f"graph {fact.prop} = {sorted(truth)}",
                        "The document gives different conditions from the graph.",
                    )

    # ------------------------------------------------------------------------------------------- duplicates
    def _remember(
        self, doc: Document, line: int, sentence: str, q: Quantity, mentioned: set[str], window: _Window
    ) -> None:
        """A number no graph fact covers, tied by a property's cue to the one entity the sentence (else the
        document) is about: every document stating it must agree."""
        entities = sorted(mentioned) or sorted(doc.entities)
        if len(entities) != 1:
            return
        for prop, spec in self.pack.manifest.properties.items():
            if _kind(spec) == q.kind and _cue_near(sentence, q, spec.cues):
                key = (entities[0], prop, window.start if window.explicit else None)
                self.statements[key].append(_Statement(doc, line, q))

    def _duplicates(self) -> None:
        for (entity, prop, _), statements in sorted(self.statements.items(), key=lambda kv: str(kv[0])):
            first = statements[0]
            for other in statements[1:]:
                if other.doc.id == first.doc.id or _same(first.quantity, other.quantity):
                    continue
                self._find(
                    "duplicate-disagreement",
                    other.doc,
                    other.line,
                    entity,
                    other.quantity.text,
                    f"{first.doc.path}:{first.line} states {first.quantity.text} ({prop})",
                    "Two documents disagree on one fact; add it to the graph to say which is right.",
                )

    # ------------------------------------------------------------------------------------------ worked examples
    def _worked_example(self, doc: Document, example: WorkedExample) -> None:
        assert example.formula is not None and example.result is not None
        day = doc.effective or self.today
        values: dict[str, float] = {}
        sources = []
        entity = min(doc.entities, default="-")
        for name, given in example.given.items():
            if isinstance(given, str):
                match = FACT_REFERENCE.match(given)
                assert match is not None
                entity = match["entity"]
                fact = next(f for f in self.facts.get(entity, []) if f.prop == match["property"])
                values[name] = float(fact.value_on(day))
                sources.append(f"{name}={_number(values[name])} ({given})")
            else:
                values[name] = float(given)
                sources.append(f"{name}={_number(given)}")
        computed = Formula(example.formula).evaluate(values)
        stated = find_quantities(example.result, self.pack.manifest.currency)
        start = doc.body.index(example.text) + example.text.index(example.result)
        line = doc.line_of(start)
        self.report.examples += 1
        if not stated:
            self._find("worked-example", doc, line, entity, example.result, "no number", "Write the result as a number")
            return
        result = stated[0]
        if abs(result.value - computed) > 0.5 * 10 ** (-result.decimals) + 1e-9:
            self._find(
                "worked-example",
                doc,
                line,
                entity,
                example.result,
                f"recomputed {computed:,.{max(result.decimals, 2)}f} from {example.formula} with {', '.join(sources)}",
                "The example's arithmetic does not match its inputs.",
            )

    def _find(
        self, kind: FindingKind, doc: Document, line: int, entity: str, stated: str, expected: str, message: str
    ) -> None:
        if any((f.kind, f.path, f.line, f.entity) == (kind, doc.path, line, entity) for f in self.report.findings):
            return  # one finding per statement: "falls from £30 to £25" is one unmodelled change, not two
        self.report.findings.append(Finding(kind, doc.path, line, entity, stated, expected, message))


_BOUND_TEXT = {"min": "at least", "min_exclusive": "more than", "max": "up to", "max_exclusive": "less than"}


def _kind(spec: PropertySpec) -> str:
    return _KIND_OF[spec.kind][0] if spec.kind in _KIND_OF else spec.kind


def _per(text: str) -> str:
    return {"payment": "transaction", "purchase": "transaction"}.get(text, text)


def _equal(fact: _Fact, value: Any, q: Quantity) -> bool:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or _kind(fact.spec) != q.kind:
        return False
    factor = _KIND_OF[fact.spec.kind][1]
    if fact.spec.kind == "money" and q.currency is not None and q.currency != fact.currency:
        return False
    return abs(float(value) * factor - q.value) < 1e-9 * max(1.0, abs(q.value))


def _same(a: Quantity, b: Quantity) -> bool:
    return a.kind == b.kind and abs(a.value - b.value) < 1e-9 and a.currency == b.currency


def _marker_for(
    q: Quantity, dates: list[DateMarker], sentence: str, quantities: list[Quantity]
) -> DateMarker | None:
    """The date a number is tied to: the first one after it before the next number ("3.1% from 1 December 2026"),
    else the last one before it after the previous number ("From 1 December 2026 the rate changes from …"), else
    the nearest. Never across a table cell border."""
    starts = sorted(o.start for o in quantities if o.start != q.start)
    following = min((s for s in starts if s > q.start), default=len(sentence))
    preceding = max((s for s in starts if s < q.start), default=-1)
    usable = [d for d in dates if "|" not in sentence[min(d.end, q.end) : max(d.start, q.start)]]
    after = [d for d in usable if q.end <= d.start < following]
    if after:
        return after[0]
    before = [d for d in usable if preceding < d.start < q.start]
    if before:
        return before[-1]
    return min(usable, key=lambda d: min(abs(d.start - q.end), abs(q.start - d.end)), default=None)


def _cue_near(sentence: str, q: Quantity, cues: list[str]) -> bool:
    """A cue within the number's clause (between semicolons or table bars) and ``_CUE_WINDOW`` characters."""
    lo, hi = max(0, q.start - _CUE_WINDOW), min(len(sentence), q.end + _CUE_WINDOW)
    left = max(sentence.rfind(";", lo, q.start), sentence.rfind("|", lo, q.start))
    right = min((i for i in (sentence.find(";", q.end, hi), sentence.find("|", q.end, hi)) if i >= 0), default=hi)
    around = sentence[left + 1 if left >= 0 else lo : right]
    return any(re.search(rf"(?<!\w){re.escape(c)}(?!\w)", around, re.IGNORECASE) for c in cues)


def _exempt(q: Quantity, base: int, spans: list[tuple[int, int, WorkedExample]], currency: str) -> bool:
    """Numbers an example names (given values and its result), or every number of an illustrative example."""
    position = base + q.start
    for start, end, example in spans:
        if not start <= position < end:
            continue
        if example.formula is None:
            return True
        named = [v for v in example.given.values() if not isinstance(v, str)]
        result = find_quantities(example.result or "", currency)
        written = q.written if q.written is not None else q.value
        if any(abs(written - float(v)) < 1e-9 for v in named) or any(_same(q, r) for r in result):
            return True
    return False


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"

