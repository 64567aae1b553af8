"""``vqa pack check | build-qa | load | lint``: one command group for a domain pack (default: ``VQA_PACK``).

Exit codes: 0 fine, 1 lint findings (or the graph refused the load), 2 a broken pack (``file:line: field: reason``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kg.pack import PackError

if TYPE_CHECKING:
    from domain.pack import DomainPack

DefaultPack = Callable[[], Path]


def _load(args: argparse.Namespace, command: str) -> DomainPack | None:
    from domain.pack import DomainPack

    path = Path(args.pack) if args.pack else args.default_pack()
    try:
        return DomainPack.load(path)
    except PackError as exc:
        print(f"vqa pack {command}: {exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    pack = _load(args, "check")
    if pack is None:
        return 2
    print(
        f"pack {pack.name} v{pack.version}: {len(pack.documents)} documents, {len(pack.graph.entities)} entities, "
        f"{len(pack.graph.relations)} relations, {len(pack.rules.rules) if pack.rules else 0} rules, "
        f"{len(pack.calibration.fits)} calibration fits, {len(pack.linking_examples)} linking examples"
    )
    try:
        counts = pack.check_qa()
    except PackError as exc:
        print(f"vqa pack check: {exc}", file=sys.stderr)
        return 2
    for name, c in counts.items():
        print(
            f"qa {name}: {c['documents']} documents, {c['answerable']} answerable, {c['unanswerable']} unanswerable"
            " - every span slices its context, contexts are the current documents"
        )
    print("every QA set's documents come from its splits; built sets share no document")
    if args.recall:
        from training.domain_qa import retrieval_recall

        print(json.dumps(retrieval_recall(pack, "dev", args.k), indent=2))
    return 0


def _build_qa(args: argparse.Namespace) -> int:
    from training.domain_qa import build, write

    pack = _load(args, "build-qa")
    if pack is None:
        return 2
    try:
        counts = write(pack, build(pack))
    except PackError as exc:
        print(f"vqa pack build-qa: {exc}", file=sys.stderr)
        return 2
    for name, c in counts.items():
        print(f"{name}: {c['documents']} documents, {c['answerable']} answerable, {c['unanswerable']} unanswerable")
    return 0


def _lint(args: argparse.Namespace) -> int:
    from domain.lint import lint_pack

    pack = _load(args, "lint")
    if pack is None:
        return 2
    today = date.fromisoformat(args.today) if args.today else pack.today()
    report = lint_pack(pack, today)
    if args.json:
        print(json.dumps({"today": today.isoformat(), "findings": [f.as_json() for f in report.findings]}, indent=2))
    else:
        for finding in report.findings:
            print(finding)
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(report.by_kind().items())) or "none"
        print(
            f"pack {pack.name} v{pack.version} on {today}: {len(report.findings)} finding"
            f"{'' if len(report.findings) == 1 else 's'} ({kinds}); "
            f"{report.checked} statements compared with the graph, {report.examples} worked examples recomputed",
            file=sys.stderr,
        )
    return 1 if report.findings else 0


def _graph_load(args: argparse.Namespace) -> int:
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable

    from kg.loader import load_pack

    pack = _load(args, "load")
    if pack is None:
        return 2
    uri = args.uri or os.environ.get("VQA_KG_URI")
    if not uri:
        print("vqa pack load: give --uri (or VQA_KG_URI); `vqa kg serve` loads the embedded graph", file=sys.stderr)
        return 2
    password = os.environ.get(args.password_env, "")
    try:
        with GraphDatabase.driver(uri, auth=(args.user, password)) as driver:
            counts = load_pack(driver, pack.graph, args.database)
    except AuthError as exc:
        print(f"vqa pack load: authentication failed for {args.user}@{uri}: {exc.message}", file=sys.stderr)
        return 1
    except (ServiceUnavailable, Neo4jError) as exc:
        print(f"vqa pack load: graph error at {uri}: {exc}", file=sys.stderr)
        return 1
    print(f"pack {pack.name} v{pack.version}: {counts}")
    return 0


def add_pack_commands(sub: Any, default_pack: DefaultPack) -> None:
    group = sub.add_parser(
        "pack",
        help="domain pack: check, build the QA set, load the graph, lint the corpus against the graph",
        description="Every command reads the whole pack through one loader and stops on a broken part with "
        "file:line: field: reason (exit 2). PACK defaults to VQA_PACK (packs/fintech).",
    )
    commands = group.add_subparsers(dest="pack_command", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kwargs
        )
        parser.add_argument("pack", nargs="?", help="pack folder (default: VQA_PACK)")
        parser.set_defaults(handler=handler, default_pack=default_pack)
        return parser

    check = command(
        "check",
        _check,
        help="validate every part: manifest, corpus, graph, rules, calibration, every QA span and split",
    )
    check.add_argument("--recall", action="store_true", help="also measure retrieval recall@k on the dev split")
    check.add_argument("-k", type=int, default=5, help="passages retrieved for --recall")
    command(
        "build-qa",
        _build_qa,
        help="rebuild the built QA sets (train/dev/test) from the fact catalogue and the corpus",
    )
    lint = command(
        "lint",
        _lint,
        help="compare every number the corpus states about an entity with the graph (exit 1 on findings)",
        description="Reports file:line, the stated and the graph's values and the entity for: graph-mismatch, "
        "undated-change, duplicate-disagreement, worked-example.",
    )
    lint.add_argument("--today", help="the date statements without one must hold from (default: today, pack tz)")
    lint.add_argument("--json", action="store_true", help="findings as JSON on stdout")
    load = command(
        "load",
        _graph_load,
        help="load the pack's graph into a Bolt graph (Neo4j 5 / ArcadeDB): idempotent, all or nothing",
        description="Validate the whole pack first (a bad row stops with file:line: field: reason before anything "
        "is written), then MERGE entities and relations in one transaction. Running it twice changes nothing.",
    )
    load.add_argument("--uri", help="bolt:// or neo4j:// URI (default VQA_KG_URI)")
    load.add_argument("--user", default=os.environ.get("VQA_KG_USER", "neo4j"), help="user (VQA_KG_USER)")
    load.add_argument("--password-env", default="VQA_KG_PASSWORD", help="environment variable holding the password")
    load.add_argument("--database", default=os.environ.get("VQA_KG_DATABASE", "neo4j"), help="database name")
