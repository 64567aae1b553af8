"""The ONNX Runtime backend on a real (tiny, random) checkpoint: export, choice by the card, same answers as torch."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from app.cli import main
from app.qa.backends import ModelLoadError, OnnxBackend
from app.qa.batcher import BatchResult, InferenceError, WindowBatcher
from app.qa.card import ModelCard
from app.qa.reader import Reader, WindowJob
from training.export import export_onnx

CONTEXT = (
    "Standard transfers between your own accounts are instant. Transfers to other banks arrive within one "
    "working day, or within two hours for urgent payments, which cost £3.50 each. "
) * 8
ITEMS = [
    ("How long do transfers take?", [CONTEXT, "Cards are blocked at once when reported lost."]),
    ("What does an urgent payment cost?", ["Urgent payments cost £3.50 each."]),
    ("fee?", ["Replacement cards cost nothing. A second replacement in a year costs £5."]),
]


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny checkpoint with both ONNX graphs next to its weights; int8 is the card's CPU default."""
    target = tmp_path_factory.mktemp("onnx") / "tiny"
    shutil.copytree(tiny_model_dir, target)
    export_onnx(target, int8=False, cpu_default=False)
    export_onnx(target, int8=True)
    return target


def answers(reader: Reader) -> list[list[tuple[int, int, int, float]]]:
    results = reader.answer_batch(ITEMS, top_k=3, max_answer_len=8, min_score=0.0)
    return [[(a.context_index, a.start, a.end, a.score) for a in r.answers] for r in results]


def test_export_records_each_graph_in_the_card(exported_dir: Path) -> None:
    card = ModelCard.load(exported_dir)
    assert card.cpu_backend == "onnx-int8"
    fp32, int8 = card.onnx_export("onnx-fp32"), card.onnx_export("onnx-int8")
    assert fp32 is not None and int8 is not None
    for entry in (fp32, int8):
        assert (exported_dir / entry.file).is_file() and entry.opset == 17
        # the transformer optimiser fused every layer's attention (2 layers in the tiny model)
        assert entry.optimization["fused_operators"]["Attention"] == 2
    assert int8.quantization is not None and int8.quantization.weight_type == "int8"
    assert fp32.quantization is None and fp32.check["max_abs_logit_diff"] < 1e-3
    assert (exported_dir / int8.file).stat().st_size < (exported_dir / fp32.file).stat().st_size


def test_fused_fp32_graph_answers_like_torch(exported_dir: Path) -> None:
    torch_reader = Reader(exported_dir, device="cpu", backend="torch")
    onnx_reader = Reader(exported_dir, device="cpu", backend="onnx-fp32")
    torch_reader.load()
    onnx_reader.load()
    assert (onnx_reader.backend.name, onnx_reader.precision) == ("onnx-fp32", "float32")
    expected, got = answers(torch_reader), answers(onnx_reader)
    assert [[a[:3] for a in row] for row in got] == [[a[:3] for a in row] for row in expected]
    for row_got, row_expected in zip(got, expected, strict=True):
        for a, b in zip(row_got, row_expected, strict=True):
            assert a[3] == pytest.approx(b[3], abs=1e-4)


def test_a_batch_spread_over_cores_matches_one_padded_run(exported_dir: Path) -> None:
    """Several windows run one per core at their own length; the logits equal one padded batch's."""
    reader = Reader(exported_dir, device="cpu", backend="onnx-fp32")
    reader.load()
    windows = reader.preprocess("How long do transfers take?", [CONTEXT, "Urgent payments cost £3.50 each."])
    assert len(windows) > 2 and len({len(w) for w in windows}) > 1
    jobs = [WindowJob(w) for w in windows]
    export = ModelCard.load(exported_dir).onnx_export("onnx-fp32")
    assert export is not None
    spread, one_run = OnnxBackend(exported_dir, export, num_threads=2), OnnxBackend(exported_dir, export, num_threads=1)
    spread.load()
    one_run.load()
    results = []
    for backend in (spread, one_run):
        reader._backend = backend
        start, end, mask = reader.logits(jobs)
        results.append((start[mask], end[mask]))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-4)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_int8_windows_scores_do_not_depend_on_its_batch(exported_dir: Path, threads: int) -> None:
    """int8 activations are quantised per tensor: a window must not share one with other requests' windows."""
    reader = Reader(exported_dir, device="cpu", backend="onnx-int8", num_threads=threads)
    reader.load()
    short = reader.preprocess("fee?", ["Urgent payments cost £3.50 each."])[0]
    others = reader.preprocess("How long do transfers take?", [CONTEXT])
    alone = reader.forward([WindowJob(short, 30, 3)])[0]
    in_batch = reader.forward([WindowJob(w, 30, 3) for w in [*others, short]])[-1]
    assert alone.candidates == in_batch.candidates and alone.null_log_prob == in_batch.null_log_prob


