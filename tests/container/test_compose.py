"""``docker compose up`` of docker-compose.yml (profile cpu: api-cpu, graph, postgres, kg-load, prometheus) with
tests/container/compose.override.yml, which swaps the images this machine cannot pull for local equivalents and puts
every service on the host network. The stack must come up in dependency order, kg-load must load the pack, the API
must report the graph ok and enrich answers from it, answers and feedback must land in PostgreSQL, and Prometheus must
scrape the API and load the alert rules.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import yaml
from neo4j import GraphDatabase

from domain.pack import DomainPack
from kg.embedded import free_port
from kg.loader import graph_counts, loaded_version
from tests.conftest import PACK_DIR, REPO_ROOT
from tests.container.conftest import Engine, http_status, wait_until

SERVICES = ("api-cpu", "neo4j", "postgres", "kg-load", "prometheus")


@dataclass
class Stack:
    engine: Engine
    command: list[str]
    env: dict[str, str]
    api_url: str
    prometheus_url: str
    bolt_uri: str
    password: str
    postgres_dsn: str

    def compose(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.command, *args], capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO_ROOT
        )
        if check and done.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def logs(self, *services: str) -> str:
        done = self.compose("logs", "--no-color", *services, check=False)
        return done.stdout + done.stderr

    def container(self, service: str) -> dict[str, Any]:
        """``compose ps`` of one service's container, stopped ones included."""
        out = self.compose("ps", "--all", "--format", "json", service).stdout
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert len(rows) == 1, out
        return rows[0]


