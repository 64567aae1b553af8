"""Facts with effective dates: how they are stored on a graph node and which value is in force on a given day.

A property graph has no nested maps, so a dated property ``p`` travels as three parallel lists on the node:
``p__values``, ``p__from`` and ``p__to`` (ISO dates, ``""`` for an open end). Readers never see those lists: they
ask :func:`in_force` for the value on a day plus the changes scheduled after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from kg.pack import EntityRow, PropertyValue, ScalarValue

VALUES, FROM, TO = "__values", "__from", "__to"


@dataclass(frozen=True, slots=True)
class Period:
    """One value of a fact and the days it is in force (both ends inclusive; ``None`` is open)."""

    value: Any
    valid_from: date | None = None
    valid_to: date | None = None

    def covers(self, day: date) -> bool:
        return (self.valid_from is None or self.valid_from <= day) and (self.valid_to is None or day <= self.valid_to)


@dataclass(frozen=True, slots=True)
class ScheduledChange:
    """``property`` changes from ``previous`` to ``value`` on ``effective`` (``value`` None: it stops applying)."""

    property: str
    previous: Any
    value: Any
    effective: date

    def as_json(self) -> dict[str, Any]:
        return {"property": self.property, "from": self.previous, "to": self.value, "on": self.effective.isoformat()}


def fact_periods(entity: EntityRow) -> dict[str, list[Period]]:
    """Every property of a pack row as a timeline: undated props are one open period."""
    out: dict[str, list[Period]] = {key: [Period(value)] for key, value in entity.props.items()}
    for key, periods in entity.timelines().items():
        out[key] = [Period(p.props[key], p.valid_from, p.valid_to) for p in periods]
    return out


def encode(entity: EntityRow) -> dict[str, PropertyValue]:
    """Node properties for a pack row: undated props as they are, dated ones as parallel lists."""
    props: dict[str, PropertyValue] = dict(entity.props)
    for key, periods in entity.timelines().items():
        values: list[ScalarValue] = [p.props[key] for p in periods]
        if any(isinstance(v, float) for v in values):
            values = [float(v) for v in values]  # one list type: [3.25, 3] would be refused by the graph
        props[key + VALUES] = values  # type: ignore[assignment]
        props[key + FROM] = [p.valid_from.isoformat() if p.valid_from else "" for p in periods]
        props[key + TO] = [p.valid_to.isoformat() if p.valid_to else "" for p in periods]
    return props


def decode(props: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[Period]]]:
    """Node properties -> (undated properties, dated timelines)."""
    static = {k: v for k, v in props.items() if not k.endswith((VALUES, FROM, TO))}
    timelines: dict[str, list[Period]] = {}
    for key in props:
        if not key.endswith(VALUES):
            continue
        name = key[: -len(VALUES)]
        starts, ends = props.get(name + FROM) or [], props.get(name + TO) or []
        timelines[name] = [
            Period(value, _day(start), _day(end))
            for value, start, end in zip(props[key], starts, ends, strict=False)
        ]
    return static, timelines


def in_force(props: dict[str, Any], day: date) -> tuple[dict[str, Any], list[ScheduledChange]]:
    """The properties in force on ``day`` and the changes scheduled after it, in date order."""
    static, timelines = decode(props)
    current = dict(static)
    changes: list[ScheduledChange] = []
    for name, periods in timelines.items():
        now = next((p for p in periods if p.covers(day)), None)
        if now is not None:
            current[name] = now.value
        previous = now.value if now is not None else None
        for period in sorted(periods, key=lambda p: p.valid_from or date.min):
            if period.valid_from is not None and period.valid_from > day:
                changes.append(ScheduledChange(name, previous, period.value, period.valid_from))
                previous = period.value
            if period.valid_to is not None and period.valid_to >= day and not _continues(periods, period.valid_to):
                changes.append(ScheduledChange(name, period.value, None, period.valid_to + timedelta(days=1)))
                previous = None
    changes.sort(key=lambda c: (c.effective, c.property))
    return current, changes


def _continues(periods: list[Period], end: date) -> bool:
    return any(p.valid_from == end + timedelta(days=1) for p in periods)


def _day(text: str) -> date | None:
    return date.fromisoformat(text) if text else None
