"""SIGTERM drains: readyz 503, new requests 503 + Retry-After, in-flight ones finish, graph child stopped, exit 0."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.config import Settings
from app.drain import DrainingServer
from app.main import create_app
from app.qa.reader import Reader, WindowJob, WindowPrediction
from bench import traffic
from kg.embedded import free_port
from tests.e2e.conftest import RunningService, start_service, wait_for_graph, wait_until_ready

QUESTION = {"question": "What is the fee?", "contexts": [{"text": "The card replacement fee is 5 pounds."}]}


class GatedReader(Reader):
    """A real reader whose forward waits while the gate is closed, to hold a request in flight."""

    gate = threading.Event()
    entered = threading.Event()

    def forward(self, jobs: Sequence[WindowJob]) -> list[WindowPrediction]:
        self.entered.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return super().forward(jobs)


@dataclass
class InProcessServer:
    url: str
    server: DrainingServer
    thread: threading.Thread


@pytest.fixture
def draining_server(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Iterator[InProcessServer]:
    grace_s: float = request.param
    GatedReader.gate.set()
    port = free_port()
    app = create_app(
        Settings(model_path=tiny_model_dir, port=port, cpu_threads=1),
        reader_factory=lambda st: GatedReader(st.model_path, device="cpu"),
    )
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", timeout_graceful_shutdown=5)
    server = DrainingServer(config, app, grace_s=grace_s)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_until_ready(url)
    yield InProcessServer(url, server, thread)
    GatedReader.gate.set()
    server.should_exit = True
    thread.join(30)


def _hold_one_request(running: InProcessServer, pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    GatedReader.entered.clear()
    GatedReader.gate.clear()
    in_flight = pool.submit(httpx.post, f"{running.url}/answer", json=QUESTION, timeout=30)
    assert GatedReader.entered.wait(10), "the request never reached the model"
    return in_flight


@pytest.mark.parametrize("draining_server", [20.0], indirect=True)
def test_drain_refuses_new_work_and_lets_the_request_in_flight_finish(draining_server: InProcessServer) -> None:
    url = draining_server.url
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = _hold_one_request(draining_server, pool)
        draining_server.server.handle_exit(signal.SIGTERM, None)  # what the signal handler calls
        deadline = time.monotonic() + 5
        while (ready := httpx.get(f"{url}/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "readyz never turned 503"
            time.sleep(0.02)
        assert ready.status_code == 503 and ready.json()["status"] == "draining" and "retry-after" in ready.headers
        assert httpx.get(f"{url}/healthz").status_code == 200, "still alive while draining"
        refused = httpx.post(f"{url}/answer", json=QUESTION)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
        assert int(refused.headers["retry-after"]) >= 1 and refused.headers["connection"] == "close"
        assert draining_server.thread.is_alive(), "waits for the request in flight"
        GatedReader.gate.set()
        finished = in_flight.result(timeout=20)
    assert finished.status_code == 200 and finished.json()["answers"], finished.text
    draining_server.thread.join(20)
    assert not draining_server.thread.is_alive(), "the server stops once nothing is in flight"


@pytest.mark.parametrize("draining_server", [1.5], indirect=True)
def test_a_request_still_waiting_when_the_grace_period_ends_gets_503_not_a_cut(
    draining_server: InProcessServer,
) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = _hold_one_request(draining_server, pool)
        signalled = time.monotonic()
        draining_server.server.handle_exit(signal.SIGTERM, None)
        stuck = in_flight.result(timeout=20)  # the model is still blocked: the drain has to give up on it
        answered_after = time.monotonic() - signalled
        GatedReader.gate.set()
    assert stuck.status_code == 503 and stuck.json()["error"]["code"] == "shutting_down", stuck.text
    assert "retry-after" in stuck.headers
    assert answered_after < 1.5, "answered within the grace period"
    draining_server.thread.join(20)
    assert not draining_server.thread.is_alive()


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass
class Outcome:
    sent: float
    done: float
    status: int | None  # None: the connection was cut
    code: str = ""
    retry_after: str | None = None


@pytest.fixture
def loaded_service(tiny_model_dir: Path, tmp_path: Path) -> Iterator[RunningService]:
    running = start_service(
        tiny_model_dir,
        tmp_path / "service.log",
        VQA_DRAIN_GRACE_S="10",
        VQA_KG_ENABLED="true",
        VQA_KG_DATA_DIR=str(tmp_path / "graph"),
        VQA_LOG_LEVEL="info",
    )
    wait_for_graph(running)
    yield running
    if running.process.poll() is None:
        running.process.kill()


def test_sigterm_under_16_clients_drains_without_cutting_a_connection(loaded_service: RunningService) -> None:
    service = loaded_service
    java = [pid for pid in _children(service.process.pid) if b"ArcadeDB" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(java) == 1, "the embedded graph runs as a child process"
    outcomes: list[Outcome] = []

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            while True:
                body = traffic.long_request(rng, 6_000) if rng.random() < 0.5 else traffic.short_request(rng)
                sent = time.monotonic()
                try:
                    r = await http.post("/answer", json=body)
                except httpx.ConnectError:
                    return  # nothing listens any more: the service has gone, no request was lost
                except httpx.TransportError as exc:
                    outcomes.append(Outcome(sent, time.monotonic(), None, repr(exc)))  # cut
                    return
                code = r.json().get("error", {}).get("code", "") if r.status_code != 200 else ""
                outcomes.append(Outcome(sent, time.monotonic(), r.status_code, code, r.headers.get("retry-after")))
                if code == "shutting_down":
                    return  # like a load balancer: this replica is going away
                if r.status_code == 503:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))

    async def scenario() -> float:
        clients = [asyncio.create_task(client(seed)) for seed in range(16)]
        await asyncio.sleep(4)  # under load
        signalled = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
        return signalled

    signalled = asyncio.run(scenario())
    exit_code = service.process.wait(timeout=30)
    exited_after = time.monotonic() - signalled
    log = service.log_tail()
    assert exit_code == 0, f"exit code {exit_code}\n{log}"
    assert exited_after < 10 + 5, f"exited {exited_after:.1f} s after SIGTERM (grace 10 s)\n{log}"
    cut = [o for o in outcomes if o.status is None]
    cuts = [(round(o.sent - signalled, 3), round(o.done - signalled, 3), o.code) for o in cut]
    assert cut == [], f"{len(cut)} connections cut (sent, failed after SIGTERM; error): {cuts}\n{log}"
    assert {o.status for o in outcomes} <= {200, 503}, {o.status for o in outcomes}
    assert all(o.retry_after for o in outcomes if o.status == 503)
    drained = [o for o in outcomes if o.status == 200 and o.sent < signalled < o.done]
    assert drained, "requests in flight at SIGTERM finished with 200"
    deadline = time.monotonic() + 5
    while _alive(java[0]):
        assert time.monotonic() < deadline, f"graph child {java[0]} still running after the service exited"
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{service.process.pid}/stat") or not _alive(service.process.pid)
