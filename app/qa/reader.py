"""The extractive reader: a local HF checkpoint (encoder + span head) behind preprocess -> forward -> postprocess."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from app.qa.abstention import AbstentionReason
from app.qa.backends import EncodedBatch, ModelBackend, ModelLoadError, select_backend
from app.qa.card import EvalResult, ModelCard
from app.qa.spans import SpanDecoder
from app.qa.windows import TokenizerPerThread, Window, WindowConfig, encode_windows, plan_length_groups

__all__ = ["ModelLoadError", "Reader", "ReaderResult", "SpanAnswer", "WindowJob", "WindowPrediction"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WindowJob:
    """One window to run, with the decoding limits of the request it came from."""

    window: Window
    max_answer_len: int = 30
    top_k: int = 1


@dataclass(frozen=True, slots=True)
class WindowPrediction:
    """Decoded spans of one window: (log_prob, start token, end token) best first, and the null log-prob."""

    candidates: list[tuple[float, int, int]]
    null_log_prob: float


@dataclass(frozen=True, slots=True)
class SpanAnswer:
    """An answer span in character offsets of context ``context_index``: ``context[start:end] == text``."""

    text: str
    score: float
    start: int
    end: int
    context_index: int


@dataclass(frozen=True, slots=True)
class ReaderResult:
    answers: list[SpanAnswer]
    abstained: bool
    abstain_reason: AbstentionReason | None
    best_score: float
    null_score: float
    threshold: float = 0.0  # the abstention threshold that was applied
    abstain_detail: str = ""  # for people: what exactly was missing or too low


class Reader:
    """Loads a local question-answering checkpoint and answers questions over contexts.

    ``__init__`` is cheap; :meth:`load` reads the tokenizer, weights and card (never from a hub). The three steps
    are separate so that the service can run them in different places: :meth:`preprocess` (tokenising, CPU, in a
    worker thread), :meth:`forward` (one padded batch of windows from many requests, on the model's device, span
    decoding included) and :meth:`postprocess` (token spans -> character spans, merged across windows and contexts).
    :meth:`answer_batch` chains them for offline use (evaluation, benchmarks).

    The model itself runs in a backend (:mod:`app.qa.backends`): the Hugging Face weights in torch (bf16 on CUDA,
    fp32 on the CPU) or an ONNX graph of them in ONNX Runtime (fused fp32 or int8, CPU), picked by ``backend``
    (``VQA_BACKEND``) and the checkpoint card. Windows and span decoding are the same whichever runs.
    """

    def __init__(
        self,
        model_path: Path | str,
        device: str = "auto",
        num_threads: int | None = None,
        backend: str = "auto",
    ) -> None:
        self.model_path = Path(model_path)
        self.requested_device = device
        self.requested_backend = backend
        self.num_threads = num_threads
        self.card = ModelCard(name=self.model_path.name)
        # For questions asked without contexts (retrieved passages): the domain pack's fit, when it has one.
        self.question_only_threshold: float | None = None
        self.window_config = WindowConfig()
        self._backend: ModelBackend | None = None
        self._tokenizers: TokenizerPerThread | None = None
        self._decoder = SpanDecoder()
        self._uses_token_types = False
        self._pad_id = 0
        # One forward at a time: the model is shared and a second concurrent forward only fights for the same cores.
        self._forward_lock = threading.Lock()
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ loading
    @property
    def loaded(self) -> bool:
        return self._backend is not None

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The calling thread's own copy of the tokenizer (a shared one would race, see TokenizerPerThread)."""
        if self._tokenizers is None:
            raise RuntimeError("Reader.load() has not been called")
        return self._tokenizers.get()

    @property
    def backend(self) -> ModelBackend:
        """What runs the model: its ``name`` (torch, onnx-fp32, onnx-int8), ``precision`` and ``device``."""
        if self._backend is None:
            raise RuntimeError("Reader.load() has not been called")
        return self._backend

    @property
    def device(self) -> torch.device:
        return self._backend.device if self._backend is not None else torch.device("cpu")

    @property
    def precision(self) -> str:
        """float32, bfloat16 or int8."""
        return self._backend.precision if self._backend is not None else "float32"

    @property
    def served_eval(self) -> dict[str, EvalResult]:
        """Scores of what serves: an ONNX graph's own evaluations when it has any, else the card's (torch)."""
        if self._backend is not None and self._backend.name != "torch":
            export = self.card.onnx_export(self._backend.name)
            if export is not None and export.eval:
                return export.eval
        return self.card.eval

    def load(self) -> None:
        """Read tokenizer, card and weights (or ONNX graph) from ``model_path``; pick the backend and device."""
        started = time.perf_counter()
        path = self.model_path
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"no checkpoint at {path}: expected a Hugging Face save_pretrained directory with config.json "
                "(set VQA_MODEL_PATH to one, e.g. models/minilm-squad)"
            )
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            self.card = ModelCard.load(path)
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load checkpoint at {path}: {exc}") from exc
        if not tokenizer.is_fast:
            raise ModelLoadError(f"{path}: a fast tokenizer (tokenizer.json) is required for character offsets")
        backend = select_backend(
            self.requested_backend, path, self.card, device=self.requested_device, num_threads=self.num_threads
        )
        backend.load()
        self.window_config = WindowConfig(
            max_seq_len=min(self.card.max_seq_len, tokenizer.model_max_length or self.card.max_seq_len),
            stride=self.card.stride,
            max_question_tokens=self.card.max_question_tokens,
        )
        self._decoder = SpanDecoder(temperature=self.card.calibration.temperature)
        self._uses_token_types = "token_type_ids" in tokenizer.model_input_names
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._tokenizers = TokenizerPerThread(tokenizer)
        self._backend = backend
        self.load_seconds = time.perf_counter() - started
        log.info(
            "loaded %s v%s from %s: %s on %s (%s) in %.2fs",
            self.card.name,
            self.card.version,
            path,
            backend.name,
            backend.device,
            backend.precision,
            self.load_seconds,
        )

    def use_calibration(
        self,
        temperature: float,
        no_answer_threshold: float,
        source: str,
        question_only_threshold: float | None = None,
    ) -> None:
        """Score with a calibration fitted for this model elsewhere (a domain pack's dev split) instead of the card's.

        The card keeps naming the checkpoint; its temperature and threshold are replaced for this process only.
        ``question_only_threshold`` (None: the same threshold) applies to answers read from retrieved passages.
        """
        self.question_only_threshold = question_only_threshold
        calibration = self.card.calibration.model_copy(update={"temperature": temperature, "fitted_on": source})
        self.card = self.card.model_copy(
            update={"calibration": calibration, "no_answer_threshold": no_answer_threshold}
        )
        self._decoder = SpanDecoder(temperature=temperature)

    def warm_up(self) -> None:
        """One forward of each shape class so the first real request does not pay for lazy initialisation."""
        windows = self.preprocess("What is warm-up?", ["Warm-up runs the model once before traffic arrives."])
        self.forward([WindowJob(w) for w in windows])

    # ------------------------------------------------------------------ steps
    def preprocess(self, question: str, contexts: Sequence[str]) -> list[Window]:
        """Tokenize the question against every context into overlapping windows (CPU; call off the event loop).

        Safe to call from several threads at once. Raises :class:`~app.qa.windows.WindowOverflowError` if a window
        would not fit the model, which fails only this request.
        """
        return encode_windows(self.tokenizer, question, contexts, self.window_config)

    def logits(self, jobs: Sequence[WindowJob]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw start/end logits ``[windows, width]`` and the context mask of one padded batch, on the model's device.

        Calibration fits its temperature on these; :meth:`forward` decodes them.
        """
        width = max(len(j.window) for j in jobs)
        width = -(-width // 8) * 8  # multiples of 8 suit the matmul kernels; padding is masked anyway
        n = len(jobs)
        ids = np.full((n, width), self._pad_id, dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64) if self._uses_token_types else None
        context_mask = np.zeros((n, width), dtype=np.bool_)
        for row, job in enumerate(jobs):
            w = job.window
            length = len(w.input_ids)
            ids[row, :length] = w.input_ids
            attention[row, :length] = 1
            if types is not None and w.token_type_ids is not None:
                types[row, :length] = w.token_type_ids
            context_mask[row, w.context_start : w.context_end] = True
        with self._forward_lock:
            start_logits, end_logits = self.backend.run(EncodedBatch(ids, attention, types))
        return start_logits, end_logits, torch.from_numpy(context_mask).to(start_logits.device)

    def forward(self, jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        """Run one padded batch of windows and decode their spans on the model's device; outputs match ``jobs``."""
        if not jobs:
            return []
        start_logits, end_logits, context_mask = self.logits(jobs)
        max_len = torch.tensor([j.max_answer_len for j in jobs])
        with torch.inference_mode():
            candidates = self._decoder.decode(
                start_logits, end_logits, context_mask, max_len, max(j.top_k for j in jobs)
            )
            per_window = candidates.to_lists()
            nulls = candidates.null_log_probs.float().cpu().tolist()
        return [WindowPrediction(c, nl) for c, nl in zip(per_window, nulls, strict=True)]

    def postprocess(
        self,
        contexts: Sequence[str],
        windows: Sequence[Window],
        predictions: Sequence[WindowPrediction],
        top_k: int = 1,
        min_score: float | None = None,
    ) -> ReaderResult:
        """Token spans -> character spans; the same span seen in overlapping windows is kept once at its best score.

        Abstains (empty ``answers``) when the best span scores below ``min_score`` (default: the card's threshold).
        """
        threshold = self.card.no_answer_threshold if min_score is None else min_score
        best: dict[tuple[int, int, int], float] = {}
        null_lp = float("-inf")
        for window, prediction in zip(windows, predictions, strict=True):
            null_lp = max(null_lp, prediction.null_log_prob)
            for log_prob, start, end in prediction.candidates:
                key = (window.context_index, window.offsets[start][0], window.offsets[end][1])
                if log_prob > best.get(key, float("-inf")):
                    best[key] = log_prob
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)
        answers = [
            SpanAnswer(
                text=contexts[ci][cs:ce],
                score=math.exp(lp),
                start=cs,
                end=ce,
                context_index=ci,
            )
            for (ci, cs, ce), lp in ranked[:top_k]
        ]
        null_score = math.exp(null_lp) if null_lp > float("-inf") else 0.0
        if not windows:
            return ReaderResult(
                [],
                True,
                AbstentionReason.NO_CONTEXT_TEXT,
                0.0,
                null_score,
                threshold,
                "every context is empty or whitespace",
            )
        if not answers:
            return ReaderResult(
                [],
                True,
                AbstentionReason.NO_SPAN,
                0.0,
                null_score,
                threshold,
                "no span fits max_answer_len in the contexts",
            )
        return self.apply_threshold(answers, null_score, threshold)

    @staticmethod
    def apply_threshold(answers: list[SpanAnswer], null_score: float, threshold: float) -> ReaderResult:
        """Abstain when the first (chosen) answer scores below ``threshold``; else answer with ``answers``."""
        best_score = answers[0].score
        if best_score < threshold:
            return ReaderResult(
                [],
                True,
                AbstentionReason.LOW_CONFIDENCE,
                best_score,
                null_score,
                threshold,
                f"best score {best_score:.3f} < threshold {threshold:.3f}",
            )
        return ReaderResult(answers, False, None, best_score, null_score, threshold)

    # ------------------------------------------------------------------ offline convenience
    def answer_batch(
        self,
        items: Sequence[tuple[str, Sequence[str]]],
        top_k: int = 1,
        max_answer_len: int = 30,
        min_score: float | None = None,
        batch_windows: int = 64,
    ) -> list[ReaderResult]:
        """Answer many (question, contexts) pairs with length-grouped batches; for evaluation and benchmarks."""
        all_windows = [self.preprocess(q, ctxs) for q, ctxs in items]
        flat = [(i, w) for i, windows in enumerate(all_windows) for w in windows]
        order = sorted(range(len(flat)), key=lambda k: len(flat[k][1]))
        predictions: dict[int, WindowPrediction] = {}
        for start in range(0, len(order), batch_windows):
            chunk = order[start : start + batch_windows]
            for group in plan_length_groups([len(flat[k][1]) for k in chunk]):
                picked = [chunk[g] for g in group]
                outs = self.forward([WindowJob(flat[k][1], max_answer_len, top_k) for k in picked])
                predictions.update(zip(picked, outs, strict=True))
        results: list[ReaderResult] = []
        cursor = 0
        for (_, contexts), windows in zip(items, all_windows, strict=True):
            preds = [predictions[cursor + j] for j in range(len(windows))]
            cursor += len(windows)
            results.append(self.postprocess(contexts, windows, preds, top_k=top_k, min_score=min_score))
        return results
