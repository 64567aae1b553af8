"""Cut (question, contexts) into model windows.

One implementation serves the reader and the training package, so the windows a checkpoint was trained on are the
windows it is served with: the question (cut to its asking part within ``max_question_tokens``, see
:func:`focus_question`) followed by an overlapping slice of one context, with the character offsets of every context
token kept for decoding. A tokenizer is not safe to share across threads: :class:`TokenizerPerThread` gives each
thread its own.
"""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True, slots=True)
class WindowConfig:
    """How contexts are cut: total tokens per window, tokens shared by neighbouring windows, question budget."""

    max_seq_len: int = 384
    stride: int = 128
    max_question_tokens: int = 64

    def __post_init__(self) -> None:
        if self.max_seq_len < 16:
            raise ValueError(f"max_seq_len must be >= 16, got {self.max_seq_len}")
        if not 1 <= self.max_question_tokens < self.max_seq_len // 2:
            raise ValueError(
                f"max_question_tokens must be in 1..{self.max_seq_len // 2 - 1} for max_seq_len {self.max_seq_len}"
            )
        if self.stride < 0:
            raise ValueError(f"stride must be >= 0, got {self.stride}")


@dataclass(frozen=True, slots=True)
class Window:
    """One model input: token ids plus where the context sits in it.

    ``offsets[i]`` is the (start, end) character span of token ``i`` in its context; only positions in
    ``[context_start, context_end)`` are context tokens. Position 0 is the classifier token that stands for
    "no answer in this window".
    """

    input_ids: list[int]
    token_type_ids: list[int] | None
    offsets: list[tuple[int, int]]
    context_index: int
    context_start: int
    context_end: int

    def __len__(self) -> int:
        return len(self.input_ids)


class WindowOverflowError(RuntimeError):
    """A window came out longer than ``max_seq_len``: the model cannot take it, so the request that made it fails."""


class TokenizerPerThread:
    """One copy of a fast tokenizer per thread.

    A Hugging Face fast tokenizer keeps its truncation and padding settings as mutable state that every call
    rewrites, so two threads sharing one can tokenize with each other's settings (a window built while another
    thread switched truncation off comes out longer than the model accepts). Each thread therefore gets its own
    deep copy of the prototype, made on first use; the prototype itself is never used to tokenize.
    """

    def __init__(self, prototype: PreTrainedTokenizerBase) -> None:
        self._prototype = prototype
        self._copy_lock = threading.Lock()
        self._local = threading.local()

    @property
    def prototype(self) -> PreTrainedTokenizerBase:
        """The tokenizer the copies are made from: read its attributes, never call it from several threads."""
        return self._prototype

    def get(self) -> PreTrainedTokenizerBase:
        """This thread's tokenizer."""
        tokenizer: PreTrainedTokenizerBase | None = getattr(self._local, "tokenizer", None)
        if tokenizer is None:
            with self._copy_lock:
                tokenizer = copy.deepcopy(self._prototype)
            self._local.tokenizer = tokenizer
        return tokenizer


_SENTENCE_END = re.compile(r"[.?!]+[)\"'\u2019\u201d]*(?=\s|$)|\n+")
_ASKING_WORDS = frozenset(
    "what whats what's how when where why who whom whose which can could do does did is are am was were will would "
    "should shall may might must has have any".split()
)


