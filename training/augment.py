"""Customer-style rewrites of training questions: how people really type to a bank's support.

Templated questions are tidy; customers write in lower case without punctuation, misspell (a neighbouring key, a
dropped or doubled letter, two letters swapped), open with "hi" and sign off with "thanks", and tell their story
before they ask. Each rewrite keeps the question's meaning, so the example keeps its answer span (or stays
unanswerable). Rewrites are deterministic for a given seed, so a training run can be rebuilt exactly.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Sequence
from dataclasses import replace

from training.squad import QAExample


def _keyboard_neighbours(rows: Sequence[str] = ("qwertyuiop", "asdfghjkl", "zxcvbnm")) -> dict[str, str]:
    """The QWERTY neighbours of each letter: the typo a thumb on a phone keyboard makes."""
    neighbours: dict[str, str] = {}
    for r, row in enumerate(rows):
        for c, letter in enumerate(row):
            near = set(row[max(0, c - 1) : c + 2])
            for other in (r - 1, r + 1):
                if 0 <= other < len(rows):
                    near.update(rows[other][max(0, c - 1) : c + 1])
            neighbours[letter] = "".join(sorted(near - {letter}))
    return neighbours


KEY_NEIGHBOURS = _keyboard_neighbours()
OPENERS = (
    "hi, ",
    "hello, ",
    "hey ",
    "hiya, ",
    "good morning, ",
    "hi there, ",
    "quick question: ",
    "sorry to bother you but ",
    "can you help, ",
    "hello team, ",
)
SIGN_OFFS = (" thanks", " thank you", " cheers", " pls", " thx", "??", " many thanks", " ta", " asap please")
PREAMBLES = (
    "I've been a customer for years and never had to ask this before.",
    "My partner usually sorts out the banking but they're away this week.",
    "We're moving house next month and trying to get everything in order.",
    "I'm looking at my statement on the app right now and something doesn't look right.",
    "I tried to find this on your website but couldn't see it anywhere.",
    "I rang earlier but the queue was really long so I'm trying the chat instead.",
    "My daughter has just started university and I'm helping her with her money.",
    "I'm going on holiday soon and want to make sure I don't get caught out.",
    "I've just been paid and I'm trying to plan my bills for the month.",
    "A friend told me something different and now I'm confused.",
    "I'm self employed so my income goes up and down a lot.",
    "I'm a bit worried because money is tight at the moment.",
    "Sorry if this is a silly question, I'm not very good with banking stuff.",
    "I opened the account last week through the app.",
    "I'm comparing a few banks before I decide what to do.",
    "My mum is elderly and I help her manage her accounts.",
)
_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation.replace(chr(39), ''))}]")


def lower_no_punctuation(question: str, rng: random.Random) -> str:
    """``What's the fee?`` -> ``what's the fee`` (apostrophes dropped half the time: ``whats the fee``)."""
    text = _PUNCTUATION.sub(" ", question.lower())
    if rng.random() < 0.5:
        text = text.replace("'", "")
    return " ".join(text.split())


def typos(question: str, rng: random.Random, count: int | None = None) -> str:
    """One or two misspellings in words of four letters or more."""
    words = question.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not candidates:
        return question
    for i in rng.sample(candidates, min(len(candidates), count or rng.choice((1, 1, 2)))):
        words[i] = _misspell(words[i], rng)
    return " ".join(words)


def _misspell(word: str, rng: random.Random) -> str:
    j = rng.randrange(1, len(word) - 1)  # keep the first letter: people rarely get that wrong
    kind = rng.randrange(4)
    if kind == 0:  # dropped letter
        return word[:j] + word[j + 1 :]
    if kind == 1:  # neighbours swapped
        return word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    if kind == 2:  # doubled letter
        return word[: j + 1] + word[j] + word[j + 1 :]
    near = KEY_NEIGHBOURS.get(word[j].lower(), "")  # neighbouring key
    return word[:j] + (rng.choice(near) if near else word[j]) + word[j + 1 :]


def chatty(question: str, rng: random.Random) -> str:
    """An informal opener and/or sign-off around the question."""
    text = question
    if rng.random() < 0.8:
        text = rng.choice(OPENERS) + text[:1].lower() + text[1:]
    if rng.random() < 0.7:
        text = text + rng.choice(SIGN_OFFS)
    return text


def preamble(question: str, rng: random.Random) -> str:
    """One to four sentences of the customer's story before the real question (sometimes past 64 tokens)."""
    story = " ".join(rng.sample(PREAMBLES, rng.randint(1, 4)))
    text = f"{rng.choice(OPENERS).strip().capitalize()} {story} {question}"
    return text + (rng.choice(SIGN_OFFS) if rng.random() < 0.4 else "")


STYLES: dict[str, Callable[[str, random.Random], str]] = {
    "lower": lower_no_punctuation,
    "typo": typos,
    "chatty": chatty,
    "preamble": preamble,
}


def rewrite(question: str, style: str, rng: random.Random) -> str:
    """One rewrite in ``style``; ``lower`` and ``typo`` are sometimes combined with each other, as people do."""
    text = STYLES[style](question, rng)
    if style in {"chatty", "preamble"} and rng.random() < 0.3:
        text = typos(text, rng, 1)
    if style == "typo" and rng.random() < 0.5:
        text = lower_no_punctuation(text, rng)
    return text


def augment_examples(
    examples: Sequence[QAExample], variants: int, seed: int, styles: Sequence[str] = tuple(STYLES)
) -> list[QAExample]:
    """``variants`` rewrites of every example (distinct styles while there are enough), ids suffixed ``~style``.

    The originals are not included; answers and ``is_impossible`` are unchanged because only the question moves.
    """
    out: list[QAExample] = []
    for example in examples:
        rng = random.Random(f"{seed}/{example.id}")
        picked = rng.sample(list(styles), min(variants, len(styles)))
        picked += [rng.choice(list(styles)) for _ in range(variants - len(picked))]
        seen = {example.question}
        for n, style in enumerate(picked):
            text = rewrite(example.question, style, rng)
            if text in seen:  # e.g. a question with no word long enough for a typo
                text = chatty(example.question, rng)
            seen.add(text)
            out.append(replace(example, id=f"{example.id}~{style}{n}", question=text))
    return out