@pytest.mark.parametrize("backend", ["onnx-int8", "onnx-fp32", "torch"])
def test_a_window_the_model_fails_on_fails_only_its_request_in_a_batch(exported_dir: Path, backend: str) -> None:
    """The batcher's isolation holds whatever runs the model: the ONNX backend runs every window alone (one per core)
    and a failing window makes its whole forward raise, so the batch is split down to that window."""
    reader = Reader(exported_dir, device="cpu", backend=backend, num_threads=2)
    reader.load()
    texts = [f"Request {i} says the card replacement fee is {i} pounds." for i in range(7)]
    windows = [reader.preprocess("What is the fee?", [text])[0] for text in texts]
    # A token id past the vocabulary: the embedding lookup fails on this window alone, as a model can on one input.
    poisoned = replace(windows[3], input_ids=[*windows[3].input_ids[:-2], reader.tokenizer.vocab_size + 7,
                                              windows[3].input_ids[-1]])  # fmt: skip
    with pytest.raises(Exception):  # noqa: B017 - torch and onnxruntime raise their own types
        reader.forward([WindowJob(poisoned)])
    alone = [reader.forward([WindowJob(w)])[0] for w in windows]

    async def scenario() -> list[BatchResult | BaseException]:
        batcher = WindowBatcher(reader.forward, max_batch_windows=16, max_wait_ms=200, seconds_per_token=1e-4)
        batcher.start()
        try:
            jobs = [[WindowJob(poisoned if i == 3 else w)] for i, w in enumerate(windows)]
            return await asyncio.gather(*(batcher.submit(j, timeout_s=60) for j in jobs), return_exceptions=True)
        finally:
            await batcher.close()

    results = asyncio.run(scenario())
    assert isinstance(results[3], InferenceError)
    for i, result in enumerate(results):
        if i != 3:
            assert isinstance(result, BatchResult), result
            assert result.predictions[0].candidates == alone[i].candidates, "its answer is the one it gets alone"


def test_auto_serves_the_cards_cpu_backend(exported_dir: Path) -> None:
    reader = Reader(exported_dir, device="cpu")
    reader.load()
    assert (reader.backend.name, reader.precision) == ("onnx-int8", "int8")
    results = reader.answer_batch(ITEMS, top_k=2, min_score=0.0)
    for (_, contexts), result in zip(ITEMS, results, strict=True):
        assert result.answers
        for a in result.answers:
            assert contexts[a.context_index][a.start : a.end] == a.text


def test_a_graph_of_other_weights_is_never_served(
    exported_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    changed = tmp_path / "retrained"
    shutil.copytree(exported_dir, changed)
    weights = load_file(str(changed / "model.safetensors"))
    name = next(iter(weights))
    weights[name] = weights[name] + 0.01
    save_file(weights, str(changed / "model.safetensors"), metadata={"format": "pt"})

    with caplog.at_level(logging.WARNING):
        reader = Reader(changed, device="cpu")
        reader.load()
    assert reader.backend.name == "torch", "auto falls back to the weights themselves"
    assert "stale" in caplog.text and f"vqa export --checkpoint {changed} --onnx --int8" in caplog.text
    with pytest.raises(ModelLoadError, match="stale.*vqa export --checkpoint .* --onnx --int8"):
        Reader(changed, device="cpu", backend="onnx-int8").load()


def test_an_onnx_backend_the_checkpoint_lacks_says_how_to_build_it(tiny_model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no onnx-fp32 graph.*vqa export --checkpoint \S+ --onnx$"):
        Reader(tiny_model_dir, device="cpu", backend="onnx-fp32").load()
    reader = Reader(tiny_model_dir, device="cpu")  # no graph, card default torch: auto serves torch, no warning
    reader.load()
    assert (reader.backend.name, reader.precision, reader.device.type) == ("torch", "float32", "cpu")


def test_eval_with_an_onnx_backend_writes_the_graphs_scores(
    exported_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = tmp_path / "ckpt"
    shutil.copytree(exported_dir, checkpoint)
    data = tmp_path / "mini.json"
    paragraphs = [
        {
            "context": "Urgent payments cost £3.50 each.",
            "qas": [
                {
                    "id": "q1",
                    "question": "What does an urgent payment cost?",
                    "answers": [{"text": "£3.50", "answer_start": 21}],
                }
            ],
        }
    ]
    data.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}))
    before = ModelCard.load(checkpoint).eval
    code = main(
        [
            "eval",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(data),
            "--backend",
            "onnx-int8",
            "--write-card",
            "--set-name",
            "mini",
            "--no-progress",
            "--report-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    card = ModelCard.load(checkpoint)
    int8 = card.onnx_export("onnx-int8")
    assert int8 is not None and int8.eval["mini"].questions == 1
    assert card.eval == before, "the torch weights' scores are left alone"
    assert "onnx-int8 (int8, cpu)" in capsys.readouterr().err
