"""Tokenizing from many threads: each thread owns its tokenizer, and an oversized window is refused, never run."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from app.qa.windows import TokenizerPerThread, WindowConfig, WindowOverflowError, encode_windows

CONFIG = WindowConfig(max_seq_len=128, stride=32, max_question_tokens=32)
CONTEXT = " ".join(f"Clause {i}: the fee for item {i} is {i * 5} pounds, payable monthly." for i in range(150))


def _question(seed: int) -> str:
    # Long questions make focus_question call the tokenizer without truncation, short ones do not: the mix of
    # per-call settings is what raced when threads shared one tokenizer.
    return "What is the fee for this item? " * random.Random(seed).randint(1, 30)


def test_threads_get_their_own_tokenizer_and_the_windows_of_a_single_thread(tokenizer) -> None:  # type: ignore[no-untyped-def]
    per_thread = TokenizerPerThread(tokenizer)
    expected = {seed: encode_windows(tokenizer, _question(seed), [CONTEXT], CONFIG) for seed in range(24)}

    def work(seed: int) -> tuple[int, Any, int]:
        windows = encode_windows(per_thread.get(), _question(seed), [CONTEXT], CONFIG)
        return seed, windows, id(per_thread.get())

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(work, [s % 24 for s in range(240)]))
    for seed, windows, _ in results:
        assert windows == expected[seed]
        assert all(len(w) <= CONFIG.max_seq_len for w in windows)
    assert per_thread.get() is not tokenizer and per_thread.prototype is tokenizer
    assert 1 < len({owner for _, _, owner in results}) <= 8, "one tokenizer per worker thread"


class _IgnoresTruncation:
    """A tokenizer whose pair calls come back untruncated: what a racing thread's settings produced."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("truncation") == "only_second":
            kwargs["truncation"] = False
            kwargs.pop("stride", None)
            kwargs.pop("max_length", None)
        return self._inner(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_window_longer_than_the_model_takes_is_refused(tokenizer) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WindowOverflowError, match="exceeds max_seq_len 128"):
        encode_windows(_IgnoresTruncation(tokenizer), "What is the fee?", [CONTEXT], CONFIG)  # type: ignore[arg-type]
