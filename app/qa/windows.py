"""Cut (question, contexts) into model windows.

One implementation serves the reader and the training package, so the windows a checkpoint was trained on are the
windows it is served with: the question (truncated to ``max_question_tokens``) followed by an overlapping slice of one
context, with the character offsets of every context token kept for decoding.
"""

from __future__ import annotations

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


def truncate_question(tokenizer: PreTrainedTokenizerBase, question: str, max_tokens: int) -> str:
    """Cut the question at a token boundary so that it keeps at most ``max_tokens`` tokens.

    Cutting the text (not the ids) keeps the tokenizer's own pair encoding, so windows stay identical to what
    ``tokenizer(question, context)`` would give for short questions.
    """
    question = question.strip()
    encoded = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    if len(offsets) <= max_tokens:
        return question
    return question[: offsets[max_tokens - 1][1]]


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
        q = truncate_question(tokenizer, question, config.max_question_tokens)
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
