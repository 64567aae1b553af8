"""Soak, capacity and overload runs of POST /answer with the realistic mix, open loop (arrivals do not wait).

The mix (bench/traffic.py): 70% short requests with one context, 20% questions without contexts (the service
retrieves from its corpus), 10% requests with a 30,000-character context. Requests arrive as a Poisson process at
``--rate`` per second whatever the service does, as they do at a support desk.

Reports status counts (overall and per kind), p50/p99 latency of the answered requests and their drift (first vs last
minute), the 503 share and how fast a 503 comes back, connections cut mid-request, and the resident memory of the
service and of its graph child (the embedded ArcadeDB Java process) at the start and the end.

    # start the service (default settings, embedded graph) and soak it at 2.4 requests/s for 5 minutes
    .venv/bin/python bench/soak.py --rate 2.4 --duration 300
    # capacity: one minute per offered rate on the same service
    .venv/bin/python bench/soak.py --capacity --rates 1,1.5,2,2.5,3,4 --duration 60
    # a service that is already running (memory needs its pid)
    .venv/bin/python bench/soak.py --url http://127.0.0.1:8000 --pid 1234 --rate 2 --duration 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import traffic  # noqa: E402
from kg.embedded import free_port  # noqa: E402


@dataclass
class Sample:
    """One request: when it was sent (s from the start), what it was, what came back and how long it took."""

    sent: float
    kind: str
    status: int | None  # None: no HTTP response
    seconds: float
    code: str = ""  # error code of the body, or the transport error's class
    retry_after: str | None = None
    offsets_ok: bool = True


@dataclass
class MemorySample:
    at: float
    service_mb: float | None
    graph_mb: float | None


@dataclass
class Run:
    rate: float
    duration: float
    samples: list[Sample] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    rejections: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- service process
def start_service(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    work_dir = Path(tempfile.mkdtemp(prefix="vqa-soak-"))
    log_path = work_dir / "service.log"
    # Its own graph folder and feedback store, and no canary (its questions would be load the run did not offer);
    # --env overrides any of these.
    full_env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VQA_PORT": str(port),
        "VQA_LOG_LEVEL": "warning",
        "VQA_KG_DATA_DIR": str(work_dir / "graph"),
        "VQA_STORE_PATH": str(work_dir / "feedback.sqlite3"),
        "VQA_CANARY_INTERVAL_MIN": "0",
        **env,
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], env=full_env, cwd=REPO, stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"service exited with {proc.returncode}; log: {log_path}")
        try:
            ready = httpx.get(f"{url}/readyz", timeout=2)
            graph_done = env.get("VQA_KG_ENABLED", "true") == "false" or ready.json().get("graph") == "ok"
            if ready.status_code == 200 and graph_done:
                return proc, url, log_path
        except (httpx.TransportError, ValueError):
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"service not ready within 180 s; log: {log_path}")


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def graph_child(pid: int) -> int | None:
    """The embedded ArcadeDB process started by the service ``pid``, if any."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"ArcadeDB" in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def rejections(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        s.labels["reason"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "vqa_rejections_total"
    }


# ---------------------------------------------------------------------------------------------- load
def bodies(seed: int, count: int = 400) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    return [traffic.realistic_mix(rng) for _ in range(count)]


async def _one(client: httpx.AsyncClient, kind: str, body: dict[str, Any], started: float, run: Run) -> None:
    sent = time.monotonic()
    try:
        r = await client.post("/answer", json=body)
    except httpx.ConnectError as exc:
        run.samples.append(Sample(sent - started, kind, None, time.monotonic() - sent, f"connect:{type(exc).__name__}"))
        return
    except httpx.TransportError as exc:  # the connection broke with the request on it: a cut
        run.samples.append(Sample(sent - started, kind, None, time.monotonic() - sent, f"cut:{type(exc).__name__}"))
        return
    seconds = time.monotonic() - sent
    data = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    code = data.get("error", {}).get("code", "") if r.status_code != 200 else ""
    ok = traffic.offsets_hold(body, data) if r.status_code == 200 else True
    run.samples.append(Sample(sent - started, kind, r.status_code, seconds, code, r.headers.get("retry-after"), ok))


async def _watch_memory(pid: int | None, started: float, run: Run, every_s: float = 5.0) -> None:
    if pid is None:
        return
    while True:
        child = graph_child(pid)
        graph_mb = _rss_mb(child) if child is not None else None
        run.memory.append(MemorySample(time.monotonic() - started, _rss_mb(pid), graph_mb))
        await asyncio.sleep(every_s)


