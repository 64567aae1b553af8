"""``vqa kg serve``: the embedded graph on its own, with the pack's graph loaded into it when it is empty or holds
another version of the pack.

Loading a pack into any Bolt graph is ``vqa pack load`` (domain/cli.py). The defaults (data folder, pack) come from
the caller's settings, so this package never imports the service.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from neo4j import GraphDatabase


class ServeDefaults(Protocol):
    """What ``vqa kg serve`` needs from the service's settings."""

    @property
    def kg_data_dir(self) -> Path: ...

    @property
    def kg_heap_mb(self) -> int: ...

    @property
    def pack(self) -> Path: ...


def _serve(args: argparse.Namespace) -> int:
    from domain.pack import DomainPack
    from kg.embedded import EmbeddedGraph, EmbeddedGraphError, stored_password
    from kg.loader import graph_counts, load_pack, loaded_version
    from kg.pack import PackError

    settings: ServeDefaults = args.defaults()
    try:
        pack = DomainPack.load(Path(args.pack) if args.pack else settings.pack)
    except PackError as exc:
        print(f"vqa kg serve: bad pack: {exc}", file=sys.stderr)
        return 2
    root = Path(args.data_dir or settings.kg_data_dir).resolve()
    graph = EmbeddedGraph(
        root=root, password=stored_password(root), bolt_port=args.port or 0, heap_mb=settings.kg_heap_mb
    )
    try:
        graph.start()
    except EmbeddedGraphError as exc:
        print(f"vqa kg serve: {exc}", file=sys.stderr)
        return 1
    try:
        with GraphDatabase.driver(graph.uri, auth=("root", graph.password)) as driver:
            loaded = loaded_version(driver, graph.database, pack.name)
            if graph_counts(driver, graph.database)[0] == 0 or loaded not in (None, pack.version):
                print(f"loading pack {pack.name} v{pack.version}: {load_pack(driver, pack.graph, graph.database)}")
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
    finally:
        graph.stop()
    return 0


def add_kg_commands(sub: Any, defaults: Callable[[], ServeDefaults]) -> None:
    kg = sub.add_parser("kg", help="knowledge graph: the embedded server")
    kg_sub = kg.add_subparsers(dest="kg_command", required=True)
    serve = kg_sub.add_parser(
        "serve",
        help="run the embedded ArcadeDB graph (Bolt on 127.0.0.1); load the pack's graph if empty or older",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--data-dir", help="server root folder (default VQA_KG_DATA_DIR, var/graph)")
    serve.add_argument("--pack", help="pack whose graph is loaded into an empty graph (default VQA_PACK)")
    serve.add_argument("--port", type=int, help="Bolt port (default: a free one)")
    serve.set_defaults(handler=_serve, defaults=defaults)
