"""Why an answer was withheld: one closed set of reasons, shared by the reader, the rules and the API schema."""

from __future__ import annotations

from enum import StrEnum


class AbstentionReason(StrEnum):
    LOW_CONFIDENCE = "low_confidence"  # the best span scores below the threshold
    NO_SPAN = "no_span"  # no span fits max_answer_len in the contexts
    NO_CONTEXT_TEXT = "no_context_text"  # every context is empty or whitespace
    NO_PASSAGE = "no_passage"  # question only: no corpus passage matches the question
    BLOCKED = "blocked"  # a block rule fired
