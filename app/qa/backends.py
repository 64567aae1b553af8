"""Model execution for the Reader: one padded batch of token ids in, start/end logits out.

Two backends run the same checkpoint. :class:`TorchBackend` runs the Hugging Face weights (bf16 on CUDA, fp32 on the
CPU). :class:`OnnxBackend` runs an ONNX graph of the same weights that ``vqa export --onnx`` wrote next to them
(fused fp32, or int8) with ONNX Runtime on the CPU. Windowing and span decoding stay in the Reader, so every backend
reads the same windows and its logits go through the same SpanDecoder.

Which one runs is :func:`select_backend`'s decision: ``VQA_BACKEND`` (``auto`` by default) and the checkpoint card's
``cpu_backend``. A card's ONNX graph records the hash of the weights it was exported from; a graph of other weights
is stale and never served.
"""

from __future__ import annotations

import hashlib
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from app.qa.card import ModelCard, OnnxExport

log = logging.getLogger(__name__)

BackendChoice = Literal["auto", "torch", "onnx", "onnx-fp32", "onnx-int8"]
BACKEND_CHOICES: tuple[str, ...] = get_args(BackendChoice)
WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")


class ModelLoadError(RuntimeError):
    """The checkpoint directory is missing or unusable; the message says which path and why."""


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """A padded batch of windows as the model takes it: ``[windows, width]`` int64 arrays."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray | None


class ModelBackend(ABC):
    """Runs the span model on an :class:`EncodedBatch`; cheap to construct, :meth:`load` does the work."""

    name: str  # what serves: "torch", "onnx-fp32" or "onnx-int8"
    precision: str  # "float32", "bfloat16" or "int8"
    device: torch.device

    @abstractmethod
    def load(self) -> None:
        """Read the weights or graph; raise :class:`ModelLoadError` with the path and the reason if unusable."""

    @abstractmethod
    def run(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Start and end logits ``[windows, width]`` of one batch (callers serialise calls)."""


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def cpu_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class TorchBackend(ModelBackend):
    """The Hugging Face checkpoint in PyTorch: bf16 on CUDA, fp32 on the CPU (bf16 matmuls are slow on most CPUs)."""

    name = "torch"

    def __init__(self, path: Path, device: str = "auto", num_threads: int | None = None) -> None:
        self.path = path
        self.requested_device = device
        self.num_threads = num_threads
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.precision = "float32"
        self._model: torch.nn.Module | None = None

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            raise RuntimeError("TorchBackend.load() has not been called")
        return self._model

    def load(self) -> None:
        from transformers import AutoModelForQuestionAnswering

        self.device = resolve_device(self.requested_device)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.precision = str(self.dtype).removeprefix("torch.")
        if self.device.type == "cpu":
            torch.set_num_threads(self.num_threads or cpu_cores())
        try:
            model = AutoModelForQuestionAnswering.from_pretrained(
                str(self.path), local_files_only=True, dtype=self.dtype
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load checkpoint at {self.path}: {exc}") from exc
        model.to(self.device)
        model.eval()
        self._model = model

    def run(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = {
            "input_ids": torch.from_numpy(batch.input_ids).to(self.device),
            "attention_mask": torch.from_numpy(batch.attention_mask).to(self.device),
        }
        if batch.token_type_ids is not None:
            inputs["token_type_ids"] = torch.from_numpy(batch.token_type_ids).to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        return outputs.start_logits, outputs.end_logits


class OnnxBackend(ModelBackend):
    """An ONNX graph of the checkpoint run by ONNX Runtime on the CPU.

    The graph takes ``input_ids``, ``attention_mask`` (and ``token_type_ids`` if the model uses them) with dynamic
    batch and sequence axes and returns ``start_logits`` and ``end_logits``; ``vqa export --onnx`` writes it.

    Every window runs alone at its own length, so a window's logits never depend on the other windows of its batch
    (an int8 graph quantises activations with one scale per tensor: padding or neighbours would move them). A single
    window runs on all cores (intra-op threads, for the latency of a lone request); a batch of several is spread over
    the cores one window at a time, each single-threaded. On this 2-core machine stacking windows into one padded
    tensor cost more CPU per window than running them one by one (bench/RESULTS.md), and one window per core avoids
    the threads' synchronisation inside every operator.
    """

    def __init__(self, path: Path, export: OnnxExport, num_threads: int | None = None) -> None:
        self.path = path
        self.export = export
        self.name = export.backend
        self.precision = "int8" if export.precision == "int8" else "float32"
        self.device = torch.device("cpu")
        self.num_threads = num_threads or cpu_cores()
        self._session: Any = None  # all cores on one window
        self._per_core: Any = None  # one core per window, called from several threads at once
        self._pool: ThreadPoolExecutor | None = None
        self._input_names: set[str] = set()

    def _open(self, graph: Path, threads: int) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads would spin for the next batch and take the cores that tokenising, decoding and the
        # event loop need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def load(self) -> None:
        graph = self.path / self.export.file
        try:
            session = self._open(graph, self.num_threads)
            if self.num_threads > 1:
                self._per_core = self._open(graph, 1)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelLoadError(f"cannot load ONNX graph {graph}: {exc}") from exc
        self._input_names = {i.name for i in session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._input_names
        if missing:
            raise ModelLoadError(f"ONNX graph {graph} lacks the inputs {sorted(missing)}; re-run vqa export --onnx")
        if self._per_core is not None:
            self._pool = ThreadPoolExecutor(max_workers=self.num_threads, thread_name_prefix="vqa-onnx")
        # torch only decodes spans here: small tensors, for which a second OpenMP thread costs more than it saves
        torch.set_num_threads(1)
        self._session = session

    def _feeds(self, batch: EncodedBatch) -> dict[str, np.ndarray]:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = (
                batch.token_type_ids if batch.token_type_ids is not None else np.zeros_like(batch.input_ids)
            )
        return feeds

    def run(self, batch: EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self._session is None:
            raise RuntimeError("OnnxBackend.load() has not been called")
        feeds = self._feeds(batch)
        windows, width = batch.input_ids.shape
        lengths = batch.attention_mask.sum(axis=1)
        # Padding positions keep logit 0: the span decoder masks everything outside the context anyway.
        start = np.zeros((windows, width), dtype=np.float32)
        end = np.zeros((windows, width), dtype=np.float32)

        def one_window(row: int, session: Any) -> None:
            # Each window at its own length, alone: int8 graphs quantise activations with one scale per tensor, so
            # padding or other windows in the tensor would change this window's numbers (and its answer).
            length = int(lengths[row])
            row_feeds = {name: array[row : row + 1, :length] for name, array in feeds.items()}
            row_start, row_end = session.run(["start_logits", "end_logits"], row_feeds)
            start[row, :length] = row_start[0]
            end[row, :length] = row_end[0]

        if windows == 1 or self._pool is None:
            for row in range(windows):
                one_window(row, self._session)
        else:
            # longest first, so that no core is left with a long window at the end
            order = sorted(range(windows), key=lambda r: -int(lengths[r]))
            list(self._pool.map(lambda row: one_window(row, self._per_core), order))
        return torch.from_numpy(start), torch.from_numpy(end)


def files_sha256(files: Sequence[Path]) -> str:
    """One SHA-256 over the bytes of ``files`` in order."""
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_sha256(checkpoint: Path) -> str:
    """One hash over the checkpoint's weight files (ties an ONNX graph to the weights it was exported from)."""
    files = sorted({f for pattern in WEIGHT_PATTERNS for f in checkpoint.glob(pattern)})
    if not files:
        raise ModelLoadError(f"no weights (model.safetensors) in {checkpoint}")
    return files_sha256(files)


def onnx_problem(checkpoint: Path, card: ModelCard, backend: str) -> str | None:
    """Why the card's ``backend`` graph cannot serve these weights, or None when it can."""
    export = card.onnx_export(backend)
    if export is None:
        return f"the card of {checkpoint} lists no {backend} graph"
    if not (checkpoint / export.file).is_file():
        return f"{checkpoint / export.file} is missing"
    if export.weights_sha256 != weights_sha256(checkpoint):
        return f"{checkpoint / export.file} was exported from other weights than {checkpoint}'s (stale)"
    return None


def export_command(checkpoint: Path, backend: str) -> str:
    return f"vqa export --checkpoint {checkpoint} --onnx" + (" --int8" if backend == "onnx-int8" else "")


def select_backend(
    choice: str, checkpoint: Path, card: ModelCard, device: str = "auto", num_threads: int | None = None
) -> ModelBackend:
    """The backend that serves ``checkpoint`` for ``choice`` (``VQA_BACKEND``).

    ``auto``: torch on a GPU; on a CPU the card's ``cpu_backend`` if its graph is there and fresh, else torch with a
    warning. ``torch``: always the Hugging Face weights. ``onnx``: the card's ONNX graph (its ``cpu_backend`` if that
    is one, else int8, else fp32). ``onnx-fp32`` / ``onnx-int8``: that graph. An ONNX choice that the checkpoint
    cannot serve raises :class:`ModelLoadError` naming the command that builds the graph.
    """
    if choice not in BACKEND_CHOICES:
        raise ModelLoadError(f"unknown backend {choice!r}: use one of {', '.join(BACKEND_CHOICES)}")
    torch_backend = TorchBackend(checkpoint, device=device, num_threads=num_threads)
    if choice == "torch":
        return torch_backend
    on_gpu = resolve_device(device).type == "cuda"
    if choice == "auto":
        if on_gpu or card.cpu_backend == "torch":
            return torch_backend
        problem = onnx_problem(checkpoint, card, card.cpu_backend)
        if problem is not None:
            log.warning(
                "the card asks for %s on the CPU but %s: serving torch fp32 (rebuild: %s)",
                card.cpu_backend,
                problem,
                export_command(checkpoint, card.cpu_backend),
            )
            return torch_backend
        return OnnxBackend(checkpoint, _export_of(card, card.cpu_backend), num_threads)
    if device != "auto" and on_gpu:
        raise ModelLoadError(f"the {choice} backend runs on the CPU, not {device}: set VQA_DEVICE=cpu or auto")
    if choice == "onnx":
        if card.cpu_backend != "torch":
            choice = card.cpu_backend
        else:
            choice = "onnx-int8" if card.onnx_export("onnx-int8") else "onnx-fp32"
    problem = onnx_problem(checkpoint, card, choice)
    if problem is not None:
        raise ModelLoadError(f"cannot serve {choice}: {problem}; build it with: {export_command(checkpoint, choice)}")
    return OnnxBackend(checkpoint, _export_of(card, choice), num_threads)


def _export_of(card: ModelCard, backend: str) -> OnnxExport:
    export = card.onnx_export(backend)
    if export is None:  # onnx_problem() said it is there
        raise ModelLoadError(f"the card lists no {backend} graph")
    return export
