"""Fine-tune an encoder with a span head on SQuAD-format data; runs alone or under ``torchrun`` (DDP) unchanged."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, PreTrainedModel, get_linear_schedule_with_warmup

from app.qa.card import DataSource, EvalResult, ModelCard
from app.qa.reader import Reader
from app.qa.windows import WindowConfig
from training.augment import augment_examples
from training.evaluate import evaluate_examples
from training.features import build_features, collate, iter_shard, length_grouped_batches
from training.squad import QAExample, dataset_name, file_sha256, load_examples

log = logging.getLogger(__name__)
STATE_FILE = "trainer_state.pt"


@dataclass(slots=True)
class TrainSource:
    path: Path
    weight: float = 1.0
    augment: int = 0  # customer-style rewrites added per question (training/augment.py)

    @classmethod
    def parse(cls, spec: str) -> TrainSource:
        """``PATH[:WEIGHT][:augN]``: weight 2 = every question twice per epoch, 0.5 = a random half; ``aug3`` adds
        three customer-style rewrites of every question (before weighting)."""
        path, weight, augment = spec, 1.0, 0
        for _ in range(2):
            head, sep, tail = path.rpartition(":")
            if not (sep and head):
                break
            if re.fullmatch(r"aug\d+", tail):
                path, augment = head, int(tail[3:])
            elif re.fullmatch(r"\d+(\.\d+)?", tail):
                path, weight = head, float(tail)
            else:
                break
        return cls(Path(path), weight, augment)


@dataclass(frozen=True, slots=True)
class SeenExamples:
    """The questions an earlier run trained on: the first ``count`` of ``path`` shuffled with ``seed``.

    That is what ``--max-train-examples COUNT --seed SEED`` picked from a single source, so a continued run can
    train on the rest only.
    """

    path: Path
    count: int
    seed: int

    @classmethod
    def parse(cls, spec: str) -> SeenExamples:
        """``PATH:COUNT:SEED``."""
        path, count, seed = spec.rsplit(":", 2)
        return cls(Path(path), int(count), int(seed))

    def ids(self) -> set[str]:
        examples = load_examples(self.path)
        random.Random(self.seed).shuffle(examples)
        return {e.id for e in examples[: self.count]}


@dataclass(slots=True)
class TrainConfig:
    base_model: Path
    output_dir: Path
    train: list[TrainSource]
    init_from: Path | None = None  # a trained QA checkpoint to continue from (its span head included)
    exclude_seen: SeenExamples | None = None
    dev: Path | None = None
    epochs: float = 2.0
    learning_rate: float = 1e-4
    batch_size: int = 32
    grad_accum: int = 1
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_seq_len: int = 384
    stride: int = 128
    max_question_tokens: int = 64
    max_train_examples: int | None = None
    max_steps: int | None = None
    time_budget_minutes: float | None = None
    eval_limit: int | None = 1000
    seed: int = 13
    name: str = "minilm-squad"
    version: str = "0.1.0"
    save_every_steps: int = 500
    resume: bool = False
    num_threads: int | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _setup_distributed() -> tuple[int, int, torch.device]:
    """Rank, world size and device; torchrun sets WORLD_SIZE/RANK/LOCAL_RANK, a plain run has none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return dist.get_rank(), world, device


def _weighted_examples(config: TrainConfig, rng: random.Random) -> tuple[list[QAExample], list[DataSource]]:
    examples: list[QAExample] = []
    sources: list[DataSource] = []
    excluded = config.exclude_seen.ids() if config.exclude_seen is not None else set()
    for source in config.train:
        loaded = load_examples(source.path)
        total = len(loaded)
        loaded = [e for e in loaded if e.id not in excluded]
        original = len(loaded)
        if source.augment:
            loaded += augment_examples(loaded, source.augment, config.seed)
        sources.append(
            DataSource(
                path=str(source.path),
                sha256=file_sha256(source.path),
                questions=total,
                weight=source.weight,
                excluded_seen=total - original,
                augment_variants=source.augment,
                examples_used=len(loaded),
            )
        )
        whole, fraction = divmod(source.weight, 1.0)
        picked = loaded * int(whole) + rng.sample(loaded, round(fraction * len(loaded)))
        examples.extend(picked)
    rng.shuffle(examples)
    if config.max_train_examples is not None:
        examples = examples[: config.max_train_examples]
    return examples, sources


