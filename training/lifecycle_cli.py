"""``vqa feedback export``, ``vqa promote``, ``vqa rollback``, ``vqa models``: argument parsing and printing only."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config import Settings

# Relative to the working directory, like every path of the project (run from the repository root).
DEFAULT_SQUAD_DEV = Path("../shared/data/squad-v1.1-dev.json.gz")
DEFAULT_EXPORT_DIR = Path("var/feedback-export")


def _settings() -> Settings:
    from pydantic import ValidationError

    from app.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        print(f"vqa: bad settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _feedback_export(args: argparse.Namespace) -> int:
    from app.feedback import settings_store_url
    from app.store.feedback_store import FeedbackStore
    from training.feedback_export import export

    if not 0.0 <= args.holdout < 1.0:
        print("vqa feedback export: --holdout is a share in [0, 1)", file=sys.stderr)
        return 2
    settings = _settings()
    store = FeedbackStore.open(settings_store_url(settings))
    try:
        since = datetime.now(UTC) - timedelta(days=args.since_days) if args.since_days else None
        report = export(store.iter_feedback(since), Path(args.out), args.holdout, args.seed)
    finally:
        store.close()
    out = Path(args.out)
    print(json.dumps(report.as_dict(), indent=2))
    print(f"wrote {out / 'train.json'} ({report.train} examples) and {out / 'holdout.json'} ({report.holdout})")
    if report.train:
        print(f"train on it: vqa train --train {out / 'train.json'}:2 --train <your usual data> ...")
    return 0


def _admin_reload(url: str) -> int:
    """POST URL/admin/reload with the first of VQA_ADMIN_KEYS; prints the service's answer."""
    settings = _settings()
    if not settings.admin_key_list:
        print("vqa: --reload needs VQA_ADMIN_KEYS (the service's admin key) in the environment", file=sys.stderr)
        return 2
    request = urllib.request.Request(
        url.rstrip("/") + "/admin/reload",
        method="POST",
        headers={"Authorization": f"Bearer {settings.admin_key_list[0]}", "Content-Type": "application/json"},
        data=b"{}",
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.reload_drain_timeout_s + 120) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"vqa: reload failed: HTTP {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"vqa: reload failed: {exc.reason}", file=sys.stderr)
        return 1
    print(f"service at {url} now serves {body['model']['name']} {body['model']['version']} (was "
          f"{(body.get('previous') or {}).get('version')}; drained: {body['drained']})")  # fmt: skip
    return 0


def _pack_test_set() -> Path:
    """The ``test`` QA set of the pack (VQA_PACK, default packs/fintech)."""
    from domain.pack import DomainPack

    return DomainPack.load(_settings().pack).qa_path("test")


def _registry_path(args: argparse.Namespace) -> Path:
    if args.registry:
        return Path(args.registry)
    path = _settings().model_registry
    if path is None:
        print("vqa: no registry: set VQA_MODEL_REGISTRY or pass --registry", file=sys.stderr)
        raise SystemExit(2)
    return Path(path)


