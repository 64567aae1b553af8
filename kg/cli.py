"""``vqa kg serve`` (the embedded graph on its own) and ``vqa kg load`` (a pack into any Bolt graph)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, Neo4jError, ServiceUnavailable


def _serve(args: argparse.Namespace) -> int:
    from app.config import Settings
    from kg.embedded import EmbeddedGraph, EmbeddedGraphError, stored_password
    from kg.loader import graph_counts, load_pack
    from kg.pack import GraphPack, PackError

    settings = Settings()
    root = Path(args.data_dir or settings.kg_data_dir).resolve()
    graph = EmbeddedGraph(root=root, password=stored_password(root), bolt_port=args.port or 0)
    try:
        graph.start()
    except EmbeddedGraphError as exc:
        print(f"vqa kg serve: {exc}", file=sys.stderr)
        return 1
    try:
        pack_dir = Path(args.pack) if args.pack else settings.kg_pack
        with GraphDatabase.driver(graph.uri, auth=("root", graph.password)) as driver:
            if pack_dir is not None and graph_counts(driver, graph.database)[0] == 0:
                print(f"loading {pack_dir}: {load_pack(driver, GraphPack.load(pack_dir), graph.database)}")
            entities, relations = graph_counts(driver, graph.database)
        print(
            f"embedded graph ready in {graph.started_seconds:.1f}s: {graph.uri} database={graph.database} user=root "
            f"password in {root / '.root-password'} ({entities} entities, {relations} relations). Ctrl-C stops it."
        )
        stop = False

        def _stop(*_: Any) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        while not stop and graph.running:
            time.sleep(0.5)
    except PackError as exc:
        print(f"vqa kg serve: bad pack: {exc}", file=sys.stderr)
        return 2
    finally:
        graph.stop()
    return 0


def _load(args: argparse.Namespace) -> int:
    from kg.loader import load_pack
    from kg.pack import GraphPack, PackError

    try:
        pack = GraphPack.load(Path(args.pack))
    except PackError as exc:
        print(f"vqa kg load: {exc}", file=sys.stderr)
        return 2
    uri = args.uri or os.environ.get("VQA_KG_URI")
    if not uri:
        print(
            "vqa kg load: give --uri (or VQA_KG_URI); for the embedded graph run `vqa kg serve` first", file=sys.stderr
        )
        return 2
    password = os.environ.get(args.password_env, "")
    try:
        with GraphDatabase.driver(uri, auth=(args.user, password)) as driver:
            counts = load_pack(driver, pack, args.database)
    except AuthError as exc:
        print(f"vqa kg load: authentication failed for {args.user}@{uri}: {exc.message}", file=sys.stderr)
        return 1
    except (ServiceUnavailable, Neo4jError) as exc:
        print(f"vqa kg load: graph error at {uri}: {exc}", file=sys.stderr)
        return 1
    print(f"pack {pack.meta.name} v{pack.meta.version}: {counts}")
    return 0


def add_kg_commands(sub: Any) -> None:
    kg = sub.add_parser("kg", help="knowledge graph: embedded server, pack loading")
    kg_sub = kg.add_subparsers(dest="kg_command", required=True)
    serve = kg_sub.add_parser(
        "serve",
        help="run the embedded ArcadeDB graph (Bolt on 127.0.0.1) and load the pack into it if empty",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--data-dir", help="server root folder (default VQA_KG_DATA_DIR, var/graph)")
    serve.add_argument("--pack", help="pack to load into an empty graph (default VQA_KG_PACK, packs/fintech)")
    serve.add_argument("--port", type=int, help="Bolt port (default: a free one)")
    serve.set_defaults(handler=_serve)
    load = kg_sub.add_parser(
        "load",
        help="load a domain pack into a graph (idempotent; all or nothing)",
        description="Validate every row of PACK (a bad row stops with file, line and field, before anything is "
        "written), then MERGE entities and relations in one transaction. Running it twice changes nothing.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    load.add_argument("pack", help="pack folder (pack.json, graph/entities.jsonl, graph/relations.jsonl)")
    load.add_argument("--uri", help="bolt:// or neo4j:// URI (default VQA_KG_URI)")
    load.add_argument("--user", default=os.environ.get("VQA_KG_USER", "neo4j"), help="user (VQA_KG_USER)")
    load.add_argument("--password-env", default="VQA_KG_PASSWORD", help="environment variable holding the password")
    load.add_argument("--database", default=os.environ.get("VQA_KG_DATABASE", "neo4j"), help="database name")
    load.set_defaults(handler=_load)
