"""Deploy configs checked by the real tools: compose-spec schema, promtool, Kubernetes schemas, Grafana queries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings
from app.main import create_app
from tests.conftest import wait_for_readyz

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    assert path, f"{name} is not installed: scripts/test.sh installs it (apt package prometheus / pip extras)"
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120)


def test_compose_file_matches_the_compose_spec(tmp_path: Path) -> None:
    ok = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    broken["services"]["api"]["deploy"]["resources"]["reservations"]["gpus"] = 1  # not a compose-spec field
    bad_file = tmp_path / "docker-compose.yml"
    bad_file.write_text(yaml.safe_dump(broken))
    assert _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad_file)).returncode != 0


def test_compose_wires_gpu_cpu_profiles_healthchecks_and_loopback_ports() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"api", "api-cpu", "neo4j", "kg-load", "postgres", "prometheus", "grafana"}
    assert services["api"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["api"]["profiles"] == ["gpu"] and services["api-cpu"]["profiles"] == ["cpu"]
    assert services["neo4j"]["image"].startswith("neo4j:5") and "healthcheck" in services["neo4j"]
    assert services["kg-load"]["depends_on"]["neo4j"]["condition"] == "service_healthy"
    assert services["api"]["depends_on"]["kg-load"]["condition"] == "service_completed_successfully"
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:") and "pg_isready" in str(postgres["healthcheck"])
    for api in ("api", "api-cpu"):
        assert services[api]["depends_on"]["postgres"]["condition"] == "service_healthy"
        store_url = services[api]["environment"]["VQA_STORE_URL"]
        assert store_url.startswith("postgresql+psycopg://vqa@postgres:"), "the password comes from secrets.env"
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    for source in ("./deploy/prometheus", "./deploy/grafana/provisioning", "./deploy/grafana/dashboards"):
        assert (REPO / source).is_dir()


def test_dockerfile_has_both_targets_a_non_root_user_and_a_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM .* AS cpu$", text, re.M) and re.search(r"^FROM .* AS gpu$", text, re.M)
    finals = [block for block in re.split(r"^FROM ", text, flags=re.M) if re.match(r".* AS (cpu|gpu)\n", block)]
    assert len(finals) == 2
    for block in finals:
        assert "USER vqa" in block and "HEALTHCHECK" in block and "/healthz" in block
        assert "build-essential" not in block and "gcc" not in block, "no compilers in the final image"
    # Users' builds use the real upstream bases and the CPU torch; scripts/container_test.sh overrides the arguments.
    defaults = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, re.M))
    assert defaults["PYTHON_IMAGE"] == "python:3.11-slim-bookworm"
    assert defaults["CUDA_IMAGE"].startswith("nvidia/cuda:") and "runtime" in defaults["CUDA_IMAGE"]
    assert defaults["TORCH_VERSION"].endswith("+cpu") and defaults["TORCH_INDEX_URL"].endswith("/whl/cpu")


def test_promtool_accepts_the_config_and_rules_and_rejects_a_broken_rule(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    config = _run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _run(promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert rules.returncode == 0 and "9 rules found" in rules.stdout, rules.stdout + rules.stderr
    broken = tmp_path / "alerts.yml"
    broken.write_text((DEPLOY / "prometheus" / "alerts.yml").read_text().replace("> 0.05", "> > 0.05", 1))
    assert _run(promtool, "check", "rules", str(broken)).returncode != 0


def test_the_accuracy_alerts_fire_on_a_drop_and_not_before(tmp_path: Path) -> None:
    """promtool's rule unit tests: live accuracy below 70% over 30+ verdicts, a canary fall of 10 F1 points."""
    promtool = _tool("promtool")
    tests = _run(promtool, "test", "rules", str(DEPLOY / "prometheus" / "alerts.test.yml"))
    assert tests.returncode == 0, tests.stdout + tests.stderr
    alerts = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    for name, weakened in (("live", alerts.replace("(vqa_live_accuracy) < 0.7", "(vqa_live_accuracy) < 0.4")),
                           ("canary", alerts.replace("[1d] offset 30m)) - 10", "[1d] offset 30m)) - 20"))):  # fmt: skip
        assert weakened != alerts
        (tmp_path / name).mkdir()
        (tmp_path / name / "alerts.yml").write_text(weakened)
        shutil.copy(DEPLOY / "prometheus" / "alerts.test.yml", tmp_path / name)
        assert _run(promtool, "test", "rules", str(tmp_path / name / "alerts.test.yml")).returncode != 0, name


def test_kubernetes_manifests_validate_strictly(tmp_path: Path) -> None:
    validator = _tool("kubernetes-validate")
    manifests = sorted(str(p) for p in (DEPLOY / "k8s").glob("*.yaml"))
    ok = _run(validator, "--strict", *manifests)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    deployment = yaml.safe_load((DEPLOY / "k8s" / "20-deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["terminationGracePeriodSeconds"] > 10 + 30, "longer than preStop + the drain (VQA_DRAIN_GRACE_S)"
    settings = yaml.safe_load((DEPLOY / "k8s" / "10-configmap.yaml").read_text())["data"]
    secret = yaml.safe_load((DEPLOY / "k8s" / "11-secret.yaml").read_text())["stringData"]
    assert settings["VQA_STORE_URL"].startswith("postgresql+psycopg://vqa@"), "no password in the ConfigMap"
    assert {"VQA_STORE_PASSWORD", "VQA_ADMIN_KEYS"} <= set(secret)
    container["readinessProbe"]["httpGett"] = container["readinessProbe"].pop("httpGet")
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    assert _run(validator, "--strict", str(bad)).returncode != 0


def _exported_series(tiny_model_dir: Path) -> set[str]:
    """Every series name the service can export, from a live /metrics (families without samples included)."""
    with TestClient(create_app(Settings(model_path=tiny_model_dir))) as client:
        wait_for_readyz(client, 30)
        text = client.get("/metrics").text
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"], "gauge": [""]}
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def test_every_dashboard_and_alert_query_names_an_exported_metric(tiny_model_dir: Path) -> None:
    exported = _exported_series(tiny_model_dir)
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "vertical-qa.json").read_text())
    assert dashboard["panels"], "the dashboard has panels"
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    expressions += [
        r["expr"]
        for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for r in g["rules"]
    ]
    used = {name for expr in expressions for name in re.findall(r"\bvqa_[a-z0-9_]+", expr)}
    assert used, "queries reference vqa_ metrics"
    assert used <= exported, f"queries name metrics the service does not export: {sorted(used - exported)}"
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    topics = (
        "requests per second",
        "p99",
        "errors",
        "queue",
        "batch",
        "abstention",
        "rule hits",
        "graph",
        "model",
        "accuracy",
        "live accuracy",
        "canary f1",
        "feedback",
    )
    for topic in topics:
        assert topic in titles
