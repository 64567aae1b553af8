"""The model card ``qa_model.json`` that travels with every checkpoint directory."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

CARD_FILE = "qa_model.json"


class EvalResult(BaseModel):
    """Official SQuAD v1.1 scores of the checkpoint on one evaluation set.

    ``exact_match``/``f1`` are top-span numbers over the answerable questions (no threshold); the ``served`` fields
    apply the abstention ``threshold``: an abstention scores 0, and both error rates are kept.
    """

    exact_match: float
    f1: float
    questions: int
    abstention_rate: float | None = None  # % of answerable questions abstained on at ``threshold``
    served_f1: float | None = None
    threshold: float | None = None
    unanswerable: int | None = None
    unanswerable_abstained: float | None = None  # % of unanswerable questions abstained on (the right call)


class DataSource(BaseModel):
    """A training or evaluation file and the hash that pins its content."""

    path: str
    sha256: str
    questions: int
    weight: float = 1.0
    excluded_seen: int = 0  # questions left out because an earlier run trained on them
    augment_variants: int = 0  # customer-style rewrites added per question
    examples_used: int | None = None  # after exclusions and rewrites, before weighting


class Calibration(BaseModel):
    """Temperature scaling fitted on held-out windows, with expected calibration error before and after."""

    temperature: float = 1.0
    ece_before: float | None = None
    ece_after: float | None = None
    fitted_on: str | None = None
    questions: int | None = None


CpuBackend = Literal["torch", "onnx-fp32", "onnx-int8"]


class OnnxQuantization(BaseModel):
    """How an int8 graph was quantised (ONNX Runtime's ``quantize_dynamic``)."""

    method: Literal["dynamic"] = "dynamic"
    format: Literal["QOperator"] = "QOperator"
    weight_type: Literal["int8", "uint8"] = "int8"
    activation_type: Literal["uint8"] = "uint8"  # dynamic quantisation computes uint8 activation scales per batch
    per_channel: bool = True
    reduce_range: bool = False
    op_types: list[str] = Field(default_factory=list)


class OnnxExport(BaseModel):
    """One ONNX graph of the checkpoint's weights, written by ``vqa export --onnx`` next to them."""

    model_config = ConfigDict(protected_namespaces=())

    file: str
    precision: Literal["fp32", "int8"]
    opset: int
    optimization: dict[str, Any] = Field(default_factory=dict)  # optimiser, model type, fused operator counts
    quantization: OnnxQuantization | None = None
    sha256: str
    weights_sha256: str  # of the safetensors it was exported from: a graph of other weights is stale
    onnxruntime_version: str
    exported_by: str | None = None  # the command that wrote it
    check: dict[str, float] = Field(default_factory=dict)  # agreement with the torch forward at export time
    eval: dict[str, EvalResult] = Field(default_factory=dict)  # scores of this graph (vqa eval --backend)

    @property
    def backend(self) -> CpuBackend:
        return "onnx-int8" if self.precision == "int8" else "onnx-fp32"


class ModelCard(BaseModel):
    """What the service needs to know about a checkpoint beyond its weights."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    name: str = "unnamed"
    version: str = "0"
    base_model: str | None = None
    max_seq_len: int = Field(default=384, ge=16, le=4096)
    stride: int = Field(default=128, ge=0)
    max_question_tokens: int = Field(default=64, ge=1)
    no_answer_threshold: float = Field(default=0.0, ge=0.0, le=1.0)
    calibration: Calibration = Field(default_factory=Calibration)
    data: list[DataSource] = Field(default_factory=list)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, EvalResult] = Field(default_factory=dict)
    rebuild_command: str | None = None
    # What serves on a CPU when VQA_BACKEND=auto (a GPU always runs the torch weights in bf16).
    cpu_backend: CpuBackend = "torch"
    onnx: list[OnnxExport] = Field(default_factory=list)

    def onnx_export(self, backend: str) -> OnnxExport | None:
        """The card's ONNX graph for ``backend`` (``onnx-fp32`` or ``onnx-int8``), if it has one."""
        return next((e for e in self.onnx if e.backend == backend), None)

    @property
    def base_model_name(self) -> str:
        """The base model by name, never by where a machine kept it (the card's value may be an old local path).

        A hub-style id (``org/name``) is kept; a path gives its last part, or its package for a model shipped
        inside a wheel (``.../<package>/model``).
        """
        declared = (self.base_model or "").strip()
        if not re.match(r"^(/|~|[A-Za-z]:\\|\.{1,2}/)", declared):
            return declared
        parts = [p for p in re.split(r"[/\\]+", declared) if p and p not in {"~", "."}]
        if len(parts) >= 2 and parts[-1] == "model":
            return parts[-2]
        return parts[-1] if parts else ""

    @classmethod
    def load(cls, checkpoint_dir: Path) -> ModelCard:
        """Read the card of ``checkpoint_dir``; a directory without one gets defaults named after the folder."""
        path = checkpoint_dir / CARD_FILE
        if not path.exists():
            return cls(name=checkpoint_dir.name)
        return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))

    def save(self, checkpoint_dir: Path) -> Path:
        path = checkpoint_dir / CARD_FILE
        path.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
        return path
