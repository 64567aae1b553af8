"""Side by side on the same SQuAD dev questions (one context each): the reference pipeline, our Reader in-process,
and the HTTP service, for each model backend. Prints q/s, p50, p99 and F1 as a markdown table.

* reference: transformers 4.x ``pipeline("question-answering")`` on the same checkpoint in fp32, in its own virtual
  environment (created on first use under ``~/.cache/vqa/bench-ref-venv``: torch==2.13.0 first, then
  ``transformers<5``), at each ``--reference-batch-size``; its best q/s is the baseline;
* reader: ``Reader.answer_batch`` in this process, per backend (``VQA_BACKEND`` values);
* HTTP: ``vqa serve`` per backend with graph enrichment (embedded graph) and rules on, at each ``--clients`` count;
  the 1-client run also gives the p50 of the questions that fit one window.

ONNX graphs the checkpoint lacks (e.g. the fp32 one, which is not committed) are exported into a temporary copy
first. Each timed part runs with the background training job paused (``/work/TRAINING_PGID``, SIGSTOP then SIGCONT,
resumed whatever happens); ``--no-pause`` leaves it alone.

    .venv/bin/python bench/bench_answer.py --questions 300 --clients 1 16
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kg.embedded import free_port  # noqa: E402
from training.squad import QAExample, load_examples  # noqa: E402
from training.squad_metric import squad_scores  # noqa: E402

REFERENCE_VENV = Path.home() / ".cache" / "vqa" / "bench-ref-venv"
TRAINING_PGID_FILE = Path("/work/TRAINING_PGID")


# ---------------------------------------------------------------------------------------------------- pausing
class TrainingPause:
    """SIGSTOP / SIGCONT the background training job's process group around each timed part."""

    def __init__(self, enabled: bool) -> None:
        self.pgid: int | None = None
        if enabled and TRAINING_PGID_FILE.is_file():
            self.pgid = int(TRAINING_PGID_FILE.read_text().strip())
        self.paused_s = 0.0
        atexit.register(self.resume)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.resume()
        raise SystemExit(128 + signum)

    def resume(self) -> None:
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGCONT)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        if self.pgid is None:
            yield
            return
        started = time.monotonic()
        try:
            os.killpg(self.pgid, signal.SIGSTOP)
        except ProcessLookupError:
            self.pgid = None
        try:
            yield
        finally:
            self.resume()
            self.paused_s += time.monotonic() - started


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class Row:
    system: str
    mode: str
    questions: int
    seconds: float
    latencies_ms: list[float]
    f1: float
    errors: int = 0
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def qps(self) -> float:
        return self.questions / self.seconds

    def percentile(self, q: float) -> float:
        lat = sorted(self.latencies_ms)
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    def cells(self) -> list[str]:
        return [
            self.system,
            self.mode,
            f"{self.qps:.1f}",
            f"{statistics.median(self.latencies_ms):.0f}" if self.latencies_ms else "-",
            f"{self.percentile(0.99):.0f}" if self.latencies_ms else "-",
            f"{self.f1:.2f}",
            str(self.errors),
            self.note,
        ]