@pytest.fixture(scope="module")
def stack(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("compose")
    password, store_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    (work / "secrets.env").write_text(
        f"NEO4J_AUTH=neo4j/{password}\nVQA_KG_PASSWORD={password}\n"
        f"POSTGRES_PASSWORD={store_password}\nVQA_STORE_PASSWORD={store_password}\n"
        f"VQA_API_KEYS=\nVQA_ADMIN_KEYS=\nGF_SECURITY_ADMIN_PASSWORD={secrets.token_urlsafe(24)}\n"
    )
    api_port, bolt_port, graph_http_port, prometheus_port, postgres_port = (free_port() for _ in range(5))
    # The repository's Prometheus config and alert rules, with the one target that named the compose network.
    prometheus_dir = work / "prometheus"
    shutil.copytree(REPO_ROOT / "deploy" / "prometheus", prometheus_dir)
    config = yaml.safe_load((prometheus_dir / "prometheus.yml").read_text())
    config["scrape_configs"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{api_port}"]}]
    (prometheus_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus_dir.chmod(0o755)
    for path in prometheus_dir.iterdir():
        path.chmod(0o644)  # read by the container's `nobody`
    env = {
        **os.environ,
        "COMPOSE_PROFILES": "cpu",  # the environment wins over the repository's .env (gpu)
        "VQA_CT_SECRETS": str(work / "secrets.env"),
        "VQA_CT_API_PORT": str(api_port),
        "VQA_CT_BOLT_PORT": str(bolt_port),
        "VQA_CT_GRAPH_HTTP_PORT": str(graph_http_port),
        "VQA_CT_PROMETHEUS_PORT": str(prometheus_port),
        "VQA_CT_POSTGRES_PORT": str(postgres_port),
        "VQA_CT_PROMETHEUS_CONFIG": str(prometheus_dir),
        "VQA_CT_GRAPH_IMAGE": engine.graph_image,
        "VQA_CT_PROMETHEUS_IMAGE": engine.prometheus_image,
        "VQA_CT_POSTGRES_IMAGE": engine.postgres_image,
    }
    command = [
        engine.docker, "compose", "--project-name", f"vqa-ct-{api_port}",
        "--file", str(REPO_ROOT / "docker-compose.yml"),
        "--file", str(REPO_ROOT / "tests" / "container" / "compose.override.yml"),
    ]  # fmt: skip
    running = Stack(
        engine, command, env, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{prometheus_port}",
        f"bolt://127.0.0.1:{bolt_port}", password,
        f"host=127.0.0.1 port={postgres_port} dbname=vqa user=vqa password={store_password}",
    )  # fmt: skip
    try:
        started = time.monotonic()
        # up returns once the graph is healthy, kg-load has exited 0 and the API container has started.
        up = running.compose("up", "--detach", "--no-build", "--pull", "never", *SERVICES, timeout=600, check=False)
        assert up.returncode == 0, f"compose up failed:\n{up.stdout}\n{up.stderr}\n{running.logs()[-6000:]}"

        def ready() -> bool:
            state = running.container("api-cpu")["State"]
            assert state == "running", f"api-cpu is {state}:\n{running.logs('api-cpu')[-4000:]}"
            return http_status(f"{running.api_url}/readyz") == 200

        wait_until("the API's /readyz 200", ready, timeout_s=300, on_timeout=lambda: running.logs("api-cpu")[-4000:])
        engine.record("compose_up_to_api_ready_s", round(time.monotonic() - started, 1))
        yield running
    finally:
        (engine.artifacts / "compose.log").write_text(running.logs())
        running.compose("down", "--volumes", "--remove-orphans", "--timeout", "60", timeout=180, check=False)
        left = engine.run("ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project=vqa-ct-{api_port}")
        assert not left.stdout.strip(), "compose down left containers behind"


def test_kg_load_ran_once_and_loaded_the_pack_into_the_graph(stack: Stack) -> None:
    kg_load = stack.container("kg-load")
    assert kg_load["State"] == "exited" and kg_load["ExitCode"] == 0, kg_load
    pack = DomainPack.load(PACK_DIR)
    assert f"pack {pack.name} v{pack.version}:" in stack.logs("kg-load")
    with GraphDatabase.driver(stack.bolt_uri, auth=("neo4j", stack.password)) as driver:
        assert loaded_version(driver, "neo4j", pack.name) == pack.version
        assert graph_counts(driver, "neo4j") == (len(pack.graph.entities), len(pack.graph.relations))


def test_the_api_reports_the_graph_ok_and_answers_with_its_facts(stack: Stack) -> None:
    wait_until(
        "/readyz graph ok",
        lambda: httpx.get(f"{stack.api_url}/readyz", timeout=5).json().get("graph") == "ok",
        timeout_s=120,
        on_timeout=lambda: stack.logs("api-cpu")[-4000:],
    )
    response = httpx.post(f"{stack.api_url}/answer", json={"question": "How much is a card replacement?"}, timeout=60)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["graph_status"] == "ok"
    facts = {fact["entity"]["id"]: fact["properties"] for fact in data["facts"]}
    assert facts["fee:card-replacement"]["amount"] == 5, facts


def test_the_api_container_turns_healthy_by_its_own_healthcheck(stack: Stack) -> None:
    wait_until(
        "api-cpu healthy",
        lambda: stack.container("api-cpu").get("Health") == "healthy",
        timeout_s=120,
        on_timeout=lambda: json.dumps(stack.container("api-cpu")),
    )


def test_answers_and_feedback_are_stored_in_postgres(stack: Stack) -> None:
    assert httpx.get(f"{stack.api_url}/readyz", timeout=5).json()["store"] == "ok"
    answered = httpx.post(f"{stack.api_url}/answer", json={"question": "How long do I have to dispute?"}, timeout=60)
    assert answered.status_code == 200, answered.text
    request_id = answered.json()["request_id"]
    verdict = {"request_id": request_id, "verdict": "incorrect", "corrected_answer": "120 days"}
    stored = httpx.post(f"{stack.api_url}/feedback", json=verdict, timeout=30)
    assert stored.status_code in (200, 201), stored.text
    with psycopg.connect(stack.postgres_dsn, connect_timeout=10) as connection:
        feedback = connection.execute(
            "SELECT f.verdict, f.corrected_answer FROM feedback f JOIN answered_requests a USING (request_id)"
            " WHERE request_id = %s",
            (request_id,),
        ).fetchall()
        migrated = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    assert feedback == [("incorrect", "120 days")]
    assert migrated, "the service migrated the schema at start-up"


def _query(stack: Stack, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{stack.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def test_prometheus_scrapes_the_api_and_loads_the_alert_rules(stack: Stack) -> None:
    httpx.post(f"{stack.api_url}/answer", json={"question": "How long do I have to dispute a payment?"}, timeout=60)
    wait_until(
        "Prometheus has up == 1 and a vqa_requests_total sample for /answer",
        lambda: (
            [r["value"][1] for r in _query(stack, 'up{job="vqa"}')] == ["1"]
            and bool(_query(stack, 'vqa_requests_total{route="/answer",status="200"} >= 1'))
        ),
        timeout_s=120,  # scrape_interval is 15 s
        on_timeout=lambda: stack.logs("prometheus")[-3000:],
    )
    groups = httpx.get(f"{stack.prometheus_url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    alerts = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert loaded == {rule["alert"] for group in alerts for rule in group["rules"]}, "alerts.yml is what runs"
