"""SpanDecoder on hand-made logits: masks, order, length limits, probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from app.qa.spans import SpanDecoder


def _batch(seq: int, context: range, peaks: dict[str, dict[int, float]], windows: int = 1):
    start = torch.full((windows, seq), -5.0)
    end = torch.full((windows, seq), -5.0)
    for pos, value in peaks.get("start", {}).items():
        start[:, pos] = value
    for pos, value in peaks.get("end", {}).items():
        end[:, pos] = value
    mask = torch.zeros((windows, seq), dtype=torch.bool)
    mask[:, context.start : context.stop] = True
    return start, end, mask


def test_best_span_is_the_peak_pair() -> None:
    start, end, mask = _batch(12, range(4, 11), {"start": {5: 6.0}, "end": {7: 6.0}})
    out = SpanDecoder().decode(start, end, mask, torch.tensor([30]), top_k=1)
    assert out.starts.tolist() == [[5]] and out.ends.tolist() == [[7]]


def test_question_and_special_tokens_are_never_chosen() -> None:
    # The strongest logits sit on question tokens (1..3): they must be ignored.
    start, end, mask = _batch(12, range(5, 11), {"start": {1: 20.0, 6: 2.0}, "end": {2: 20.0, 8: 2.0}})
    cands = SpanDecoder().decode(start, end, mask, torch.tensor([30]), top_k=10).to_lists()[0]
    assert cands, "expected spans inside the context"
    assert all(5 <= s <= e < 11 for _, s, e in cands)


def test_end_never_precedes_start() -> None:
    start, end, mask = _batch(10, range(1, 10), {"start": {8: 9.0}, "end": {2: 9.0}})
    cands = SpanDecoder().decode(start, end, mask, torch.tensor([30]), top_k=40).to_lists()[0]
    assert all(e >= s for _, s, e in cands)


def test_max_answer_len_limits_span_length_per_window() -> None:
    start, end, mask = _batch(16, range(1, 16), {"start": {2: 9.0}, "end": {12: 9.0}}, windows=2)
    out = SpanDecoder().decode(start, end, mask, torch.tensor([3, 30]), top_k=50).to_lists()
    assert all(e - s < 3 for _, s, e in out[0])
    assert (out[1][0][1], out[1][0][2]) == (2, 12)  # the second window may keep the long peak span


def test_top_k_returns_k_distinct_spans_best_first() -> None:
    start, end, mask = _batch(12, range(3, 12), {"start": {4: 5.0, 6: 4.0}, "end": {5: 5.0, 8: 4.0}})
    cands = SpanDecoder().decode(start, end, mask, torch.tensor([30]), top_k=5).to_lists()[0]
    assert len(cands) == 5
    assert len({(s, e) for _, s, e in cands}) == 5
    scores = [p for p, _, _ in cands]
    assert scores == sorted(scores, reverse=True)


def test_scores_are_log_probabilities_that_sum_below_one_with_null() -> None:
    start, end, mask = _batch(8, range(3, 8), {"start": {4: 2.0}, "end": {5: 2.0}})
    out = SpanDecoder().decode(start, end, mask, torch.tensor([64]), top_k=64)
    spans = sum(math.exp(p) for p, _, _ in out.to_lists()[0])
    null = math.exp(out.null_log_probs[0].item())
    assert 0 < null < 1 and 0 < spans < 1
    assert spans + null <= 1.0 + 1e-5


def test_temperature_flattens_probabilities() -> None:
    start, end, mask = _batch(10, range(2, 10), {"start": {3: 6.0}, "end": {4: 6.0}})
    sharp = SpanDecoder(1.0).decode(start, end, mask, torch.tensor([30]), top_k=1).log_probs.item()
    soft = SpanDecoder(3.0).decode(start, end, mask, torch.tensor([30]), top_k=1).log_probs.item()
    assert soft < sharp


def test_window_without_context_yields_no_span() -> None:
    start, end, mask = _batch(6, range(0), {})
    assert SpanDecoder().decode(start, end, mask, torch.tensor([30]), top_k=3).to_lists() == [[]]


def test_bad_arguments_are_refused() -> None:
    start, end, mask = _batch(6, range(2, 6), {})
    with pytest.raises(ValueError, match="top_k"):
        SpanDecoder().decode(start, end, mask, torch.tensor([30]), top_k=0)
    with pytest.raises(ValueError, match="shape"):
        SpanDecoder().decode(start, end[:, :3], mask, torch.tensor([30]), top_k=1)
    with pytest.raises(ValueError, match="temperature"):
        SpanDecoder(0.0)


def test_decoding_matches_a_brute_force_search_over_all_spans() -> None:
    """Random logits, contexts and per-window limits: the k best spans are exactly those of an exhaustive search."""
    generator = torch.Generator().manual_seed(7)
    windows, seq, top_k = 6, 40, 5
    start = torch.randn((windows, seq), generator=generator) * 3
    end = torch.randn((windows, seq), generator=generator) * 3
    mask = torch.zeros((windows, seq), dtype=torch.bool)
    limits = torch.tensor([1, 3, 8, 30, 64, 12])
    for row, (lo, hi) in enumerate([(5, 40), (10, 20), (2, 39), (15, 16), (1, 40), (30, 38)]):
        mask[row, lo:hi] = True
    out = SpanDecoder(0.7).decode(start, end, mask, limits, top_k=top_k).to_lists()
    for row in range(windows):
        allowed = mask[row].clone()
        allowed[0] = True
        start_lp = torch.log_softmax(torch.where(allowed, start[row] / 0.7, torch.tensor(float("-inf"))), dim=-1)
        end_lp = torch.log_softmax(torch.where(allowed, end[row] / 0.7, torch.tensor(float("-inf"))), dim=-1)
        spans = sorted(
            (
                (float(start_lp[s] + end_lp[e]), s, e)
                for s in range(seq)
                for e in range(s, seq)
                if mask[row, s] and mask[row, e] and e - s < int(limits[row])
            ),
            reverse=True,
        )[:top_k]
        assert [(s, e) for _, s, e in out[row]] == [(s, e) for _, s, e in spans]
        assert [p for p, _, _ in out[row]] == pytest.approx([p for p, _, _ in spans], abs=1e-5)
