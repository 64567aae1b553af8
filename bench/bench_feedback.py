"""The feedback loop's costs: store writes on SQLite and PostgreSQL, and a model reload under 16 clients.

1. Store: answered-request records written the way the service writes them (redacted, in batches of up to 500 per
   transaction) -> records per second; verdicts submitted one by one (one committed transaction each, as
   POST /feedback does) -> p50/p99 ms. SQLite in a temp dir (WAL, synchronous=FULL); PostgreSQL: a throwaway
   cluster from Debian's binaries (skipped when they are missing).
2. Reload: the service with the real model, 16 clients asking without pause; halfway POST /admin/reload swaps to a
   copy of the model with another version. Reports errors, p50/p99 over the run and in the 5 s after the reload
   started, and the reload's load time.

    .venv/bin/python bench/bench_feedback.py --records 5000 --verdicts 300 --reload-seconds 30
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.qa.card import ModelCard  # noqa: E402
from app.qa.registry import ModelRegistry  # noqa: E402
from app.store.database import store_url  # noqa: E402
from app.store.feedback_store import FeedbackStore  # noqa: E402
from app.store.records import AnswerDraft, AnsweredPassage, FeedbackInput, build_answer_record  # noqa: E402
from kg.embedded import free_port  # noqa: E402

PASSAGE = (
    "You can dispute a card payment within 120 days of the transaction date. Refunds are credited within 5 working "
    "days of the merchant accepting the dispute. Call us on 0800 123 4567 if your card 4111 1111 1111 1111 is lost."
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_store(name: str, url: str, records: int, verdicts: int) -> str:
    store = FeedbackStore.open(store_url(url, None, Path()) if "://" in url else store_url(None, None, Path(url)))
    start = PASSAGE.index("120 days")
    drafts = [
        AnswerDraft(f"bench-{i}", datetime.now(UTC), "minilm-squad", "bench", f"How long to dispute ({i})?",
                    [AnsweredPassage("p0", PASSAGE), AnsweredPassage("p1", PASSAGE[::-1])], "120 days", 0.8, start,
                    start + 8, 0, False, None)  # fmt: skip
        for i in range(records)
    ]
    began = time.perf_counter()
    for i in range(0, records, 500):
        store.add_answers([build_answer_record(d, 20_000) for d in drafts[i : i + 500]])
    write_s = time.perf_counter() - began
    latencies = []
    for i in range(verdicts):
        t = time.perf_counter()
        store.add_feedback(FeedbackInput(f"bench-{i}", "incorrect", "120 days", 3, "bench"))
        latencies.append((time.perf_counter() - t) * 1000)
    store.close()
    return (
        f"| {name} | {records} | {records / write_s:.0f} | {verdicts} | {statistics.median(latencies):.1f} | "
        f"{percentile(latencies, 0.99):.1f} |"
    )


def bench_reload(model: Path, seconds: float, clients: int) -> str:
    work = Path(tempfile.mkdtemp(prefix="vqa-bench-reload-"))
    candidate = work / "candidate"
    shutil.copytree(model, candidate)
    card = ModelCard.load(candidate)
    card.version = f"{card.version}-reloaded"
    card.save(candidate)
    registry = work / "registry.json"
    with ModelRegistry.edit(registry) as reg:
        reg.set_serving(reg.register(model).id, "register")
    port, key = free_port(), "bench-admin-key-0123456789"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VQA_PORT": str(port), "VQA_LOG_LEVEL": "warning",
           "VQA_MODEL_REGISTRY": str(registry), "VQA_ADMIN_KEYS": key, "VQA_KG_ENABLED": "false",
           "VQA_CANARY_INTERVAL_MIN": "0", "VQA_STORE_PATH": str(work / "store.sqlite3")}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service not ready"
            time.sleep(0.2)
        stop = threading.Event()
        rows: list[tuple[float, float, int]] = []
        lock = threading.Lock()

        def client(i: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                while not stop.is_set():
                    sent = time.monotonic()
                    try:
                        status = http.post("/answer", json={"question": f"How long to dispute ({i})?",
                                                            "contexts": [{"text": PASSAGE}]}).status_code  # fmt: skip
                    except httpx.HTTPError:
                        status = 0
                    with lock:
                        rows.append((sent, (time.monotonic() - sent) * 1000, status))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        time.sleep(seconds / 2)
        reload_at = time.monotonic()
        r = httpx.post(f"{url}/admin/reload", headers={"Authorization": f"Bearer {key}"}, timeout=300)
        reload_body = r.json()
        time.sleep(seconds / 2)
        stop.set()
        for t in threads:
            t.join()
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)
    latencies = [ms for _, ms, _ in rows]
    around = [ms for sent, ms, _ in rows if reload_at <= sent < reload_at + 5]
    errors = sum(1 for *_, status in rows if status != 200)
    return (
        f"| {len(rows)} | {errors} | {statistics.median(latencies):.0f} | {percentile(latencies, 0.99):.0f} | "
        f"{statistics.median(around):.0f} | {percentile(around, 0.99):.0f} | {reload_body['load_seconds']:.2f} | "
        f"{reload_body['drained']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--verdicts", type=int, default=300)
    parser.add_argument("--model", default=str(REPO / "models" / "minilm-squad"))
    parser.add_argument("--reload-seconds", type=float, default=30)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()

    print("| store | records | records/s | verdicts | verdict p50 ms | verdict p99 ms |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        print(bench_store("SQLite (WAL, synchronous=FULL)", str(Path(tmp) / "bench.sqlite3"), args.records,
                          args.verdicts))  # fmt: skip
    try:
        sys.path.insert(0, str(REPO / "tests"))
        from postgres_server import PostgresServer  # type: ignore[import-not-found]

        server = PostgresServer.start("bench")
        try:
            print(bench_store("PostgreSQL 15 (local, fsync on)", server.url, args.records, args.verdicts))
        finally:
            server.stop()
    except RuntimeError as exc:
        print(f"| PostgreSQL | skipped: {exc} |")
    print("\n| requests | errors | p50 ms | p99 ms | p50 ms, 5 s after reload | p99 ms, 5 s after reload | "
          "reload load s | drained |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    print(bench_reload(Path(args.model), args.reload_seconds, args.clients))


if __name__ == "__main__":
    main()
