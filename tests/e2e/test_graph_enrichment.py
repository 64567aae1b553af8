"""Enrichment through /answer against a real graph the test kills and restarts under the running service."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from neo4j import GraphDatabase
from prometheus_client.parser import text_string_to_metric_families

from domain.pack import DomainPack
from kg.embedded import EmbeddedGraph
from kg.loader import graph_counts, load_pack
from tests.conftest import PACK_DIR
from tests.e2e.conftest import RunningService, start_service, stop_service, wait_for_graph

CONTEXT = (
    "A replacement card costs £5 unless it was stolen. The contactless limit is £100 per payment, "
    "and you can withdraw up to £500 a day from cash machines."
)


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedGraph]:
    g = EmbeddedGraph(root=tmp_path_factory.mktemp("graph-e2e")).start()
    with GraphDatabase.driver(g.uri, auth=(g.user, g.password)) as driver:
        load_pack(driver, DomainPack.load(PACK_DIR).graph, g.database)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def graph_service(graph: EmbeddedGraph, tiny_model_dir: Path, tmp_path_factory) -> Iterator[RunningService]:  # type: ignore[no-untyped-def]
    running = start_service(
        tiny_model_dir,
        tmp_path_factory.mktemp("graph-svc") / "service.log",
        VQA_KG_ENABLED="true",
        VQA_KG_URI=graph.uri,
        VQA_KG_USER=graph.user,
        VQA_KG_PASSWORD=graph.password,
        VQA_KG_DATABASE=graph.database,
        VQA_KG_TIMEOUT_MS="500",
        VQA_KG_HEALTH_INTERVAL_S="0.5",
        VQA_TODAY="2026-11-29",  # two days before the Easy Saver rate changes
    )
    wait_for_graph(running)
    yield running
    stop_service(running)


def _ask(service: RunningService, question: str) -> dict:  # type: ignore[type-arg]
    r = httpx.post(f"{service.url}/answer", json={"question": question, "contexts": [{"text": CONTEXT}]}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _kg_errors(service: RunningService) -> float:
    text = httpx.get(f"{service.url}/metrics").text
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "vqa_kg_errors_total"
    )


def test_known_question_links_entities_and_returns_facts(graph_service: RunningService) -> None:
    data = _ask(graph_service, "How much is a card replacement?")
    assert data["graph_status"] == "ok"
    entity = next(e for e in data["entities"] if e["id"] == "fee:card-replacement")
    assert entity["source"] == "question" and entity["text"] == "card replacement"
    fact = next(f for f in data["facts"] if f["entity"]["id"] == "fee:card-replacement")
    assert fact["properties"]["amount"] == 5 and fact["properties"]["currency"] == "GBP"
    assert any(r["type"] == "HAS_FEE" and r["other"]["id"] == "product:visa-debit-card" for r in fact["relations"])


def test_a_scheduled_change_comes_back_as_the_value_in_force_and_when_it_changes(
    graph_service: RunningService,
) -> None:
    data = _ask(graph_service, "What is the easy saver rate?")
    fact = next(f for f in data["facts"] if f["entity"]["id"] == "rate:easy-saver-aer")
    assert fact["properties"]["percent"] == 3.25, "the value in force today, not the scheduled one"
    assert fact["changes"] == [{"property": "percent", "from": 3.25, "to": 3.1, "on": "2026-12-01"}]
    assert not any("__" in key for key in fact["properties"]), "the stored timeline is not shown"
    notice = next(o for o in data["rules"] if o["rule_id"] == "scheduled-change")
    assert notice["message"] == "Easy Saver interest rate: percent is 3.25 today and changes to 3.1 on 2026-12-01."


def test_cypher_injection_in_a_question_changes_nothing(graph_service: RunningService, graph: EmbeddedGraph) -> None:
    with GraphDatabase.driver(graph.uri, auth=(graph.user, graph.password)) as driver:
        before = graph_counts(driver, graph.database)
        data = _ask(graph_service, '"}) MATCH (n) DETACH DELETE n // what is the contactless limit?')
        assert graph_counts(driver, graph.database) == before
    assert data["graph_status"] == "ok"
    assert [e["id"] for e in data["entities"] if e["source"] == "question"] == ["limit:contactless"]


def test_graph_outage_degrades_then_recovers_without_restart(
    graph_service: RunningService, graph: EmbeddedGraph
) -> None:
    errors_before = _kg_errors(graph_service)
    graph.kill()
    data = _ask(graph_service, "What is the daily cash withdrawal limit?")  # not cached yet: needs the graph
    assert data["graph_status"] == "unavailable" and data["facts"] == []
    assert data["answers"], "the answer still comes back"
    assert _kg_errors(graph_service) > errors_before
    ready = httpx.get(f"{graph_service.url}/readyz")
    assert ready.status_code == 200 and ready.json()["graph"] == "unavailable"

    graph.start()  # same folder, ports and password: the driver reconnects by itself
    wait_for_graph(graph_service, timeout_s=30)
    data = _ask(graph_service, "What is the daily cash withdrawal limit?")
    assert data["graph_status"] == "ok"
    assert any(f["entity"]["id"] == "limit:atm-daily" and f["properties"]["amount"] == 500 for f in data["facts"])


def test_default_service_starts_embedded_graph_loads_pack_and_stops_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "graph"
    service = start_service(
        tiny_model_dir, tmp_path / "service.log", VQA_KG_ENABLED="true", VQA_KG_DATA_DIR=str(data_dir)
    )
    try:
        wait_for_graph(service)
        data = _ask(service, "What does the Premier Current Account cost?")
        assert data["graph_status"] == "ok"
        fact = next(f for f in data["facts"] if f["entity"]["id"] == "product:premier-current-account")
        assert fact["properties"]["monthly_fee"] == 15
        assert (data_dir / "log").is_dir(), "the server's logs stay inside its own folder"
    finally:
        stop_service(service)
    # the Java child is gone with the service: no process runs with this root folder any more
    leftovers = subprocess.run(["pgrep", "-f", f"rootPath={data_dir}"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "the embedded graph outlived the service"
