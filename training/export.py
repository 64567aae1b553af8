"""Export a trained checkpoint for serving: fp16 safetensors, tokenizer, card (with the command that rebuilt it);
and ONNX graphs of its weights (fused fp32, int8) for the ONNX Runtime backend, written next to them."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from app.qa.backends import EncodedBatch, OnnxBackend, files_sha256, weights_sha256
from app.qa.card import CARD_FILE, ModelCard, OnnxExport, OnnxQuantization

log = logging.getLogger(__name__)

# Files a served checkpoint needs; optimizer state and evaluation dumps stay behind.
EXTRA_FILES = ("calibration.json", "reliability.png")


def export_checkpoint(source: Path, target: Path, rebuild_command: str | None = None, half: bool = True) -> Path:
    """Write ``source`` to ``target`` as a compact serving checkpoint; returns the weights file."""
    model = AutoModelForQuestionAnswering.from_pretrained(str(source), local_files_only=True, dtype=torch.float32)
    if half:
        model = model.half()
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    model.save_pretrained(str(target), safe_serialization=True)
    tokenizer.save_pretrained(str(target))
    card = ModelCard.load(source)
    if rebuild_command:
        card.rebuild_command = rebuild_command
    card.hyperparameters = {**card.hyperparameters, "export_dtype": "float16" if half else "float32"}
    card.save(target)
    for name in EXTRA_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, target / name)
    weights = target / "model.safetensors"
    if not weights.exists() or not (target / CARD_FILE).exists():
        raise RuntimeError(f"export to {target} is incomplete")
    return weights


# ---------------------------------------------------------------------------------------------------- ONNX
ONNX_OPSET = 17
ONNX_FILES = {"fp32": "model_fp32.onnx", "int8": "model_int8.onnx"}
# Dynamic int8 (weights quantised once, activations per batch) of the MatMuls, the fused attention's projections and
# the embedding tables (which make up most of the file). Measured on this AVX2 CPU without VNNI (bench/RESULTS.md):
# signed int8 weights per output channel in ONNX Runtime's QOperator format are the fastest and keep SQuAD F1 of the
# fp32 graph; per-tensor weights lose about 2.5 F1, static QDQ int8 loses more, unsigned weights run slower.
INT8_SETTINGS = OnnxQuantization(
    weight_type="int8",
    per_channel=True,
    reduce_range=False,
    op_types=["MatMul", "Attention", "EmbedLayerNormalization"],
)
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_CHECK_TEXTS = (
    (
        "How long do I have to dispute a card payment?",
        "You can dispute a card payment within 120 days of the "
        "transaction date. Refunds are credited within 5 working days.",
    ),
    (
        "What does an urgent payment cost?",
        "Transfers to other banks arrive within one working day, or within two "
        "hours for urgent payments, which cost £3.50 each. " * 4,
    ),
    ("Who?", "Bob."),
)


class _SpanLogits(torch.nn.Module):
    """The QA model with plain tensor outputs, as the ONNX graph returns them."""

    def __init__(self, model: torch.nn.Module, inputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.inputs = list(inputs)

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.model(**dict(zip(self.inputs, tensors, strict=True)))
        return outputs.start_logits, outputs.end_logits


@dataclass(frozen=True, slots=True)
class OnnxExportResult:
    path: Path
    entry: OnnxExport
    seconds: float


def export_onnx(checkpoint: Path, int8: bool, cpu_default: bool = True, command: str | None = None) -> OnnxExportResult:
    """Write an ONNX graph of ``checkpoint``'s weights next to them and record it in the card.

    Steps: the TorchScript exporter (opset 17, dynamic batch and sequence axes, eager attention so that the
    optimiser recognises it), ONNX Runtime's transformer optimiser (BERT fusions: embedding + LayerNorm, attention,
    bias + GELU, skip + LayerNorm), then for ``int8`` dynamic quantisation of the MatMuls. The graph's logits are
    compared with the torch forward on a few windows (recorded in the card's ``check``). ``cpu_default`` makes it
    what serves on a CPU under ``VQA_BACKEND=auto``.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    started = time.perf_counter()
    precision: Literal["fp32", "int8"] = "int8" if int8 else "fp32"
    card = ModelCard.load(checkpoint)
    model = AutoModelForQuestionAnswering.from_pretrained(
        str(checkpoint), local_files_only=True, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint), local_files_only=True)
    inputs = [name for name in _INPUTS if name in tokenizer.model_input_names]
    sample = tokenizer(
        [q for q, _ in _CHECK_TEXTS],
        [c for _, c in _CHECK_TEXTS],
        padding=True,
        truncation="only_second",
        max_length=card.max_seq_len,
        return_tensors="np",
    )
    feeds = {name: sample[name].astype(np.int64) for name in inputs}
    with torch.inference_mode():  # before exporting: the tracer leaves the module unfit to run again
        reference = model(**{name: torch.from_numpy(feeds[name]) for name in inputs})
    target = checkpoint / ONNX_FILES[precision]
    with tempfile.TemporaryDirectory(prefix="vqa-onnx-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's tracer warnings are about Python control flow
            torch.onnx.export(
                _SpanLogits(model, inputs),
                tuple(torch.from_numpy(feeds[name]) for name in inputs),
                str(raw),
                input_names=inputs,
                output_names=["start_logits", "end_logits"],
                dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*inputs, "start_logits", "end_logits"]},
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        config = model.config
        fused = optimizer.optimize_model(
            str(raw),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=0,  # only the transformer fusions; ONNX Runtime applies its own graph passes at load time
            use_gpu=False,
        )
        fused_ops = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
        if fused_ops.get("Attention", 0) != int(config.num_hidden_layers):
            log.warning(
                "attention fused in %s of %s layers: %s",
                fused_ops.get("Attention", 0),
                config.num_hidden_layers,
                fused_ops,
            )
        optimized = Path(tmp) / "fused.onnx"
        fused.save_model_to_file(str(optimized))
        quantization: OnnxQuantization | None = None
        staged = Path(tmp) / target.name
        if int8:
            quantization = INT8_SETTINGS
            quantize_dynamic(
                str(optimized),
                str(staged),
                weight_type=QuantType.QInt8 if quantization.weight_type == "int8" else QuantType.QUInt8,
                per_channel=quantization.per_channel,
                reduce_range=quantization.reduce_range,
                op_types_to_quantize=quantization.op_types,
                # the fused operators (com.microsoft domain) defeat ONNX shape inference: say their outputs are float
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        else:
            optimized.rename(staged)
        entry = OnnxExport(
            file=target.name,
            precision=precision,
            opset=ONNX_OPSET,
            optimization={
                "optimizer": "onnxruntime.transformers.optimizer",
                "model_type": "bert",
                "fused_operators": fused_ops,
                "session_graph_optimization": "ORT_ENABLE_ALL",
            },
            quantization=quantization,
            sha256=files_sha256([staged]),
            weights_sha256=weights_sha256(checkpoint),
            onnxruntime_version=onnxruntime.__version__,
            exported_by=command,
        )
        entry.check = _agreement(OnnxBackend(Path(tmp), entry), feeds, reference.start_logits, reference.end_logits)
        if precision == "fp32" and entry.check["max_abs_logit_diff"] > 1e-3:
            raise RuntimeError(f"the fp32 ONNX graph disagrees with torch: {entry.check}; nothing written")
        shutil.move(staged, target)
    card.onnx = [e for e in card.onnx if e.precision != precision] + [entry]
    if cpu_default:
        card.cpu_backend = entry.backend
    card.save(checkpoint)
    return OnnxExportResult(target, entry, time.perf_counter() - started)


def _agreement(
    backend: OnnxBackend, feeds: dict[str, np.ndarray], start: torch.Tensor, end: torch.Tensor
) -> dict[str, float]:
    """How far the graph's logits are from the torch forward's over the real (unpadded) tokens of the sample."""
    backend.load()
    batch = EncodedBatch(feeds["input_ids"], feeds["attention_mask"], feeds.get("token_type_ids"))
    onnx_start, onnx_end = backend.run(batch)
    real = torch.from_numpy(feeds["attention_mask"]).bool()
    diff = max(float((a - b).abs()[real].max()) for a, b in ((onnx_start, start), (onnx_end, end)))
    same = [
        (a.masked_fill(~real, -1e9).argmax(-1) == b.masked_fill(~real, -1e9).argmax(-1)).float()
        for a, b in ((onnx_start, start), (onnx_end, end))
    ]
    return {
        "windows": float(len(real)),
        "max_abs_logit_diff": round(diff, 5),
        "argmax_agreement": round(float(torch.cat(same).mean()), 3),
    }