async def drive(url: str, pid: int | None, rate: float, duration: float, seed: int, label: str) -> Run:
    """Poisson arrivals at ``rate``/s for ``duration`` s; waits for the last answers (up to a minute)."""
    pool = bodies(seed)
    rng = random.Random(seed + 1)
    run = Run(rate, duration)
    before = rejections(url)
    limits = httpx.Limits(max_connections=2048, max_keepalive_connections=256, keepalive_expiry=2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        started = time.monotonic()
        watcher = asyncio.create_task(_watch_memory(pid, started, run))
        tasks: set[asyncio.Task[None]] = set()
        next_at = 0.0
        i = 0
        with tqdm(total=int(duration), desc=label, unit="s", leave=False) as bar:
            while next_at < duration:
                await asyncio.sleep(max(0.0, started + next_at - time.monotonic()))
                kind, body = pool[i % len(pool)]
                task = asyncio.create_task(_one(client, kind, body, started, run))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
                next_at += rng.expovariate(rate)
                bar.n = min(int(time.monotonic() - started), int(duration))
                bar.refresh()
        if tasks:
            await asyncio.wait(tasks, timeout=60)
        run.memory.append(MemorySample(time.monotonic() - started, *_current_memory(pid)))
        watcher.cancel()
    after = rejections(url)
    run.rejections = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return run


def _current_memory(pid: int | None) -> tuple[float | None, float | None]:
    if pid is None:
        return None, None
    child = graph_child(pid)
    return _rss_mb(pid), (_rss_mb(child) if child is not None else None)


# ---------------------------------------------------------------------------------------------- report
def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(value: float) -> str:
    return "–" if value != value else f"{value * 1000:.0f}"


def _per_minute(samples: list[MemorySample]) -> list[MemorySample]:
    """The first sample of every minute, and the last one."""
    picked = [m for i, m in enumerate(samples) if i == 0 or int(m.at // 60) > int(samples[i - 1].at // 60)]
    return picked + samples[-1:] if samples and picked[-1] is not samples[-1] else picked


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}"


def summarize(run: Run) -> dict[str, Any]:
    s = run.samples
    ok = [x for x in s if x.status == 200]
    refused = [x for x in s if x.status == 503]
    window = 60.0 if run.duration >= 180 else run.duration / 3
    first = [x.seconds for x in ok if x.sent < window]
    last = [x.seconds for x in ok if x.sent >= run.duration - window]
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in ("short", "question_only", "long"):
        mine = [x for x in s if x.kind == kind]
        answered = [x.seconds for x in mine if x.status == 200]
        refusals = [x.seconds for x in mine if x.status == 503]
        by_kind[kind] = {
            "requests": len(mine),
            "statuses": dict(Counter(str(x.status) for x in mine)),
            "p50_s": _pct(answered, 0.5),
            "p99_s": _pct(answered, 0.99),
            "refusal_p50_s": _pct(refusals, 0.5),
            "refusal_p99_s": _pct(refusals, 0.99),
        }
    mem = [m for m in run.memory if m.service_mb is not None]
    graph = [m for m in run.memory if m.graph_mb is not None]
    after_window = [m for m in mem if m.at >= window] or mem[-1:]
    return {
        "offered_rate": run.rate,
        "duration_s": run.duration,
        "requests": len(s),
        "statuses": dict(Counter(str(x.status) if x.status is not None else x.code.split(":")[0] for x in s)),
        "codes": dict(Counter(x.code for x in s if x.code)),
        "goodput_rps": len(ok) / run.duration,
        "share_503": len(refused) / max(len(s), 1),
        "http_500": sum(1 for x in s if x.status == 500),
        "other_5xx": sum(1 for x in s if x.status is not None and x.status >= 500 and x.status not in (500, 503)),
        "cut_connections": sum(1 for x in s if x.code.startswith("cut:")),
        "connect_errors": sum(1 for x in s if x.code.startswith("connect:")),
        "retry_after_missing": sum(1 for x in refused if not x.retry_after),
        "offsets_wrong": sum(1 for x in ok if not x.offsets_ok),
        "p50_s": _pct([x.seconds for x in ok], 0.5),
        "p99_s": _pct([x.seconds for x in ok], 0.99),
        "first_window_s": window,
        "first_p50_s": _pct(first, 0.5),
        "first_p99_s": _pct(first, 0.99),
        "last_p50_s": _pct(last, 0.5),
        "last_p99_s": _pct(last, 0.99),
        "refusal_p50_s": _pct([x.seconds for x in refused], 0.5),
        "refusal_p99_s": _pct([x.seconds for x in refused], 0.99),
        "refusal_max_s": max((x.seconds for x in refused), default=float("nan")),
        "by_kind": by_kind,
        "rejections": run.rejections,
        "service_mb_first": mem[0].service_mb if mem else None,
        "service_mb_after_first_window": after_window[0].service_mb if after_window else None,
        "graph_mb_after_first_window": after_window[0].graph_mb if after_window else None,
        "service_mb_last": mem[-1].service_mb if mem else None,
        "service_mb_max": max((m.service_mb or 0 for m in mem), default=None),
        "graph_mb_first": graph[0].graph_mb if graph else None,
        "service_mb_per_minute": [round(m.service_mb or 0) for m in _per_minute(mem)],
        "graph_mb_per_minute": [round(m.graph_mb or 0) for m in _per_minute(graph)],
        "graph_mb_last": graph[-1].graph_mb if graph else None,
    }


def print_report(summary: dict[str, Any]) -> None:
    x = summary
    print(f"\noffered {x['offered_rate']:g} req/s for {x['duration_s']:g} s: {x['requests']} requests")
    print(f"statuses {x['statuses']}  codes {x['codes']}")
    print(
        f"goodput {x['goodput_rps']:.2f} req/s, 503 share {x['share_503']:.1%}, HTTP 500 {x['http_500']}, "
        f"cut connections {x['cut_connections']}, 503 without Retry-After {x['retry_after_missing']}, "
        f"offsets wrong {x['offsets_wrong']}"
    )
    print(
        f"answered p50/p99 {_ms(x['p50_s'])}/{_ms(x['p99_s'])} ms; first {x['first_window_s']:g} s "
        f"{_ms(x['first_p50_s'])}/{_ms(x['first_p99_s'])} ms, last {_ms(x['last_p50_s'])}/{_ms(x['last_p99_s'])} ms"
    )
    print(f"time to 503 p50/p99/max {_ms(x['refusal_p50_s'])}/{_ms(x['refusal_p99_s'])}/{_ms(x['refusal_max_s'])} ms")
    print("| kind | requests | statuses | p50 ms | p99 ms | 503 in p50/p99 ms |\n|---|---|---|---|---|---|")
    for kind, k in x["by_kind"].items():
        print(
            f"| {kind} | {k['requests']} | {k['statuses']} | {_ms(k['p50_s'])} | {_ms(k['p99_s'])} | "
            f"{_ms(k['refusal_p50_s'])}/{_ms(k['refusal_p99_s'])} |"
        )
    print(
        f"service RSS MB start/after {x['first_window_s']:g} s/end {_mb(x['service_mb_first'])}/"
        f"{_mb(x['service_mb_after_first_window'])}/{_mb(x['service_mb_last'])} (max {_mb(x['service_mb_max'])}); "
        f"graph child {_mb(x['graph_mb_first'])}/{_mb(x['graph_mb_after_first_window'])}/{_mb(x['graph_mb_last'])}; "
        f"rejections {x['rejections']}"
    )
    print(f"RSS per minute, service {x['service_mb_per_minute']} MB, graph child {x['graph_mb_per_minute']} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running service (default: start one with the default settings)")
    parser.add_argument("--pid", type=int, help="the running service's pid, for memory (with --url)")
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second (Poisson arrivals)")
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (per rate with --capacity)")
    parser.add_argument("--capacity", action="store_true", help="one run per --rates value on the same service")
    parser.add_argument("--rates", default="1,1.5,2,2.5,3,4", help="offered rates for --capacity")
    parser.add_argument("--rest", type=float, default=10, help="seconds between capacity steps")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the started service")
    parser.add_argument("--json", type=Path, help="write the summaries here")
    args = parser.parse_args()

    proc = None
    if args.url:
        url, pid = args.url, args.pid
    else:
        env = dict(item.split("=", 1) for item in args.env)
        proc, url, log_path = start_service(env)
        pid = proc.pid
        print(f"service pid {pid} at {url} (log {log_path}), graph child pid {graph_child(pid)}")
    try:
        for _, body in bodies(args.seed + 99, 12):  # warm-up, not measured
            httpx.post(f"{url}/answer", json=body, timeout=120)
        rates = [float(r) for r in args.rates.split(",")] if args.capacity else [args.rate]
        summaries = []
        for n, rate in enumerate(rates):
            if n:
                time.sleep(args.rest)
            run = asyncio.run(drive(url, pid, rate, args.duration, args.seed + n, f"{rate:g} req/s"))
            summary = summarize(run)
            summaries.append(summary)
            print_report(summary)
        if args.capacity:
            print("\n| offered req/s | goodput req/s | 503 share | p50 ms | p99 ms | HTTP 500 | cut |")
            print("|---|---|---|---|---|---|---|")
            for x in summaries:
                print(
                    f"| {x['offered_rate']:g} | {x['goodput_rps']:.2f} | {x['share_503']:.1%} | "
                    f"{_ms(x['p50_s'])} | {_ms(x['p99_s'])} | {x['http_500']} | {x['cut_connections']} |"
                )
        if args.json:
            args.json.write_text(json.dumps(summaries, indent=2, default=str))
    finally:
        if proc is not None:
            proc.terminate()
            code = proc.wait(60)
            print(f"service exited with {code}")


if __name__ == "__main__":
    main()