def train(config: TrainConfig) -> Path:
    """Train, evaluate each epoch on ``config.dev``, save the checkpoint and card; returns the checkpoint path."""
    rank, world, device = _setup_distributed()
    main_process = rank == 0
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(str(config.base_model), local_files_only=True)
    window_config = WindowConfig(config.max_seq_len, config.stride, config.max_question_tokens)
    examples, sources = _weighted_examples(config, rng)
    features, report = build_features(tokenizer, examples, window_config, progress=config.progress and main_process)
    if main_process:
        log.info("alignment: %s", json.dumps(report.as_dict()))
        tqdm.write(f"alignment report: {json.dumps(report.as_dict())}")

    # fp32 master weights whatever the stored dtype (served checkpoints are fp16); bf16 comes from autocast on CUDA.
    model = AutoModelForQuestionAnswering.from_pretrained(
        str(config.init_from or config.base_model), local_files_only=True, dtype=torch.float32
    )
    model.to(device)
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    grouped = [
        {
            "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
            "weight_decay": config.weight_decay,
        },
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(grouped, lr=config.learning_rate)
    lengths = [len(f.input_ids) for f in features]
    steps_per_epoch = max(1, len(features) // (config.batch_size * world * config.grad_accum))
    total_steps = config.max_steps or max(1, math.ceil(steps_per_epoch * config.epochs))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)

    step, epoch = 0, 0
    history: list[dict[str, float]] = []
    wall_before = 0.0  # seconds spent by earlier sessions of a resumed run
    state_path = out / STATE_FILE
    if config.resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, epoch = state["step"], state["epoch"]
        rng.setstate(state["rng"])
        if "torch_rng" in state:  # dropout masks continue as if the run had never stopped
            torch.set_rng_state(state["torch_rng"])
        history = state.get("history", [])
        wall_before = float(state.get("wall_seconds", 0.0))
        if main_process:
            tqdm.write(f"resumed from {state_path} at step {step}, epoch {epoch}")

    net: torch.nn.Module = DistributedDataParallel(model) if world > 1 else model
    pad_id = tokenizer.pad_token_id or 0
    use_bf16 = device.type == "cuda"
    started = time.perf_counter()
    started -= wall_before
    deadline = time.perf_counter() + config.time_budget_minutes * 60 if config.time_budget_minutes else None
    bar = tqdm(
        total=total_steps, initial=step, desc="train", unit="step", disable=not (config.progress and main_process)
    )
    windows_seen = 0
    stop = False
    while step < total_steps and not stop:
        batches = length_grouped_batches(lengths, config.batch_size, random.Random(config.seed + epoch))
        micro = list(iter_shard(batches, rank, world))
        skip = (step * config.grad_accum) % max(1, len(micro)) if config.resume else 0
        net.train()
        for i, batch_ids in enumerate(micro[skip:], start=skip):
            batch = collate([features[j] for j in batch_ids], pad_id, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = net(**batch).loss / config.grad_accum
            loss.backward()
            windows_seen += len(batch_ids)
            if (i + 1) % config.grad_accum:
                continue
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - started
            loss_value = loss.item() * config.grad_accum
            history.append({"step": step, "loss": loss_value})
            session_s = max(elapsed - wall_before, 1e-6)
            bar.set_postfix(loss=f"{loss_value:.3f}", win_s=f"{windows_seen * world / session_s:.1f}", epoch=epoch)
            bar.update(1)
            if main_process and step % config.save_every_steps == 0:
                _save_state(state_path, model, optimizer, scheduler, step, epoch, rng, history, elapsed)
            if step >= total_steps or (deadline is not None and time.perf_counter() > deadline):
                stop = True
                break
        else:
            epoch += 1
            if main_process and config.dev is not None and step < total_steps:
                _save_checkpoint(model, tokenizer, out, config, sources, report.as_dict(), history, started, epoch)
                dev = _evaluate(out, config)
                tqdm.write(f"epoch {epoch}: dev EM {dev.exact_match:.2f} F1 {dev.f1:.2f} ({dev.questions} q)")
    bar.close()
    if main_process:
        _save_checkpoint(model, tokenizer, out, config, sources, report.as_dict(), history, started, epoch)
        _save_state(
            state_path, model, optimizer, scheduler, step, epoch, rng, history, time.perf_counter() - started
        )
        if config.dev is not None:
            dev = _evaluate(out, config)
            card = ModelCard.load(out)
            card.eval[f"{dataset_name(config.dev)}[:{dev.questions}]"] = dev
            card.save(out)
            tqdm.write(f"final: dev EM {dev.exact_match:.2f} F1 {dev.f1:.2f} ({dev.questions} q)")
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return out


def _save_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    epoch: int,
    rng: random.Random,
    history: list[dict[str, float]],
    wall_seconds: float,
) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
            "epoch": epoch,
            "rng": rng.getstate(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "wall_seconds": wall_seconds,
        },
        tmp,
    )
    tmp.replace(path)  # atomic: a crash mid-save never leaves a truncated state behind


