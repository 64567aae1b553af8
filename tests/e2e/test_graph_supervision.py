"""The embedded graph child under the running service: noticed dead or frozen without traffic, reaped, restarted,
gone with its parent (kill -9 included), and never shown its password on a command line.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from neo4j import GraphDatabase
from prometheus_client.parser import text_string_to_metric_families

from kg.embedded import EmbeddedGraph
from kg.loader import graph_counts
from tests.e2e.conftest import RunningService, start_service, stop_service, wait_for_graph

HEALTH_INTERVAL_S = 0.5
UNRESPONSIVE_RESTART_S = 6.0
NOTICE_WITHIN_S = 5.0  # "within a few seconds": interval + ping timeout (2 x 0.5 s) + slack for a loaded machine


def graph_child(service: RunningService) -> psutil.Process:
    """The ArcadeDB server the service started (a child process running com.arcadedb.server.ArcadeDBServer)."""
    for child in psutil.Process(service.process.pid).children(recursive=True):
        try:
            if "com.arcadedb.server.ArcadeDBServer" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError(f"the service has no graph child:\n{service.log_tail()}")


def _graph_status(service: RunningService) -> str:
    return str(httpx.get(f"{service.url}/readyz", timeout=5).json()["graph"])


def _metric(service: RunningService, name: str) -> float:
    text = httpx.get(f"{service.url}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def _within(seconds: float, condition: Callable[[], bool], what: str, service: RunningService) -> float:
    """Seconds it took until ``condition()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"{what} not within {seconds:.0f} s:\n{service.log_tail()}"
        time.sleep(0.1)
    return time.monotonic() - started


def _gone_or_reaped(pid: int) -> bool:
    """True once ``pid`` is neither running nor a zombie waiting for its parent to reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_DEAD
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def supervised(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    folder = tmp_path_factory.mktemp("supervised")
    running = start_service(
        tiny_model_dir,
        folder / "service.log",
        VQA_KG_ENABLED="true",
        VQA_KG_DATA_DIR=str(folder / "graph"),
        VQA_KG_HEALTH_INTERVAL_S=str(HEALTH_INTERVAL_S),
        VQA_KG_TIMEOUT_MS="500",
        VQA_KG_UNRESPONSIVE_RESTART_S=str(UNRESPONSIVE_RESTART_S),
    )
    wait_for_graph(running, timeout_s=90)
    yield running
    stop_service(running)


def test_the_graph_password_is_not_on_any_command_line(supervised: RunningService, tmp_path: Path) -> None:
    child = graph_child(supervised)
    password = Path(child.cwd(), ".root-password").read_text().strip()
    assert len(password) >= 16
    for pid in (child.pid, supervised.process.pid):
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert password.encode() not in command_line, f"the root password is in /proc/{pid}/cmdline"
    assert oct(Path(child.cwd(), ".root-password").stat().st_mode & 0o777) == "0o600"


def test_the_graph_servers_memory_and_cpu_are_exported(supervised: RunningService) -> None:
    child = graph_child(supervised)
    rss = _metric(supervised, "vqa_kg_process_resident_memory_bytes")
    assert rss == pytest.approx(child.memory_info().rss, rel=0.5), "the graph server's memory, not the service's"
    assert 30e6 < rss < 2e9
    assert _metric(supervised, "vqa_kg_process_cpu_seconds_total") > 0


def test_a_killed_graph_is_noticed_reaped_and_restarted_without_traffic(supervised: RunningService) -> None:
    old = graph_child(supervised)
    restarts_before = _metric(supervised, "vqa_kg_restarts_total")
    os.kill(old.pid, signal.SIGKILL)
    _within(NOTICE_WITHIN_S, lambda: _graph_status(supervised) == "unavailable", "death noticed", supervised)
    assert _metric(supervised, "vqa_kg_up") == 0
    _within(NOTICE_WITHIN_S, lambda: _gone_or_reaped(old.pid), "the killed child reaped (no zombie)", supervised)
    _within(90, lambda: _graph_status(supervised) == "ok", "the graph restarted", supervised)
    assert graph_child(supervised).pid != old.pid
    assert _metric(supervised, "vqa_kg_up") == 1
    assert _metric(supervised, "vqa_kg_restarts_total") == restarts_before + 1
    answer = httpx.post(
        f"{supervised.url}/answer",
        json={"question": "How much is a card replacement?", "contexts": [{"text": "A new card costs £5."}]},
        timeout=30,
    ).json()
    assert answer["graph_status"] == "ok"
    assert any(f["entity"]["id"] == "fee:card-replacement" for f in answer["facts"])


def test_a_frozen_graph_is_noticed_without_traffic_then_replaced(supervised: RunningService) -> None:
    frozen = graph_child(supervised)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        _within(NOTICE_WITHIN_S, lambda: _graph_status(supervised) == "unavailable", "frozen graph noticed", supervised)
        assert _metric(supervised, "vqa_kg_up") == 0
        # still frozen after VQA_KG_UNRESPONSIVE_RESTART_S: killed, reaped and replaced by a fresh server
        _within(UNRESPONSIVE_RESTART_S + 90, lambda: _graph_status(supervised) == "ok", "graph replaced", supervised)
        assert _gone_or_reaped(frozen.pid), "the frozen server is gone"
        assert graph_child(supervised).pid != frozen.pid
    finally:
        if psutil.pid_exists(frozen.pid):
            os.kill(frozen.pid, signal.SIGCONT)


def test_kill_9_of_the_service_takes_the_graph_with_it_and_frees_the_lock(tiny_model_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "graph"
    service = start_service(
        tiny_model_dir, tmp_path / "service.log", VQA_KG_ENABLED="true", VQA_KG_DATA_DIR=str(data_dir)
    )
    try:
        wait_for_graph(service, timeout_s=90)
        child = graph_child(service)
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(10)
        _within(20, lambda: _gone_or_reaped(child.pid), "the graph child gone with its parent", service)
    finally:
        stop_service(service)
    # the next start in the same folder (what the restarted service does) finds the database unlocked
    graph = EmbeddedGraph(root=data_dir)
    try:
        graph.start(timeout_s=90)
        with GraphDatabase.driver(graph.uri, auth=(graph.user, graph.password)) as driver:
            entities, _ = graph_counts(driver, graph.database)
        assert entities > 0, "the pack the service loaded is still there"
    finally:
        graph.stop()
