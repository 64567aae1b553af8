"""Entity linking: find the graph's aliases in text with one Aho-Corasick pass.

Matching is case- and accent-insensitive and respects word boundaries; spans are reported in characters of the
original text. Overlapping matches resolve to the longest (then earliest) one.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick


@dataclass(frozen=True, slots=True)
class EntityRef:
    id: str
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class EntityMention:
    entity: EntityRef
    text: str
    start: int
    end: int


def fold(text: str) -> tuple[str, list[int]]:
    """Case- and accent-folded text plus, for each folded character, the index of the original character."""
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for piece in unicodedata.normalize("NFKD", char):
            if unicodedata.combining(piece):
                continue
            folded = piece.casefold()
            out.append(folded)
            origin.extend([index] * len(folded))
    return "".join(out), origin


def _is_word_char(char: str) -> bool:
    return char.isalnum() or char == "_"


class EntityLinker:
    """Finds mentions of known entities. Build once from (entity, aliases) pairs; :meth:`link` is thread-safe."""

    def __init__(self, entries: Iterable[tuple[EntityRef, Iterable[str]]]) -> None:
        self._automaton = ahocorasick.Automaton()
        self.size = 0
        for entity, aliases in entries:
            for alias in {entity.name, *aliases}:
                key, _ = fold(alias.strip())
                if len(key) < 2:
                    continue  # one-letter aliases would match everywhere
                existing = self._automaton.get(key, None)
                # An alias shared by two entities is ambiguous: keep the first and let the graph data be fixed.
                if existing is None:
                    self._automaton.add_word(key, (len(key), entity))
                    self.size += 1
        if self.size:
            self._automaton.make_automaton()

    def link(self, text: str) -> list[EntityMention]:
        if not self.size or not text:
            return []
        folded, origin = fold(text)
        found: list[tuple[int, int, EntityRef]] = []
        for end_index, (length, entity) in self._automaton.iter(folded):
            start_index = end_index - length + 1
            before = folded[start_index - 1] if start_index > 0 else " "
            after = folded[end_index + 1] if end_index + 1 < len(folded) else " "
            if _is_word_char(before) or _is_word_char(after):
                continue
            found.append((start_index, end_index, entity))
        found.sort(key=lambda m: (-(m[1] - m[0]), m[0]))
        taken: list[tuple[int, int]] = []
        mentions: list[EntityMention] = []
        for start_index, end_index, entity in found:
            if any(start_index <= t_end and end_index >= t_start for t_start, t_end in taken):
                continue
            taken.append((start_index, end_index))
            start, end = origin[start_index], origin[end_index] + 1
            mentions.append(EntityMention(entity, text[start:end], start, end))
        return sorted(mentions, key=lambda m: m.start)
