"""Entity linking: find the graph's aliases in text as customers write it.

Text and aliases are reduced to the same normal form, token by token, and matched with one Aho-Corasick pass over
whole tokens:

- case and accents folded; words are runs of letters and digits (so "non-sterling" and "non sterling" agree);
- a few function words dropped ("freeze my card" and "freeze the card" both say "freeze card");
- typos repaired: a word of 5 or more characters that is neither an alias word nor a known word of the corpus is
  replaced by the alias word closest to it within 1 edit (2 edits from 8 characters on; a swap of two neighbouring
  letters is one edit), using rapidfuzz's optimal-string-alignment distance;
- inflections folded by the Snowball English stemmer ("cards", "replacing" and "replacement" meet "card", "replac").

Spans are reported in characters of the original text. Overlapping matches resolve to the longest (most tokens, then
most characters), then earliest, one.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import ahocorasick
import snowballstemmer
from rapidfuzz import process
from rapidfuzz.distance import OSA

log = logging.getLogger(__name__)

WORD = re.compile(r"[^\W_]+")
# Words that never decide what an alias means: dropped from aliases and text alike.
FUNCTION_WORDS = frozenset({"a", "an", "the", "my", "your", "our", "his", "her", "their", "its"})
TYPO_MIN_CHARS = 5


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
    # How it was found: "alias" (exact normal form), "fuzzy" (a typo was repaired in it), "embedding" (similar to
    # the entity's description or to a labelled example question), "document" (an entity of the document the answer
    # came from).
    method: str = "alias"
    score: float = 1.0


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


def max_edits(word: str) -> int:
    """How many edits a word of this length may be away from an alias word and still count as that word."""
    if len(word) < TYPO_MIN_CHARS:
        return 0
    return 1 if len(word) < 8 else 2


@dataclass(frozen=True, slots=True)
class _Token:
    key: str  # normal form
    start: int  # original character offsets
    end: int
    repaired: bool


class EntityLinker:
    """Finds mentions of known entities. Build once from (entity, aliases) pairs; :meth:`link` is thread-safe.

    ``vocabulary`` holds words known to be spelt right (the corpus's words): they are never "repaired" into an alias
    word, which keeps "mixed" from becoming "fixed".
    """

    def __init__(
        self,
        entries: Iterable[tuple[EntityRef, Iterable[str]]],
        vocabulary: Iterable[str] = (),
        *,
        repair_typos: bool = True,
        normalise: bool = True,
    ) -> None:
        self.repair_typos = repair_typos
        self.normalise = normalise  # stems and function words; off: exact folded words only
        # A Snowball stemmer keeps the word it works on in the instance: one per thread, since requests link in
        # worker threads at the same time (a shared one mixes two words up and raises).
        self._stemmers = threading.local()
        self._automaton = ahocorasick.Automaton()
        self.size = 0
        self.entities: list[EntityRef] = []
        alias_words: set[str] = set()
        pending: list[tuple[EntityRef, list[list[str]]]] = []
        for entity, aliases in entries:
            self.entities.append(entity)
            forms: list[list[str]] = []
            for alias in sorted({entity.name, *aliases}):
                words = [w for w in WORD.findall(fold(alias.strip())[0]) if not self._dropped(w)]
                if not words or (len(words) == 1 and len(words[0]) < 2):
                    continue  # one-letter aliases would match everywhere
                alias_words.update(words)
                forms.append(words)
            pending.append((entity, forms))
        self._alias_words = sorted(alias_words)
        self._known = frozenset(alias_words) | frozenset(fold(w)[0] for w in vocabulary)
        for entity, forms in pending:
            for form in forms:
                key = " " + " ".join(self._stem(w) for w in form) + " "
                existing = self._automaton.get(key, None)
                # An alias shared by two entities is ambiguous: keep the first and let the graph data be fixed.
                if existing is None:
                    self._automaton.add_word(key, (len(key), entity))
                    self.size += 1
                elif existing[1] != entity:
                    log.warning("alias %r of %s is already %s's: ignored", " ".join(form), entity.id, existing[1].id)
        if self.size:
            self._automaton.make_automaton()
        self._repair = lru_cache(maxsize=65536)(self._repair_uncached)

    def normal_form(self, word: str) -> str:
        """The key a (folded, correctly spelt) word is matched by."""
        return self._stem(word)

    def _stem(self, word: str) -> str:
        if not self.normalise:
            return word
        stemmer = getattr(self._stemmers, "english", None)
        if stemmer is None:
            stemmer = self._stemmers.english = snowballstemmer.stemmer("english")
        return str(stemmer.stemWord(word))

    def _dropped(self, word: str) -> bool:
        return self.normalise and word in FUNCTION_WORDS

    def _repair_uncached(self, word: str) -> str | None:
        """The alias word a misspelt word stands for, or None when it is known or nothing is close enough."""
        limit = max_edits(word)
        if not self.repair_typos or not limit or word in self._known or not self._alias_words:
            return None
        found = process.extractOne(word, self._alias_words, scorer=OSA.distance, score_cutoff=limit)
        if found is None:
            return None
        candidate = str(found[0])
        return candidate if len(candidate) >= TYPO_MIN_CHARS - 1 else None

    def tokens(self, text: str) -> list[_Token]:
        folded, origin = fold(text)
        out: list[_Token] = []
        for match in WORD.finditer(folded):
            word = match.group()
            if self._dropped(word):
                continue
            repaired = self._repair(word)
            key = self._stem(repaired or word)
            out.append(_Token(key, origin[match.start()], origin[match.end() - 1] + 1, repaired is not None))
        return out

    def link(self, text: str) -> list[EntityMention]:
        if not self.size or not text:
            return []
        tokens = self.tokens(text)
        if not tokens:
            return []
        # " k0 k1 k2 ": a match of " a b " starts on the space before its first token, so spaces delimit words.
        token_at: dict[int, int] = {}  # position of the space before a token -> the token's index
        position = 0
        for index, token in enumerate(tokens):
            token_at[position] = index
            position += len(token.key) + 1
        haystack = " " + " ".join(t.key for t in tokens) + " "
        found: list[tuple[int, int, EntityRef]] = []  # (first token, last token, entity)
        for end_index, (length, entity) in self._automaton.iter(haystack):
            first = token_at[end_index - length + 1]
            last = first + haystack[end_index - length + 1 : end_index].strip().count(" ")
            found.append((first, last, entity))
        found.sort(key=lambda m: (-(m[1] - m[0]), -(tokens[m[1]].end - tokens[m[0]].start), m[0]))
        taken: list[tuple[int, int]] = []
        mentions: list[EntityMention] = []
        for first, last, entity in found:
            if any(first <= t_last and last >= t_first for t_first, t_last in taken):
                continue
            taken.append((first, last))
            start, end = tokens[first].start, tokens[last].end
            repaired = any(t.repaired for t in tokens[first : last + 1])
            mentions.append(EntityMention(entity, text[start:end], start, end, "fuzzy" if repaired else "alias"))
        return sorted(mentions, key=lambda m: m.start)
