"""Where a POST /answer request spends its time, stage by stage, at 1 and at N concurrent clients.

Starts the real service in a subprocess whose stage functions are wrapped with timers (this file, ``--serve``; the
service code is not changed for profiling), sends the same SQuAD dev questions (one context each, graph enrichment
and rules on), and prints two tables:

* wall time per request and stage (what one client waits for): tokenise, queue wait, batch assembly, forward,
  decode, postprocess, retrieval, linking, graph lookups, rules, JSON; "HTTP and the rest" is the server's request
  time (the middleware's ``vqa_request_duration_seconds``) minus the stages;
* CPU time per request by where it burns (what limits throughput on a small CPU): the event-loop thread, the
  tokeniser threads, the forward thread (batch assembly, decode and the model call), the model's native thread
  pool (ONNX Runtime / OpenMP), and the embedded graph server (a Java child process).

    .venv/bin/python bench/profile_request_path.py --backend onnx-int8 --questions 200 --clients 1 16
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kg.embedded import free_port  # noqa: E402
from training.squad import load_examples  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
WALL_STAGES = (
    "tokenise",
    "queue wait",
    "batch assembly",
    "forward",
    "decode",
    "postprocess",
    "retrieval",
    "linking",
    "graph lookups",
    "rules",
    "JSON",
)


# ---------------------------------------------------------------------------------------------------- server side
class StageClock:
    """Wall and calling-thread CPU seconds per stage, summed over calls; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.forward_threads: set[int] = set()

    def add(self, stage: str, wall: float, cpu: float | None) -> None:
        with self.lock:
            self.wall[stage] += wall
            self.calls[stage] += 1
            if cpu is not None:
                self.cpu[stage] += cpu

    def sync(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - wall, time.thread_time() - cpu)

        return timed

    def coroutine(self, stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            wall = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - wall, None)

        return timed

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"wall": dict(self.wall), "cpu": dict(self.cpu), "calls": dict(self.calls)}

    def reset(self) -> None:
        with self.lock:
            self.wall.clear()
            self.cpu.clear()
            self.calls.clear()


def thread_cpu(clock: StageClock) -> dict[str, float]:
    """CPU seconds of this process's threads by kind, and of its child processes (the graph server)."""
    python_threads = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    main_id = threading.main_thread().native_id
    out: dict[str, float] = defaultdict(float)
    for task in Path("/proc/self/task").iterdir():
        tid = int(task.name)
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if tid == main_id:
            kind = "event loop"
        elif tid in clock.forward_threads:
            kind = "forward thread"
        elif tid in python_threads:
            name = python_threads[tid]
            if name.startswith("vqa-onnx"):
                kind = "model thread pool"  # OnnxBackend's one-window-per-core workers
            elif name.startswith("asyncio"):
                kind = "worker threads"
            else:
                kind = "other python threads"
        else:
            kind = "model thread pool"
        out[kind] += seconds
    children = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True).stdout.split()
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out["graph server (java)"] += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return dict(out)


