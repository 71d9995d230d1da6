"""Prometheus and Grafana as compose runs them: the scrape config reaches the API and every
worker's metrics port, and every metric the provisioned dashboard queries is one the code
exports (a renamed metric breaks this test, not a dashboard in production)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Service

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_names(exposition: str) -> set[str]:
    """Every series name an exposition can hold, samples or not yet (labelled metrics start
    empty): counter ``x`` is ``x_total``, histogram ``x`` is ``x_bucket``, ``_count``, ``_sum``."""
    return {
        family.name + suffix
        for family in text_string_to_metric_families(exposition)
        for suffix in SUFFIXES.get(family.type, ("",))
    }


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_prometheus_scrapes_the_api_and_each_workers_metrics_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    api_port = services["api"]["command"][services["api"]["command"].index("--port") + 1]
    expected = {f"api:{api_port}"}
    for name in ("worker-cpu", "worker-gpu"):
        command = services[name]["command"]
        expected.add(f"{name}:{command[command.index('--metrics-port') + 1]}")
        # Bound to every interface inside its container, or Prometheus cannot reach it.
        assert services[name]["environment"]["FOPRO_WORKER_METRICS_HOST"] == "0.0.0.0"
    assert targets == expected
    mounted = " ".join(services["prometheus"]["volumes"])
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml" in mounted


def test_every_metric_the_dashboard_queries_is_exported(
    embedded_service: Service, compose: dict[str, Any]
) -> None:
    import workers.metrics  # noqa: F401  (registers the worker's metrics in this process)
    from app.main import app

    with TestClient(app) as client:
        exported = exported_names(client.get("/metrics").text)
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "fopro.json").read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in queries for name in re.findall(r"\bfopro_[a-z_]+\b", expr)}

    assert len(used) >= 8, used
    assert used <= exported, f"dashboard queries metrics nobody exports: {used - exported}"
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    for topic in ("jobs by state", "queue depth", "p99", "throughput"):
        assert topic in titles
    # Grafana is provisioned from the repository: the datasource the panels name exists.
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    uids = {source["uid"] for source in datasources["datasources"]}
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} <= uids
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "fopro.yml").read_text()
    )
    folder = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{folder}:ro" in compose["services"]["grafana"]["volumes"]
