"""Enrichment latency (entity linking + facts lookup) on the embedded ArcadeDB graph, cold vs warm cache.

Starts the embedded server in a temporary folder, loads the fintech pack, then runs the service's own
GraphEnrichment.enrich over a fixed set of questions: once with the cache cleared before every call (every lookup is a
Bolt round trip) and once warm. Prints start-up time, server memory and a markdown table.

    .venv/bin/python bench/bench_graph.py --rounds 200
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.config import Settings  # noqa: E402
from app.enrich.graph import GraphEnrichment  # noqa: E402
from app.metrics import ServiceMetrics  # noqa: E402
from domain.pack import DomainPack  # noqa: E402

QUESTIONS = [
    "How much is a card replacement?",
    "What is the contactless limit on my debit card?",
    "What rate does the Easy Saver pay and is it covered by the FSCS?",
    "Can I dispute a transaction on my Platinum credit card?",
    "What is the daily cash withdrawal limit?",
    "Is there an early repayment charge on the mortgage?",
    "How do I make a complaint?",
    "what's the foreign transaction fee abroad",
]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(kg_enabled=True, kg_data_dir=Path(tmp) / "graph")
        pack = DomainPack.load(REPO / "packs" / "fintech")
        graph = GraphEnrichment(settings, ServiceMetrics(), pack.graph, pack.today)
        started = time.perf_counter()
        await graph.start()
        start_s = time.perf_counter() - started
        assert graph.status == "ok", graph.start_error
        assert graph.embedded is not None and graph.embedded.process is not None and graph.client is not None
        rss = subprocess.run(
            ["ps", "-o", "rss=", "-p", str(graph.embedded.process.pid)], capture_output=True, text=True
        )
        rows = []
        for mode in ("cold", "warm"):
            latencies = []
            for i in range(rounds):
                if mode == "cold":
                    graph.client.clear_cache()
                question = QUESTIONS[i % len(QUESTIONS)]
                t0 = time.perf_counter()
                result = await graph.enrich(question, [])
                latencies.append((time.perf_counter() - t0) * 1000)
                assert result.status == "ok" and result.facts, question
            rows.append((mode, rounds, statistics.median(latencies), _pct(latencies, 0.99), max(latencies)))
        await graph.stop()
    print(
        f"\nembedded graph start (server + pack load + linker): {start_s:.1f} s; "
        f"server RSS after the runs: {int(rss.stdout.strip() or 0) / 1024:.0f} MB\n"
    )
    print("| cache | lookups | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|")
    for mode, n, p50, p99, worst in rows:
        print(f"| {mode} | {n} | {p50:.2f} | {p99:.2f} | {worst:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(run(args.rounds))


if __name__ == "__main__":
    main()