def serve() -> None:
    """Run the service with timed stages and a /__profile route (GET: totals, DELETE: reset).

    ``PROFILE_REPO`` runs another checkout's service code instead (e.g. the code before a change), same stages.
    """
    other = os.environ.get("PROFILE_REPO")
    if other:
        sys.path.insert(0, other)
        os.chdir(other)
    import fastapi.routing
    import uvicorn
    from starlette.responses import JSONResponse

    import app.api.answer as answer_route
    from app.config import Settings
    from app.enrich.graph import GraphEnrichment
    from app.enrich.retrieval import PassageRetriever
    from app.main import create_app
    from app.qa.reader import Reader
    from app.qa.spans import SpanDecoder
    from kg.linker import EntityLinker

    clock = StageClock()
    Reader.preprocess = clock.sync("tokenise", Reader.preprocess)  # type: ignore[method-assign]
    Reader.logits = clock.sync("logits", Reader.logits)  # type: ignore[method-assign]
    Reader.forward = clock.sync("reader.forward", Reader.forward)  # type: ignore[method-assign]
    SpanDecoder.decode = clock.sync("span decoder", SpanDecoder.decode)  # type: ignore[method-assign]
    Reader.postprocess = clock.sync("postprocess", Reader.postprocess)  # type: ignore[method-assign]
    # The model call: the torch module's forward, or ONNX Runtime's (OnnxBackend.run, where the code has one).
    from transformers.models.bert.modeling_bert import BertForQuestionAnswering

    model_calls: list[tuple[Any, Callable[..., Any]]] = [(BertForQuestionAnswering, BertForQuestionAnswering.forward)]
    try:
        from app.qa.backends import OnnxBackend

        model_calls.append((OnnxBackend, OnnxBackend.run))
    except ImportError:
        pass
    for owner, call in model_calls:

        def model_call(self: Any, *args: Any, _call: Callable[..., Any] = call, **kwargs: Any) -> Any:
            clock.forward_threads.add(threading.get_native_id())
            return _call(self, *args, **kwargs)

        setattr(owner, "forward" if owner is BertForQuestionAnswering else "run", clock.sync("forward", model_call))
    PassageRetriever.search = clock.sync("retrieval", PassageRetriever.search)  # type: ignore[method-assign]
    EntityLinker.link = clock.sync("linking", EntityLinker.link)  # type: ignore[method-assign]
    GraphEnrichment.enrich = clock.coroutine("graph", GraphEnrichment.enrich)  # type: ignore[method-assign]
    answer_route.check_answer = clock.sync("rules", answer_route.check_answer)
    fastapi.routing.serialize_response = clock.coroutine("response model", fastapi.routing.serialize_response)
    JSONResponse.render = clock.sync("json render", JSONResponse.render)  # type: ignore[method-assign]

    settings = Settings()
    service = create_app(settings)

    async def profile() -> dict[str, Any]:
        return {**clock.snapshot(), "threads": thread_cpu(clock)}

    async def reset() -> dict[str, str]:
        clock.reset()
        return {"status": "reset"}

    service.add_api_route("/__profile", profile, methods=["GET"])
    service.add_api_route("/__profile", reset, methods=["DELETE"])
    # BENCH_UVICORN_HTTP / BENCH_UVICORN_LOOP compare uvicorn's protocol and loop implementations (default: auto)
    uvicorn.run(
        service,
        host="127.0.0.1",
        port=settings.port,
        log_level="warning",
        http=os.environ.get("BENCH_UVICORN_HTTP", "auto"),  # type: ignore[arg-type]
        loop=os.environ.get("BENCH_UVICORN_LOOP", "auto"),  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------------- driver side
@dataclass
class Run:
    backend: str
    clients: int
    questions: int
    seconds: float
    latencies_ms: list[float]
    queue_ms: list[float]
    server_request_s: float
    profile: dict[str, Any]
    cpu_before: dict[str, float]
    batch_windows: float
    errors: int

    def per_request_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.questions

    def wall_stages(self) -> dict[str, float]:
        wall = self.profile["wall"]
        calls = self.profile["calls"]

        def per_request(stage: str) -> float:
            return self.per_request_ms(float(wall.get(stage, 0.0)))

        def per_batch(stage: str) -> float:
            return 1000 * float(wall.get(stage, 0.0)) / max(int(calls.get("forward", 0)), 1)

        # A request sits through its whole batch (about one batch per request here: one window each), so the batch
        # stages are shown per batch; the rest per request. JSON = response-model validation, encoding, rendering.
        ms = {
            "tokenise": per_request("tokenise"),
            "queue wait": sum(self.queue_ms) / max(len(self.queue_ms), 1),
            "batch assembly": per_batch("logits") - per_batch("forward"),
            "forward": per_batch("forward"),
            "decode": per_batch("reader.forward") - per_batch("logits"),
            "postprocess": per_request("postprocess"),
            "retrieval": per_request("retrieval"),
            "linking": per_request("linking"),
            "graph lookups": per_request("graph") - per_request("linking"),
            "rules": per_request("rules"),
            "JSON": per_request("response model") + per_request("json render"),
        }
        ms["HTTP and the rest"] = self.per_request_ms(self.server_request_s) - sum(ms.values())
        return ms

    def cpu_by_thread(self) -> dict[str, float]:
        after = self.profile["threads"]
        return {k: self.per_request_ms(after.get(k, 0.0) - self.cpu_before.get(k, 0.0)) for k in after}

    def cpu_by_stage(self) -> dict[str, float]:
        cpu = self.profile["cpu"]

        def c(stage: str) -> float:
            return self.per_request_ms(float(cpu.get(stage, 0.0)))

        return {
            "tokenise": c("tokenise"),
            "batch assembly": c("logits") - c("forward"),
            "forward (calling thread)": c("forward"),
            "decode": c("reader.forward") - c("logits"),
            "postprocess": c("postprocess"),
            "linking": c("linking"),
            "rules": c("rules"),
            "JSON render": c("json render"),
        }


def start(backend: str, model: Path, extra_env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VQA_MODEL_PATH": str(model),
        "VQA_BACKEND": backend,
        "VQA_PORT": str(port),
        "VQA_LOG_LEVEL": "warning",
        "VQA_KG_ENABLED": "true",
        **extra_env,
    }
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{url}/readyz", timeout=2).json()
            if ready.get("status") == "ready" and ready.get("graph") == "ok":
                return proc, url
        except (httpx.TransportError, ValueError):
            pass
        if proc.poll() is not None:
            raise SystemExit(f"service exited with {proc.returncode}")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("service (and graph) did not become ready")


def histogram_sum(url: str, name: str, **labels: str) -> tuple[float, float]:
    total = count = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if all(s.labels.get(k) == v for k, v in labels.items()):
                if s.name == f"{name}_sum":
                    total = s.value
                elif s.name == f"{name}_count":
                    count = s.value
    return total, count


async def drive(url: str, bodies: list[dict[str, object]], clients: int) -> tuple[float, list[dict[str, Any]]]:
    """``clients`` keep-alive connections in a closed loop (aiohttp: a light load generator, see bench_answer.py)."""
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[dict[str, Any]] = []

    async def client(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            t0 = time.perf_counter()
            async with http.post("/answer", json=body) as response:
                payload = await response.json() if response.status == 200 else None
            ms = (time.perf_counter() - t0) * 1000
            results.append({"ms": ms, "status": response.status, "json": payload})

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, results


def measure(url: str, backend: str, bodies: list[dict[str, object]], clients: int) -> Run:
    asyncio.run(drive(url, bodies[:16], clients))  # warm-up (and the graph's facts cache), not measured
    httpx.delete(f"{url}/__profile")
    cpu_before = httpx.get(f"{url}/__profile").json()["threads"]
    request_s0, _ = histogram_sum(url, "vqa_request_duration_seconds", route="/answer")
    windows0, batches0 = histogram_sum(url, "vqa_batch_windows")
    seconds, results = asyncio.run(drive(url, bodies, clients))
    profile = httpx.get(f"{url}/__profile").json()
    request_s1, _ = histogram_sum(url, "vqa_request_duration_seconds", route="/answer")
    windows1, batches1 = histogram_sum(url, "vqa_batch_windows")
    ok = [r for r in results if r["json"] is not None]
    return Run(
        backend=backend,
        clients=clients,
        questions=len(results),
        seconds=seconds,
        latencies_ms=[r["ms"] for r in results],
        queue_ms=[r["json"]["timings_ms"]["queue"] for r in ok],
        server_request_s=request_s1 - request_s0,
        profile=profile,
        cpu_before=cpu_before,
        batch_windows=(windows1 - windows0) / max(batches1 - batches0, 1),
        errors=len(results) - len(ok),
    )


def print_tables(runs: list[Run]) -> None:
    heads = [f"{r.backend}, {r.clients} client{'s' if r.clients > 1 else ''}" for r in runs]
    print("\nWall time per request (ms; batch stages shared by the requests of a batch)\n")
    print("| stage | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(runs))
    stages = [r.wall_stages() for r in runs]
    for stage in [*WALL_STAGES, "HTTP and the rest"]:
        print(f"| {stage} | " + " | ".join(f"{s[stage]:.2f}" for s in stages) + " |")
    print(
        "| **client-observed p50** | " + " | ".join(f"**{statistics.median(r.latencies_ms):.1f}**" for r in runs) + " |"
    )
    print("| q/s | " + " | ".join(f"{r.questions / r.seconds:.1f}" for r in runs) + " |")
    print("| mean batch (windows) | " + " | ".join(f"{r.batch_windows:.1f}" for r in runs) + " |")
    print("| errors | " + " | ".join(str(r.errors) for r in runs) + " |")

    print("\nCPU time per request (ms) by thread\n")
    kinds = sorted({k for r in runs for k in r.cpu_by_thread()})
    print("| where | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(runs))
    threads = [r.cpu_by_thread() for r in runs]
    for kind in kinds:
        print(f"| {kind} | " + " | ".join(f"{t.get(kind, 0.0):.2f}" for t in threads) + " |")
    print("| **total** | " + " | ".join(f"**{sum(t.values()):.1f}**" for t in threads) + " |")
    print("\nCPU time per request (ms) of the Python-side stages (calling thread only)\n")
    print("| stage | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(runs))
    by_stage = [r.cpu_by_stage() for r in runs]
    for stage in by_stage[0]:
        print(f"| {stage} | " + " | ".join(f"{s[stage]:.2f}" for s in by_stage) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default=str(REPO / "models" / "minilm-squad"), help="checkpoint directory")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad-v1.1-dev.json.gz"))
    parser.add_argument("--backend", action="append", help="VQA_BACKEND to profile; repeat (default: auto)")
    parser.add_argument("--questions", type=int, default=200)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--env", action="append", default=[], help="extra VQA_...=value for the service")
    parser.add_argument("--json-out", help="also write the raw runs here")
    parser.add_argument("--repo", help="profile another checkout's service code (e.g. before a change)")
    parser.add_argument("--label", default="", help="prefix for the column names")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    examples = load_examples(Path(args.data), limit=args.questions)
    bodies: list[dict[str, object]] = [
        {"question": ex.question, "contexts": [{"text": ex.context}], "min_score": 0} for ex in examples
    ]
    extra = dict(item.split("=", 1) for item in args.env)
    if args.repo:
        extra["PROFILE_REPO"] = str(Path(args.repo).resolve())
    runs: list[Run] = []
    for backend in args.backend or ["auto"]:
        proc, url = start(backend, Path(args.model), extra)
        try:
            for clients in args.clients:
                runs.append(measure(url, f"{args.label}{backend}", bodies, clients))
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"\nmodel {args.model}, {len(bodies)} SQuAD dev questions, {os.cpu_count()} CPU cores, graph + rules on")
    print_tables(runs)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps([r.__dict__ for r in runs], indent=1))


if __name__ == "__main__":
    main()