def _promote(args: argparse.Namespace) -> int:
    from app.qa.card import ModelCard
    from app.qa.registry import ModelRegistry, RegistryError, serving_checkpoint
    from training.promote import GateSet, compare

    candidate = Path(args.candidate)
    if not (candidate / "config.json").is_file():
        print(f"vqa promote: {candidate} is not a checkpoint (config.json missing)", file=sys.stderr)
        return 2
    registry_path = _registry_path(args)
    registry = ModelRegistry.load(registry_path)
    baseline, baseline_id = (Path(args.baseline), None) if args.baseline else serving_checkpoint(
        _settings().model_path, registry_path
    )
    gates: list[GateSet] = []
    skipped: dict[str, str] = {}
    for name, path, limit, default in (
        ("squad-dev", args.squad_dev, args.squad_limit, lambda: DEFAULT_SQUAD_DEV),
        ("domain-test", args.domain_test, args.domain_limit, _pack_test_set),
    ):
        if path == "skip":
            skipped[name] = "skipped on the command line"
            continue
        file = Path(path) if path else default()
        if not file.is_file():
            print(f"vqa promote: gate set {name}: {file} not found (give its path, or 'skip')", file=sys.stderr)
            return 2
        gates.append(GateSet(name, file, limit or None))
    holdout = Path(args.feedback_holdout) if args.feedback_holdout else DEFAULT_EXPORT_DIR / "holdout.json"
    if args.feedback_holdout == "skip":
        skipped["feedback-holdout"] = "skipped on the command line"
    elif holdout.is_file() and json.loads(holdout.read_text(encoding="utf-8")).get("data"):
        gates.append(GateSet("feedback-holdout", holdout, args.feedback_limit or None))
    else:
        skipped["feedback-holdout"] = f"no feedback hold-out at {holdout} (vqa feedback export writes one)"
    card = ModelCard.load(candidate)
    if card.calibration.temperature == 1.0 and card.no_answer_threshold == 0.0:
        print(f"note: {candidate} is not calibrated (temperature 1, threshold 0): it never abstains; run "
              "vqa calibrate on it first for a fair served-F1 comparison")  # fmt: skip
    report = compare(
        baseline, candidate, gates, args.tolerance, skipped, args.device, args.threads, not args.no_progress
    )
    print(report.table())
    if not report.passed and not args.force:
        worst = min(report.gates, key=lambda g: g.worst_delta)
        print(
            f"\nREFUSED: on {worst.gate} the candidate falls {-worst.worst_delta:.2f} F1 points (tolerance "
            f"{args.tolerance:g}); {baseline} keeps serving",
            file=sys.stderr,
        )
        return 1
    if args.dry_run:
        print("\npassed (dry run: the registry is unchanged)")
        return 0
    try:
        with ModelRegistry.edit(registry_path) as registry:
            if registry.serving != (baseline_id or registry.serving):
                print(f"vqa promote: the registry now serves {registry.serving}, not the {baseline_id} this was "
                      "compared with; run it again", file=sys.stderr)  # fmt: skip
                return 1
            if registry.serving is None:
                first = registry.register(baseline)
                registry.set_serving(first.id, "register", {"note": "serving before the first promotion"})
            entry = registry.register(candidate)
            if entry.id == registry.serving:
                print(f"\n{entry.id} is already serving; nothing changed")
                return 0
            details = {"gates": report.as_dict()["gates"], "tolerance": args.tolerance, "forced": not report.passed}
            registry.set_serving(entry.id, "promote", details)
    except RegistryError as exc:
        print(f"vqa promote: {exc}", file=sys.stderr)
        return 2
    print(f"\nPROMOTED: {entry.id} now serves per {registry_path}")
    if args.reload:
        return _admin_reload(args.reload)
    print("running services pick it up on POST /admin/reload or SIGHUP (or vqa promote --reload URL)")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from app.qa.registry import ModelRegistry, RegistryError

    registry_path = _registry_path(args)
    try:
        with ModelRegistry.edit(registry_path) as registry:
            event = registry.rollback(args.to)
    except RegistryError as exc:
        print(f"vqa rollback: {exc}", file=sys.stderr)
        return 1
    print(f"ROLLED BACK: {event.serving} serves again (was {event.previous})")
    if args.reload:
        return _admin_reload(args.reload)
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from app.qa.registry import ModelRegistry

    registry = ModelRegistry.load(_registry_path(args))
    if not registry.versions:
        print(f"no registry at {registry.path}: the service serves VQA_MODEL_PATH ({_settings().model_path})")
        return 0
    rows: list[dict[str, Any]] = [
        {"serving": "*" if v.id == registry.serving else "", "id": v.id, "registered_at": v.registered_at,
         "sha256": v.sha256[:12], "source": v.source}
        for v in registry.versions.values()
    ]  # fmt: skip
    for row in rows:
        print(f"{row['serving']:1} {row['id']:40} {row['registered_at']:26} {row['sha256']}  {row['source']}")
    print("\nhistory:")
    for event in registry.history:
        print(f"  {event.at} {event.action:9} {event.serving} (before: {event.previous})")
    return 0


