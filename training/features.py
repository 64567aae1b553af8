"""Training features: windows with start/end labels, and the batches that feed them to the model."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from app.qa.windows import Window, WindowConfig, encode_windows_many, label_window
from training.squad import QAExample

_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class TrainFeature:
    input_ids: list[int]
    token_type_ids: list[int] | None
    start: int
    end: int


@dataclass(slots=True)
class AlignmentReport:
    """What happened to each example's answer when cut into windows; printed and stored in the card."""

    examples: int = 0
    windows: int = 0
    answerable: int = 0
    impossible: int = 0
    answer_windows: int = 0  # windows whose label is a real span
    exact: int = 0  # answers whose token span decodes back to exactly the answer text
    mismatched: int = 0  # token span covers more than the answer (answer starts/ends inside a token)
    mismatched_ids: list[str] = field(default_factory=list)
    bad_offsets: int = 0  # answer_start/text do not match the context: kept as CLS-only, counted
    bad_offset_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "examples": self.examples,
            "windows": self.windows,
            "answerable": self.answerable,
            "impossible": self.impossible,
            "answer_windows": self.answer_windows,
            "exact": self.exact,
            "mismatched": self.mismatched,
            "bad_offsets": self.bad_offsets,
        }


def _squash(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def build_features(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[QAExample],
    config: WindowConfig,
    chunk_size: int = 1000,
    progress: bool = True,
) -> tuple[list[TrainFeature], AlignmentReport]:
    """Window every example and label each window with the first reference answer (or CLS when absent)."""
    report = AlignmentReport()
    features: list[TrainFeature] = []
    bar = tqdm(total=len(examples), desc="windows", unit="q", disable=not progress)
    for chunk_start in range(0, len(examples), chunk_size):
        chunk = examples[chunk_start : chunk_start + chunk_size]
        windows_per_example = encode_windows_many(tokenizer, [(ex.question, [ex.context]) for ex in chunk], config)
        for example, windows in zip(chunk, windows_per_example, strict=True):
            features.extend(_label_example(example, windows, report))
        bar.update(len(chunk))
    bar.close()
    return features, report


def _label_example(example: QAExample, windows: list[Window], report: AlignmentReport) -> list[TrainFeature]:
    report.examples += 1
    report.windows += len(windows)
    answer = example.answers[0] if example.answers and not example.is_impossible else None
    if answer is None:
        report.impossible += 1
    else:
        report.answerable += 1
        if example.context[answer.start : answer.end] != answer.text:
            report.bad_offsets += 1
            report.bad_offset_ids.append(example.id)
            answer = None
    out: list[TrainFeature] = []
    decoded_exactly: bool | None = None
    for window in windows:
        start, end = (0, 0) if answer is None else label_window(window, answer.start, answer.end)
        if start != 0:
            report.answer_windows += 1
            decoded = example.context[window.offsets[start][0] : window.offsets[end][1]]
            exact = _squash(decoded) == _squash(answer.text) if answer else False
            decoded_exactly = exact if decoded_exactly is None else (decoded_exactly and exact)
        out.append(TrainFeature(window.input_ids, window.token_type_ids, start, end))
    if decoded_exactly is True:
        report.exact += 1
    elif decoded_exactly is False:
        report.mismatched += 1
        report.mismatched_ids.append(example.id)
    return out


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, group_factor: int = 50
) -> list[list[int]]:
    """Batches of similar length (less padding) in random order: shuffle, sort within mega-batches, shuffle batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * group_factor
    batches: list[list[int]] = []
    for i in range(0, len(order), mega):
        group = sorted(order[i : i + mega], key=lambda j: lengths[j], reverse=True)
        batches.extend(group[k : k + batch_size] for k in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def collate(features: Sequence[TrainFeature], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest window."""
    width = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    types = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f.input_ids)
        ids[row, :n] = torch.tensor(f.input_ids)
        mask[row, :n] = 1
        if f.token_type_ids is not None:
            types[row, :n] = torch.tensor(f.token_type_ids)
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "start_positions": torch.tensor([f.start for f in features]),
        "end_positions": torch.tensor([f.end for f in features]),
    }
    if features[0].token_type_ids is not None:
        batch["token_type_ids"] = types
    return {k: v.to(device) for k, v in batch.items()}


def iter_shard(batches: Sequence[list[int]], rank: int, world_size: int) -> Iterator[list[int]]:
    """This rank's share of the batches; every rank gets the same count so DDP's all-reduce never waits forever."""
    usable = len(batches) - len(batches) % world_size if world_size > 1 else len(batches)
    yield from batches[rank:usable:world_size]
