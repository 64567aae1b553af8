"""The Reader on a real tokenizer and a real checkpoint directory (a tiny random model)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.qa.reader import ModelLoadError, Reader, WindowJob

CONTEXT = (
    "Standard transfers between your own accounts are instant. Transfers to other banks arrive within one "
    "working day, or within two hours for urgent payments, which cost £3.50 each. "
) * 8


@pytest.fixture(scope="module")
def reader(tiny_model_dir: Path) -> Reader:
    r = Reader(tiny_model_dir, device="cpu")
    r.load()
    return r


def test_load_reads_card_and_picks_cpu_fp32(reader: Reader) -> None:
    # no ONNX graph next to the weights: torch serves them in fp32 on the CPU
    assert reader.loaded and reader.device.type == "cpu" and reader.precision == "float32"
    assert reader.backend.name == "torch"
    assert (reader.card.name, reader.card.version) == ("tiny-test", "t1")
    # window geometry comes from the card, not the defaults
    assert (reader.window_config.max_seq_len, reader.window_config.stride) == (128, 32)


def test_answers_slice_their_context_and_respect_limits(reader: Reader) -> None:
    contexts = [CONTEXT, "Cards are blocked at once when reported lost. 😀 Replacement cards cost nothing."]
    windows = reader.preprocess("How long do transfers take?", contexts)
    assert len(windows) > 2, "the long context is cut into several windows"
    result = reader.answer_batch([("How long do transfers take?", contexts)], top_k=5, max_answer_len=4, min_score=0)[0]
    assert 1 <= len(result.answers) <= 5
    assert len({(a.context_index, a.start, a.end) for a in result.answers}) == len(result.answers)
    for a in result.answers:
        assert contexts[a.context_index][a.start : a.end] == a.text
        assert 0.0 < a.score <= 1.0
        assert len(reader.tokenizer(a.text, add_special_tokens=False)["input_ids"]) <= 4
    assert [a.score for a in result.answers] == sorted((a.score for a in result.answers), reverse=True)


def test_batched_and_single_forward_agree(reader: Reader) -> None:
    short = reader.preprocess("fee?", ["Urgent payments cost £3.50 each."])
    long = reader.preprocess("fee?", [CONTEXT])
    alone = reader.forward([WindowJob(short[0], 30, 3)])[0]
    mixed = reader.forward([WindowJob(w, 30, 3) for w in [*long, short[0]]])[-1]
    assert [(s, e) for _, s, e in alone.candidates] == [(s, e) for _, s, e in mixed.candidates]
    for (p1, _, _), (p2, _, _) in zip(alone.candidates, mixed.candidates, strict=True):
        assert p1 == pytest.approx(p2, abs=1e-4), "padding must not change a window's scores"


def test_missing_checkpoint_fails_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=str(tmp_path)):
        Reader(tmp_path).load()


def test_preprocess_from_many_threads_matches_one_thread(reader: Reader) -> None:
    """Worker threads tokenize at once (short and long questions, long contexts): no window outgrows the model."""
    from concurrent.futures import ThreadPoolExecutor

    long_context = CONTEXT * 6
    questions = [("How long do transfers take? " * n).strip() for n in (1, 3, 9, 20, 40)]
    expected = {q: reader.preprocess(q, [long_context]) for q in questions}
    jobs = [questions[i % len(questions)] for i in range(200)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda q: (q, reader.preprocess(q, [long_context])), jobs))
    for question, windows in results:
        assert all(len(w) <= reader.window_config.max_seq_len for w in windows)
        assert windows == expected[question]
