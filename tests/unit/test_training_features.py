"""Label construction for training: every label decodes back to its answer, stride boundaries, unicode."""

from __future__ import annotations

import random

from app.qa.windows import WindowConfig
from training.features import build_features, iter_shard, length_grouped_batches
from training.squad import Answer, QAExample

CONTEXT = " ".join(f"Rule {i}: card replacement number {i} costs {i + 3} euros in Zürich 👍🏽." for i in range(40))


def _example(qid: str, answer: str, context: str = CONTEXT, occurrence: int = 0) -> QAExample:
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(answer, start + 1)
    return QAExample(id=qid, question="How much does it cost?", context=context, answers=(Answer(answer, start),))


def test_every_answer_window_decodes_back_to_the_answer(tokenizer) -> None:  # type: ignore[no-untyped-def]
    config = WindowConfig(max_seq_len=64, stride=24, max_question_tokens=16)
    examples = [_example(f"q{i}", f"{i + 3} euros in Zürich") for i in range(0, 40, 3)]
    features, report = build_features(tokenizer, examples, config, progress=False)
    assert report.examples == len(examples) and report.bad_offsets == 0
    assert report.exact == len(examples) and report.mismatched == 0
    assert report.windows == len(features) > len(examples)  # long context: several windows each
    labelled = [f for f in features if f.start != 0]
    assert len(labelled) >= len(examples)  # answers near a cut appear in two windows
    assert all(0 < f.start <= f.end < len(f.input_ids) for f in labelled)


def test_answer_inside_a_token_is_counted_not_dropped(tokenizer) -> None:  # type: ignore[no-untyped-def]
    context = "The fee is £5 per card."
    # "5" alone starts inside the token "£5": the label must cover "£5" and the report must say so.
    example = QAExample("mid", "fee?", context, (Answer("5", context.index("5")),))
    features, report = build_features(tokenizer, [example], WindowConfig(), progress=False)
    assert report.mismatched == 1 and report.mismatched_ids == ["mid"]
    assert features[0].start != 0


def test_wrong_offsets_are_reported_and_labelled_as_no_answer(tokenizer) -> None:  # type: ignore[no-untyped-def]
    example = QAExample("bad", "q?", "Short context.", (Answer("missing text", 3),))
    features, report = build_features(tokenizer, [example], WindowConfig(), progress=False)
    assert report.bad_offsets == 1 and report.bad_offset_ids == ["bad"]
    assert [(f.start, f.end) for f in features] == [(0, 0)]


def test_length_grouped_batches_cover_everything_once_and_group_lengths() -> None:
    lengths = [random.Random(i).randint(20, 384) for i in range(1000)]
    batches = length_grouped_batches(lengths, 16, random.Random(0))
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 40, "batches hold windows of similar length"


def test_shards_are_disjoint_and_equal_sized() -> None:
    batches = [[i] for i in range(11)]
    shards = [list(iter_shard(batches, r, 3)) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert len({b[0] for s in shards for b in s}) == 9
