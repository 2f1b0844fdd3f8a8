"""``components/monitoring``, added to the base as an operator would: its standard objects validate, Prometheus
(in the namespace ``monitoring``) reaches every service's metrics and nothing else, the PodMonitor selects every
service pod on a port it has, and each alert parses and names only metrics Fog exports."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from k8s_manifests import KUBERNETES_VERSION, Manifests, allows, containers, pod_labels, render, tool
from prometheus_client import REGISTRY

from fog_shared.subjects import SERVICES

OPERATOR_API = "monitoring.coreos.com/v1"
SEVERITIES = {"critical", "warning"}
#: what each kind of metric family is exposed as (prometheus_client drops a counter's ``_total`` from its name)
_EXPOSED_AS = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}


@pytest.fixture(scope="module")
def monitored(k8s_copy: Path) -> Manifests:
    overlay = k8s_copy / "overlays" / "monitored"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": "fog",
        "resources": ["../../base"],
        "components": ["../../components/network-policies", "../../components/monitoring"],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return Manifests("monitored", overlay, render(overlay))


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every metric name Fog's services expose: each service's app imports all it records."""
    for service in SERVICES:
        __import__(f"fog_{service}.app")
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in _EXPOSED_AS.get(family.type, ("",))}
    return names


def _rules(manifests: Manifests) -> Iterator[dict[str, Any]]:
    (rule,) = manifests.of_kind("PrometheusRule")
    for group in rule["spec"]["groups"]:
        yield from group["rules"]


def _metrics_named(expr: str) -> list[str]:
    names: list[str] = []

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.append(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def test_its_standard_objects_validate_strictly(monitored: Manifests, tmp_path: Path) -> None:
    standard = [doc for doc in monitored.docs if doc["apiVersion"] != OPERATOR_API]
    out_file = tmp_path / "monitored.yaml"
    out_file.write_text(yaml.safe_dump_all(standard))
    command = [tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(out_file)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {doc["kind"] for doc in monitored.docs if doc["apiVersion"] == OPERATOR_API} == {
        "PodMonitor", "PrometheusRule",
    }  # fmt: skip


def test_prometheus_scrapes_every_service_and_reaches_nothing_else(monitored: Manifests) -> None:
    policies = monitored.of_kind("NetworkPolicy")
    (monitor,) = monitored.of_kind("PodMonitor")
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    selector = monitor["spec"]["selector"]["matchLabels"]
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    for service in SERVICES:
        workload = monitored.get("Deployment", service)
        labels = pod_labels(workload)
        assert selector.items() <= labels.items(), f"the PodMonitor misses {service}"
        ports = {port["name"]: port["containerPort"] for c in containers(workload, init=False) for port in c["ports"]}
        assert ports[endpoint["port"]] == 9090
        assert allows(policies, "Ingress", labels, prometheus, 9090, "monitoring"), f"prometheus -> {service}"
        assert not allows(policies, "Ingress", labels, {"some": "pod"}, 9090, "elsewhere"), f"anyone -> {service}"
    for workload in monitored.workloads():
        if workload["metadata"]["name"] in SERVICES:
            continue
        labels = pod_labels(workload)
        assert not selector.items() <= labels.items(), workload["metadata"]["name"]
        for port in (4222, 8080, 8222, 9090):
            assert not allows(policies, "Ingress", labels, prometheus, port, "monitoring"), workload["metadata"]["name"]


def test_every_alert_parses_and_names_only_metrics_fog_exports(monitored: Manifests, exported: set[str]) -> None:
    alerts = list(_rules(monitored))
    assert len({rule["alert"] for rule in alerts}) == len(alerts), "alert names are unique"
    for rule in alerts:
        named = _metrics_named(rule["expr"])
        assert named, rule["alert"]
        unknown = [name for name in named if name not in exported]
        assert not unknown, f"{rule['alert']} names metrics Fog does not export: {unknown}"
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["description"], rule["alert"]
        if "for" in rule:
            promql_parser.parse_duration(rule["for"])


def test_a_misspelt_metric_is_caught(exported: set[str]) -> None:
    """The check above means something: a metric Fog does not export is told apart."""
    assert "fog_scheduler_leading" in exported
    assert "fog_http_request_seconds_bucket" in exported
    assert not set(_metrics_named("sum(fog_scheduler_leadin)")) <= exported
    with pytest.raises(ValueError, match="parenthesis"):
        promql_parser.parse("sum(rate(fog_scheduler_placements_total[5m])")