def _save_checkpoint(
    model: PreTrainedModel,
    tokenizer: Any,
    out: Path,
    config: TrainConfig,
    sources: list[DataSource],
    alignment: dict[str, object],
    history: list[dict[str, float]],
    started: float,
    epoch: int,
) -> None:
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    hyper = {
        k: (str(v) if isinstance(v, Path) else v)
        for k, v in asdict(config).items()
        if k not in {"train", "extra", "base_model", "init_from", "exclude_seen"}
    }
    if config.init_from is not None:
        parent = ModelCard.load(config.init_from)
        hyper["continued_from"] = f"{parent.name} {parent.version}"
    if config.exclude_seen is not None:
        seen = config.exclude_seen
        hyper["excluded_seen"] = f"first {seen.count} questions of {seen.path.name} shuffled with seed {seen.seed}"
    card = ModelCard.load(out) if (out / "qa_model.json").exists() else ModelCard()
    card.name, card.version = config.name, config.version
    card.base_model = portable_model_name(config.base_model)
    card.max_seq_len, card.stride, card.max_question_tokens = (
        config.max_seq_len,
        config.stride,
        config.max_question_tokens,
    )
    card.data = sources
    card.hyperparameters = {
        **hyper,
        "epochs_completed": epoch,
        "steps": history[-1]["step"] if history else 0,
        # means over the first and last few steps: single-step losses are too noisy to compare
        "loss_start": round(sum(h["loss"] for h in history[:5]) / len(history[:5]), 4) if history else None,
        "loss_end": round(sum(h["loss"] for h in history[-5:]) / len(history[-5:]), 4) if history else None,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "alignment": alignment,
        **config.extra,
    }
    card.save(out)


def _evaluate(checkpoint: Path, config: TrainConfig) -> EvalResult:
    assert config.dev is not None
    reader = Reader(checkpoint, backend="torch")
    reader.load()
    outcome = evaluate_examples(reader, load_examples(config.dev, limit=config.eval_limit), progress=config.progress)
    return EvalResult(exact_match=round(outcome.exact_match, 2), f1=round(outcome.f1, 2), questions=outcome.questions)


def portable_model_name(path: Path) -> str:
    """A name for a base model that says what it is, not where this machine keeps it (cards travel)."""
    if path.name == "model" and path.parent.name:  # a model shipped inside a wheel: <package>/model
        return path.parent.name
    card_file = path / "qa_model.json"
    if card_file.is_file():
        declared = ModelCard.load(path).base_model
        if declared and Path(declared).is_absolute():
            return portable_model_name(Path(declared))
        return declared or path.name
    return path.name