def _sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of ``text`` (ends at ``.?!`` before a space or at a line break)."""
    spans: list[tuple[int, int]] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        if text[start : match.end()].strip():
            spans.append((start, match.end()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _asking_sentence(text: str, spans: list[tuple[int, int]]) -> int | None:
    """Index of the sentence that asks: the last one with a question mark, else the last that opens like a question."""
    for i in range(len(spans) - 1, -1, -1):
        if "?" in text[spans[i][0] : spans[i][1]]:
            return i
    for i in range(len(spans) - 1, -1, -1):
        words = text[spans[i][0] : spans[i][1]].strip().lower().split()
        if words and words[0].strip(",;:") in _ASKING_WORDS:
            return i
    return None


def focus_question(tokenizer: PreTrainedTokenizerBase, question: str, max_tokens: int) -> str:
    """Keep the part of a long question that asks, in at most ``max_tokens`` tokens.

    Customers put the real question last ("hi, we're moving house next week and ... how much does a CHAPS payment
    cost? thanks"), so cutting the head of a long question keeps the preamble and loses the question. A question
    within budget is kept whole. Otherwise the sentence that asks (the last one with a question mark, else the
    last that opens with a question word) is kept with as many of the sentences just before it as fit; when that
    sentence alone is too long, or no sentence asks, the last ``max_tokens`` tokens are kept. Training and serving
    both cut questions here, so a checkpoint is served the questions it was trained on.
    """
    question = question.strip()
    encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    offsets: list[tuple[int, int]] = [(int(s), int(e)) for s, e in encoded["offset_mapping"]]
    if len(offsets) <= max_tokens:
        return question

    def tokens_in(start: int, end: int) -> int:
        return sum(1 for s, e in offsets if s >= start and e <= end)

    def tail(end: int) -> str:
        inside = [s for s, e in offsets if e <= end]
        return question[inside[-max_tokens] : end].strip() if inside else question[:end]

    spans = _sentences(question)
    asking = _asking_sentence(question, spans)
    if asking is None:
        return tail(len(question))
    start, end = spans[asking]
    if tokens_in(start, end) > max_tokens:
        return tail(end)
    first = asking
    while first > 0 and tokens_in(spans[first - 1][0], end) <= max_tokens:
        first -= 1
    return question[spans[first][0] : end].strip()


def encode_windows(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    contexts: Sequence[str],
    config: WindowConfig,
) -> list[Window]:
    """Tokenize one question against every context, overlapping windows of ``config.max_seq_len`` tokens.

    Contexts that hold no text (empty or whitespace only) yield no window.
    """
    return encode_windows_many(tokenizer, [(question, list(contexts))], config)[0]


def encode_windows_many(
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[str, Sequence[str]]],
    config: WindowConfig,
) -> list[list[Window]]:
    """Batch form of :func:`encode_windows`: one tokenizer call for many (question, contexts) items.

    The Rust tokenizer is far faster on one big batch than on many small calls, which matters when training
    prepares 90k questions.
    """
    questions: list[str] = []
    texts: list[str] = []
    owners: list[tuple[int, int]] = []  # (item index, context index) per pair sent to the tokenizer
    for item_index, (question, contexts) in enumerate(items):
        q = focus_question(tokenizer, question, config.max_question_tokens)
        for context_index, text in enumerate(contexts):
            if not text.strip():
                continue
            questions.append(q)
            texts.append(text)
            owners.append((item_index, context_index))
    result: list[list[Window]] = [[] for _ in items]
    if not texts:
        return result

    specials = tokenizer.num_special_tokens_to_add(pair=True)
    longest_question = max(len(tokenizer(q, add_special_tokens=False)["input_ids"]) for q in set(questions))
    room = config.max_seq_len - specials - longest_question
    # The tokenizer refuses a stride that is not smaller than the room left for context; half the room keeps
    # progress through long contexts while still overlapping answers that straddle a cut.
    stride = min(config.stride, max(room // 2, 0))
    encoded = tokenizer(
        questions,
        texts,
        truncation="only_second",
        max_length=config.max_seq_len,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,
    )
    token_types = encoded.get("token_type_ids")
    for window_index, pair_index in enumerate(encoded["overflow_to_sample_mapping"]):
        sequence_ids = encoded.sequence_ids(window_index)
        context_positions = [i for i, s in enumerate(sequence_ids) if s == 1]
        if not context_positions:
            continue
        item_index, context_index = owners[pair_index]
        if len(encoded["input_ids"][window_index]) > config.max_seq_len:
            raise WindowOverflowError(
                f"a window of {len(encoded['input_ids'][window_index])} tokens exceeds max_seq_len "
                f"{config.max_seq_len} (item {item_index}, context {context_index})"
            )
        result[item_index].append(
            Window(
                input_ids=list(encoded["input_ids"][window_index]),
                token_type_ids=list(token_types[window_index]) if token_types is not None else None,
                offsets=[(int(s), int(e)) for s, e in encoded["offset_mapping"][window_index]],
                context_index=context_index,
                context_start=context_positions[0],
                context_end=context_positions[-1] + 1,
            )
        )
    return result


def label_window(window: Window, answer_start: int, answer_end: int) -> tuple[int, int]:
    """Token positions (start, end) of the answer chars ``[answer_start, answer_end)`` in ``window``.

    An answer not wholly inside the window is labelled (0, 0): the classifier token, "not in this window".
    """
    cs, ce = window.context_start, window.context_end
    if window.offsets[cs][0] > answer_start or window.offsets[ce - 1][1] < answer_end:
        return 0, 0
    start = cs
    while start + 1 < ce and window.offsets[start + 1][0] <= answer_start:
        start += 1
    end = ce - 1
    while end - 1 >= start and window.offsets[end - 1][1] >= answer_end:
        end -= 1
    return start, end


def plan_length_groups(lengths: Sequence[int], max_padding_ratio: float = 1.3) -> list[list[int]]:
    """Split a batch into groups of similar length; returns indices into ``lengths``.

    Indices are sorted by length and a new group starts when the next window would make the group's padded width
    more than ``max_padding_ratio`` times its shortest window: one 384-token window must not make sixty 40-token
    windows pay for 384 tokens each.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] <= max_padding_ratio * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