def add_lifecycle_commands(sub: Any) -> None:
    feedback = sub.add_parser("feedback", help="turn feedback on live answers into training data")
    feedback_sub = feedback.add_subparsers(dest="feedback_command", required=True)
    exp = feedback_sub.add_parser(
        "export",
        help="write SQuAD v2 train/hold-out files from the feedback store (VQA_STORE_URL or VQA_STORE_PATH)",
        description="Corrected answers located in the stored passage become answerable examples, answers marked "
        "incorrect without a correction become unanswerable for their passage, confirmed answers are kept; "
        "deduplicated (newest verdict wins) and split by document. Writes train.json, holdout.json, report.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    exp.add_argument("--out", default=str(DEFAULT_EXPORT_DIR), help="output folder")
    exp.add_argument("--holdout", type=float, default=0.2, help="share of documents held out for vqa promote")
    exp.add_argument("--seed", type=int, default=0, help="seed of the document split")
    exp.add_argument("--since-days", type=float, help="only verdicts from the last N days")
    exp.set_defaults(handler=_feedback_export)

    promote = sub.add_parser(
        "promote",
        help="gate a candidate checkpoint against the serving one; register and serve it if it does not regress",
        description="Evaluates the serving checkpoint (the registry's, else VQA_MODEL_PATH) and CANDIDATE on a "
        "SQuAD dev slice, the domain test split and the feedback hold-out, prints the comparison, and refuses "
        "(exit 1) when the candidate's served F1 falls more than --tolerance points on any set. On success the "
        "candidate is copied into the registry (models/versions/<name>-<version>) and named the serving version.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    promote.add_argument("candidate", help="checkpoint directory to promote")
    promote.add_argument("--tolerance", type=float, default=1.0, help="largest allowed served-F1 drop, in points")
    promote.add_argument("--squad-dev", help=f"SQuAD dev file, or 'skip' (default {DEFAULT_SQUAD_DEV})")
    promote.add_argument("--squad-limit", type=int, default=500, help="first N SQuAD dev questions (0: all)")
    promote.add_argument("--domain-test", help="domain test split, or 'skip' (default: the pack's test QA set)")
    promote.add_argument("--domain-limit", type=int, default=0, help="first N domain questions (0: all)")
    promote.add_argument(
        "--feedback-holdout", help=f"feedback hold-out, or 'skip' (default {DEFAULT_EXPORT_DIR / 'holdout.json'})"
    )
    promote.add_argument("--feedback-limit", type=int, default=0, help="first N hold-out questions (0: all)")
    promote.add_argument("--baseline", help="compare with this checkpoint instead of the serving one")
    promote.add_argument("--registry", help="registry file (default VQA_MODEL_REGISTRY, models/registry.json)")
    promote.add_argument("--dry-run", action="store_true", help="compare only; leave the registry unchanged")
    promote.add_argument("--force", action="store_true", help="promote even on a regression (recorded as forced)")
    promote.add_argument("--reload", metavar="URL", help="then POST URL/admin/reload (key from VQA_ADMIN_KEYS)")
    promote.add_argument("--device", default="auto", help="auto | cpu | cuda")
    promote.add_argument("--threads", type=int, help="torch CPU threads")
    promote.add_argument("--no-progress", action="store_true", help="no progress bars")
    promote.set_defaults(handler=_promote)

    rollback = sub.add_parser(
        "rollback",
        help="serve the version that served before the current one (or --to VERSION)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    rollback.add_argument("--to", help="a registered version id (see vqa models list)")
    rollback.add_argument("--registry", help="registry file (default VQA_MODEL_REGISTRY, models/registry.json)")
    rollback.add_argument("--reload", metavar="URL", help="then POST URL/admin/reload (key from VQA_ADMIN_KEYS)")
    rollback.set_defaults(handler=_rollback)

    models = sub.add_parser("models", help="the model registry")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="registered versions, the serving one (*) and the history")
    listing.add_argument("--registry", help="registry file (default VQA_MODEL_REGISTRY, models/registry.json)")
    listing.set_defaults(handler=_models_list)



