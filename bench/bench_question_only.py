"""Speed of the question-only flow (no contexts: hybrid retrieval, linking, reading the best passages), and the
start-up cost of the sentence encoder and the passage vectors.

Starts the service as a subprocess twice on a free port with an empty embedding cache folder of its own (cold start:
passage vectors encoded and written; then warm start: read back), reports the time to /readyz and the service's own
log line for the vectors, then sends domain dev questions without contexts from 1 client and from N clients.

    .venv/bin/python bench/bench_question_only.py --questions 200 --clients 8

On the shared 2-core machine, pause the training job around it (see /work/HELPERS.md): the script does so itself
when given --pause-pgid (and resumes it on exit, whatever happens).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kg.embedded import free_port  # noqa: E402


def start(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = free_port()
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "VQA_PORT": str(port), "VQA_LOG_LEVEL": "info", **env}
    started = time.perf_counter()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], env=full_env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"service did not become ready; see {log_path}")


async def drive(url: str, questions: list[str], clients: int) -> tuple[float, list[float], int]:
    """``clients`` closed-loop clients (aiohttp: a tenth of httpx's CPU per request on these shared cores)."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for q in questions:
        queue.put_nowait(q)
    latencies: list[float] = []
    errors = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while not queue.empty():
            question = queue.get_nowait()
            t0 = time.perf_counter()
            async with http.post(f"{url}/answer", json={"question": question}) as r:
                await r.read()
                status = r.status
            latencies.append((time.perf_counter() - t0) * 1000)
            errors += status != 200

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies, errors


def dev_questions(pack: Path, limit: int) -> list[str]:
    data = json.loads((pack / "qa" / "dev.json").read_text(encoding="utf-8"))
    seen = dict.fromkeys(qa["question"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"])
    return list(seen)[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=Path, default=REPO / "packs" / "fintech")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pause-pgid", type=int, default=None, help="process group to SIGSTOP while measuring")
    args = parser.parse_args()

    # SIGTERM/SIGHUP end the run through the finally below, so a paused training job is always resumed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: sys.exit(128 + signum))
    if args.pause_pgid:
        os.killpg(args.pause_pgid, signal.SIGSTOP)
    try:
        run(args)
    finally:
        if args.pause_pgid:
            os.killpg(args.pause_pgid, signal.SIGCONT)


def run(args: argparse.Namespace) -> None:
    questions = dev_questions(args.pack, args.questions)
    with tempfile.TemporaryDirectory(prefix="vqa-bench-") as tmp:
        env = {
            "VQA_KG_ENABLED": "false",
            "VQA_EMBEDDING_CACHE_DIR": str(Path(tmp) / "embeddings"),
            "VQA_STORE_PATH": str(Path(tmp) / "feedback.sqlite3"),  # answers are recorded, as in production
            "VQA_CANARY_INTERVAL_MIN": "0",  # no canary run competing with the measured requests
            "VQA_MODEL_REGISTRY": str(Path(tmp) / "registry.json"),  # the default checkpoint, whatever is promoted
        }
        rows = []
        for label in ("cold cache", "warm cache"):
            log_path = Path(tmp) / f"{label.split()[0]}.log"
            proc, url, ready_s = start(env, log_path)
            try:
                text = log_path.read_text(errors="replace")
                vectors = re.search(r"passage vectors: .*? in [0-9.]+s", text)
                search = re.search(r"retrieval and linking ready in [0-9.]+s", text)
                rows.append((label, ready_s, vectors.group(0) if vectors else "?", search.group(0) if search else "?"))
                if label == "warm cache":
                    asyncio.run(drive(url, questions[:16], 4))  # warm-up, not measured
                    results = [(c, asyncio.run(drive(url, questions, c))) for c in (1, args.clients)]
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(60)
    print(f"\n{len(questions)} domain dev questions without contexts, graph off, {os.cpu_count()} CPU cores")
    print(f"load average at the end: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}\n")
    print("| start | /readyz after s | passage vectors | retrieval + linking set-up |")
    print("|---|---|---|---|")
    for label, ready_s, vectors_line, search_line in rows:
        print(f"| {label} | {ready_s:.1f} | {vectors_line} | {search_line} |")
    print("\n| clients | questions | q/s | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|")
    for clients, (seconds, latencies, errors) in results:
        lat = sorted(latencies)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(
            f"| {clients} | {len(lat)} | {len(lat) / seconds:.1f} | {statistics.median(lat):.0f} | {p99:.0f} | "
            f"{errors} |"
        )


if __name__ == "__main__":
    main()