def f1_of(predictions: dict[str, str], examples: list[QAExample]) -> float:
    references = {ex.id: [a.text for a in ex.answers] for ex in examples}
    return float(squad_scores(predictions, references)["f1"])


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------------- reference
def ensure_reference_venv(venv: Path) -> Path:
    """The reference pipeline's own environment: CPU torch first (no CUDA build), then transformers 4.x."""
    python = venv / "bin" / "python"
    check = "import transformers, torch; assert transformers.__version__.startswith('4.')"
    if python.exists() and subprocess.run([python, "-c", check], capture_output=True).returncode == 0:
        return python
    print(f"creating the reference environment {venv} (torch==2.13.0, transformers<5) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "transformers<5"], check=True)
    return python


def run_reference(
    python: Path, model: Path, examples: list[QAExample], batch_sizes: list[int], pause: TrainingPause
) -> tuple[list[Row], dict[str, Any]]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump([{"id": ex.id, "question": ex.question, "context": ex.context} for ex in examples], handle)
    command = [str(python), str(REPO / "bench" / "reference_pipeline.py"), "--model", str(model)]
    command += ["--questions", handle.name] + [arg for b in batch_sizes for arg in ("--batch-size", str(b))]
    with pause.paused():
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    os.unlink(handle.name)
    if done.returncode != 0:
        raise SystemExit(f"reference pipeline failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout)
    rows = []
    for run in out["runs"]:
        per_call = run["latencies_ms"]
        rows.append(
            Row(
                f"reference: transformers {out['transformers']} pipeline, {out['dtype'].removeprefix('torch.')}",
                f"in-process, batch {run['batch_size']}",
                len(examples),
                run["seconds"],
                per_call,
                f1_of(run["predictions"], examples),
                note="latency per pipeline call"
                + (f" of {run['batch_size']} questions" if run["batch_size"] > 1 else ""),
            )
        )
    return rows, {k: v for k, v in out.items() if k != "runs"}


# ---------------------------------------------------------------------------------------------------- our reader
def prepare_checkpoint(model: Path, backends: list[str]) -> Path:
    """``model`` itself when it has every requested ONNX graph, else a temporary copy with the missing ones exported."""
    from app.qa.backends import onnx_problem
    from app.qa.card import ModelCard
    from training.export import export_onnx

    card = ModelCard.load(model)
    missing = [b for b in backends if b.startswith("onnx-") and onnx_problem(model, card, b) is not None]
    if not missing:
        return model
    copy = Path(tempfile.mkdtemp(prefix="vqa-bench-")) / model.name
    shutil.copytree(model, copy)
    atexit.register(shutil.rmtree, copy.parent, True)
    for backend in missing:
        print(f"exporting the {backend} graph into {copy} (not timed) ...", flush=True)
        export_onnx(copy, int8=backend == "onnx-int8", cpu_default=False)
    return copy


def run_reader(
    model: Path, backend: str, examples: list[QAExample], pause: TrainingPause
) -> tuple[Row, dict[str, int]]:
    from app.qa.reader import Reader

    reader = Reader(model, backend=backend)
    reader.load()
    reader.warm_up()
    items = [(ex.question, [ex.context]) for ex in examples]
    with pause.paused():
        started = time.perf_counter()
        results = reader.answer_batch(items, min_score=0.0)
        seconds = time.perf_counter() - started
    windows = {ex.id: len(reader.preprocess(ex.question, [ex.context])) for ex in examples}
    predictions = {ex.id: r.answers[0].text if r.answers else "" for ex, r in zip(examples, results, strict=True)}
    row = Row(
        f"our Reader, {reader.backend.name} ({reader.precision})",
        "in-process, answer_batch",
        len(examples),
        seconds,
        [],
        f1_of(predictions, examples),
        note="length-sorted batches",
    )
    return row, windows


# ---------------------------------------------------------------------------------------------------- HTTP
def start_service(model: Path, backend: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VQA_MODEL_PATH": str(model),
        "VQA_BACKEND": backend,
        "VQA_PORT": str(port),
        "VQA_LOG_LEVEL": "warning",
        "VQA_KG_ENABLED": "true",
        **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=full_env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError, ValueError):
            ready = httpx.get(f"{url}/readyz", timeout=2).json()
            if ready.get("status") == "ready" and ready.get("graph") == "ok":
                return proc, url
        if proc.poll() is not None:
            raise SystemExit(f"service exited with {proc.returncode}")
        time.sleep(0.3)
    proc.kill()
    raise SystemExit("service (with its graph) did not become ready")


def served_backend(url: str) -> str:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == "vqa_model_info":
                return f"{s.labels.get('backend')} ({s.labels.get('dtype')})"
    return "?"


async def drive(
    url: str, examples: list[QAExample], clients: int
) -> tuple[float, dict[str, float], dict[str, str], int]:
    """``clients`` concurrent keep-alive connections, each sending its next question when the last is answered.

    aiohttp rather than httpx: the load generator shares the 2 cores with the service, and httpx costs about 3 ms of
    CPU per request here against 0.35 ms for aiohttp.
    """
    queue: asyncio.Queue[QAExample] = asyncio.Queue()
    for ex in examples:
        queue.put_nowait(ex)
    latencies: dict[str, float] = {}
    predictions: dict[str, str] = {}
    errors = 0

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal errors
        while not queue.empty():
            ex = queue.get_nowait()
            body = {"question": ex.question, "contexts": [{"text": ex.context}], "min_score": 0}
            t0 = time.perf_counter()
            async with http.post("/answer", json=body) as response:
                answer = await response.json() if response.status == 200 else None
            latencies[ex.id] = (time.perf_counter() - t0) * 1000
            if answer is None:
                errors += 1
                continue
            predictions[ex.id] = answer["answers"][0]["text"] if answer["answers"] else ""

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return time.perf_counter() - started, latencies, predictions, errors


def run_http(
    model: Path,
    backend: str,
    examples: list[QAExample],
    clients_list: list[int],
    windows: dict[str, int],
    env: dict[str, str],
    pause: TrainingPause,
) -> list[Row]:
    proc, url = start_service(model, backend, env)
    rows = []
    try:
        asyncio.run(drive(url, examples[:32], 16))  # warm-up (and the graph's facts cache), not measured
        name = served_backend(url)
        for clients in clients_list:
            with pause.paused():
                seconds, latencies, predictions, errors = asyncio.run(drive(url, examples, clients))
            row = Row(
                f"HTTP service, {name}",
                f"{clients} client{'s' if clients > 1 else ''}, graph + rules on",
                len(examples),
                seconds,
                list(latencies.values()),
                f1_of(predictions, examples),
                errors,
            )
            one_window = [ms for qid, ms in latencies.items() if windows.get(qid) == 1]
            if clients == 1 and one_window:
                row.extra["one_window_p50_ms"] = statistics.median(one_window)
                row.note = f"one-window questions ({len(one_window)}): p50 {statistics.median(one_window):.0f} ms"
            rows.append(row)
    finally:
        proc.terminate()
        proc.wait(30)
    return rows


# ---------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "minilm-squad"), help="checkpoint directory")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "squad-v1.1-dev.json.gz"))
    parser.add_argument("--questions", type=int, default=300, help="the first N dev questions")
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx-fp32", "onnx-int8"])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--reference-batch-size", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reference-venv", default=str(REFERENCE_VENV))
    parser.add_argument("--no-reference", action="store_true", help="skip the reference pipeline")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP runs")
    parser.add_argument("--no-pause", action="store_true", help="do not pause the background training job")
    parser.add_argument("--env", action="append", default=[], help="extra VQA_...=value for the service")
    parser.add_argument("--json-out", help="also write the rows here")
    args = parser.parse_args()

    pause = TrainingPause(enabled=not args.no_pause)
    examples = load_examples(Path(args.data), limit=args.questions)
    model = Path(args.model)
    env = dict(item.split("=", 1) for item in args.env)
    print(f"load average before: {load_average()}", flush=True)
    rows: list[Row] = []
    reference_info: dict[str, Any] = {}
    if not args.no_reference:
        python = ensure_reference_venv(Path(args.reference_venv))
        ref_rows, reference_info = run_reference(python, model, examples, args.reference_batch_size, pause)
        rows += ref_rows
    checkpoint = prepare_checkpoint(model, args.backends)
    windows: dict[str, int] = {}
    for backend in args.backends:
        row, windows = run_reader(checkpoint, backend, examples, pause)
        rows.append(row)
    if not args.no_http:
        for backend in args.backends:
            rows += run_http(checkpoint, backend, examples, args.clients, windows, env, pause)

    print(
        f"\nmodel {model}, the first {len(examples)} SQuAD v1.1 dev questions with their context, "
        f"{os.cpu_count()} CPU cores; load average after: {load_average()}; "
        + (f"training job paused for the timed parts ({pause.paused_s:.0f} s in all)" if pause.pgid else "not paused")
    )
    if reference_info:
        print(
            f"reference: transformers {reference_info['transformers']} question-answering pipeline, torch "
            f"{reference_info['torch']}, {reference_info['dtype']}, {reference_info['threads']} threads, in its own "
            f"virtual environment {args.reference_venv} (created by this script)"
        )
    print("\n| system | mode | q/s | p50 ms | p99 ms | F1 | errors | note |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    reference = [r for r in rows if r.system.startswith("reference")]
    http16 = [r for r in rows if r.system.startswith("HTTP") and r.mode.startswith(f"{max(args.clients)} client")]
    if reference and http16:
        best_ref = max(reference, key=lambda r: r.qps)
        best = max(http16, key=lambda r: r.qps)
        print(
            f"\nbest HTTP at {max(args.clients)} clients: {best.system} {best.qps:.1f} q/s = "
            f"{best.qps / best_ref.qps:.2f}x the reference's best ({best_ref.mode}, {best_ref.qps:.1f} q/s)"
        )
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"reference": reference_info, "rows": [r.__dict__ for r in rows]}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
