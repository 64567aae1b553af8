"""Throughput and latency of POST /answer: dynamic batching vs one forward per window, same questions, same clients.

Starts the service twice as a subprocess on a free port (batched: the given settings; naive: max_batch_windows=1,
max_wait_ms=0), sends the same SQuAD dev questions from N concurrent clients, and prints a markdown table.

    .venv/bin/python bench/bench_answer.py --model models/minilm-squad --questions 400 --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kg.embedded import free_port  # noqa: E402
from training.squad import load_examples  # noqa: E402


@dataclass
class Row:
    mode: str
    questions: int
    seconds: float
    latencies_ms: list[float]
    mean_batch: float
    errors: int

    def cells(self) -> list[str]:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        return [
            self.mode,
            str(self.questions),
            f"{self.questions / self.seconds:.1f}",
            f"{p50:.0f}",
            f"{p99:.0f}",
            f"{self.mean_batch:.1f}",
            str(self.errors),
        ]


def _start(model: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VQA_MODEL_PATH": str(model),
        "VQA_PORT": str(port),
        "VQA_LOG_LEVEL": "warning",
        **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=full_env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("service did not become ready")


def _batch_stats(url: str) -> tuple[float, float]:
    total = count = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == "vqa_batch_windows_sum":
                total = s.value
            elif s.name == "vqa_batch_windows_count":
                count = s.value
    return total, count


async def _drive(url: str, bodies: list[dict[str, object]], clients: int) -> tuple[float, list[float], int]:
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            r = await http.post("/answer", json=body)
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += r.status_code != 200

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=clients)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies, errors


def run_mode(mode: str, model: Path, env: dict[str, str], bodies: list[dict[str, object]], clients: int) -> Row:
    proc, url = _start(model, env)
    try:
        asyncio.run(_drive(url, bodies[: min(16, len(bodies))], clients))  # warm-up, not measured
        s0, c0 = _batch_stats(url)
        seconds, latencies, errors = asyncio.run(_drive(url, bodies, clients))
        s1, c1 = _batch_stats(url)
        return Row(mode, len(bodies), seconds, latencies, (s1 - s0) / max(c1 - c0, 1), errors)
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "minilm-squad"), help="checkpoint directory")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad-v1.1-dev.json.gz"))
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch-windows", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=None, help="VQA_CPU_THREADS for the service")
    parser.add_argument("--with-graph", action="store_true", help="keep knowledge-graph enrichment on (embedded)")
    args = parser.parse_args()

    examples = load_examples(Path(args.data), limit=args.questions)
    bodies: list[dict[str, object]] = [
        {"question": ex.question, "contexts": [{"text": ex.context}], "min_score": 0} for ex in examples
    ]
    common = {"VQA_CPU_THREADS": str(args.threads)} if args.threads else {}
    # The comparison is about batching; the graph adds the same few ms to both modes (see bench_graph.py).
    common["VQA_KG_ENABLED"] = "true" if args.with_graph else "false"
    rows = [
        run_mode(
            f"batched (max {args.max_batch_windows} windows, {args.max_wait_ms:g} ms)",
            Path(args.model),
            {**common, "VQA_MAX_BATCH_WINDOWS": str(args.max_batch_windows), "VQA_MAX_WAIT_MS": str(args.max_wait_ms)},
            bodies,
            args.clients,
        ),
        run_mode(
            "naive (one forward per window)",
            Path(args.model),
            {**common, "VQA_MAX_BATCH_WINDOWS": "1", "VQA_MAX_WAIT_MS": "0"},
            bodies,
            args.clients,
        ),
    ]
    print(f"\nmodel {args.model}, {args.clients} concurrent clients, {os.cpu_count()} CPU cores\n")
    print("| mode | questions | q/s | p50 ms | p99 ms | mean batch (windows) | errors |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")


if __name__ == "__main__":
    main()
