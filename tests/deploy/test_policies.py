"""What the Kubernetes schemas do not check: Fog's operating rules for its workloads.

Every container is bounded, non-root, read-only and without capabilities; long-running ones are
probed; every workload survives drains one pod at a time; images are pinned; the network is
closed by default and opened just enough for each service; no Secret value is in the repository.
"""

from __future__ import annotations

import re
import subprocess

import pytest
from k8s_manifests import (
    REPO,
    Doc,
    Manifests,
    allows,
    containers,
    ingress_from_outside,
    pod_labels,
    pod_spec,
)

from fog_shared.provisioning import DATABASE_SERVICES
from fog_shared.subjects import SERVICES

LONG_RUNNING = ("Deployment", "StatefulSet")


def _every_container(overlay: Manifests) -> list[tuple[str, Doc, Doc]]:
    return [(w["metadata"]["name"], w, c) for w in overlay.workloads() for c in containers(w)]


def test_every_service_has_a_deployment_service_account_and_service(overlay: Manifests) -> None:
    for svc in SERVICES:
        deployment = overlay.get("Deployment", svc)
        assert pod_spec(deployment)["serviceAccountName"] == svc
        assert overlay.get("ServiceAccount", svc)["automountServiceAccountToken"] is False
        assert overlay.get("Service", svc)["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_every_container_has_requests_and_limits(overlay: Manifests) -> None:
    for workload, _, container in _every_container(overlay):
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            assert set(resources.get(bound, {})) >= {"cpu", "memory"}, f"{workload}/{container['name']}: {bound}"


def test_every_pod_runs_as_non_root_read_only_and_without_capabilities(overlay: Manifests) -> None:
    for workload in overlay.workloads():
        spec = pod_spec(workload)
        pod_security = spec.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, workload["metadata"]["name"]
        assert pod_security.get("runAsUser", 0) != 0, workload["metadata"]["name"]
        assert pod_security.get("seccompProfile") == {"type": "RuntimeDefault"}
        assert spec.get("automountServiceAccountToken") is False, workload["metadata"]["name"]
        for container in containers(workload):
            security = container.get("securityContext", {})
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert "add" not in security.get("capabilities", {}), where
            assert not security.get("privileged", False), where


def test_long_running_containers_are_probed(overlay: Manifests) -> None:
    for workload in overlay.workloads():
        if workload["kind"] not in LONG_RUNNING:
            continue
        for container in containers(workload, init=False):
            where = f"{workload['metadata']['name']}/{container['name']}"
            assert "readinessProbe" in container, where
            assert "livenessProbe" in container, where
            port_names = {p["name"] for p in container.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                http = container.get(probe, {}).get("httpGet")
                if http is not None:
                    assert http["port"] in port_names, f"{where}: {probe} on an undeclared port"


def test_fog_services_are_ready_only_when_their_dependencies_are(overlay: Manifests) -> None:
    for svc in SERVICES:
        (container,) = containers(overlay.get("Deployment", svc), init=False)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_every_long_running_workload_has_a_disruption_budget_that_allows_drains(overlay: Manifests) -> None:
    budgets = overlay.of_kind("PodDisruptionBudget")
    for workload in overlay.workloads():
        if workload["kind"] not in LONG_RUNNING:
            continue
        labels = pod_labels(workload)
        matching = [b for b in budgets if _selector_matches(b["spec"]["selector"], labels)]
        assert len(matching) == 1, f"{workload['metadata']['name']}: {len(matching)} budgets"
        spec = matching[0]["spec"]
        replicas = workload["spec"].get("replicas", 1)
        # A budget that allows no eviction blocks every node drain.
        assert spec.get("maxUnavailable", 0) >= 1 or spec.get("minAvailable", replicas) < replicas


def _selector_matches(selector: Doc, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.mark.parametrize("svc", ["gateway", "scheduler"])
def test_gateway_and_scheduler_scale_horizontally(overlay: Manifests, svc: str) -> None:
    hpa = overlay.get("HorizontalPodAutoscaler", svc)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc}
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    if overlay.name == "production":
        assert hpa["spec"]["minReplicas"] >= 2


def test_production_runs_two_replicas_of_each_service(rendered: dict[str, Manifests]) -> None:
    production = rendered["production"]
    scaled = {h["spec"]["scaleTargetRef"]["name"]: h for h in production.of_kind("HorizontalPodAutoscaler")}
    for svc in SERVICES:
        spec = production.get("Deployment", svc)["spec"]
        if svc in scaled:  # the autoscaler owns the count: the Deployment must not fight it on apply
            assert "replicas" not in spec, svc
            assert scaled[svc]["spec"]["minReplicas"] >= 2, svc
        else:
            assert spec["replicas"] >= 2, svc


def test_images_are_pinned(overlay: Manifests) -> None:
    for workload, _, container in _every_container(overlay):
        image: str = container["image"]
        name, _, tag = image.rpartition(":")
        assert name, f"{workload}: {image} has no tag"
        assert tag, f"{workload}: {image} has no tag"
        assert "/" not in tag, f"{workload}: {image} has no tag"
        assert tag != "latest", f"{workload}: {image}"


def test_the_kind_overlay_runs_the_images_make_kind_up_loads(rendered: dict[str, Manifests]) -> None:
    images = {c["image"] for w in rendered["kind"].workloads() for c in containers(w)}
    fog_images = {i for i in images if i.startswith("fog:")}
    assert fog_images == {"fog:kind"}
    makefile = (REPO / "Makefile").read_text()
    assert "-t fog:kind" in makefile


# -- network --------------------------------------------------------------------------------------
def _policies(overlay: Manifests) -> list[Doc]:
    return overlay.of_kind("NetworkPolicy")


def test_everything_is_denied_unless_allowed(overlay: Manifests) -> None:
    deny = overlay.get("NetworkPolicy", "default-deny")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_every_workload_is_covered_by_an_allowing_policy(overlay: Manifests) -> None:
    allowing = [p for p in _policies(overlay) if p["metadata"]["name"] not in ("default-deny", "allow-dns")]
    for workload in overlay.workloads():
        labels = pod_labels(workload)
        assert any(_selector_matches(p["spec"]["podSelector"], labels) for p in allowing), workload["metadata"]["name"]


def test_only_the_gateway_is_reachable_from_outside(overlay: Manifests) -> None:
    gateway = pod_labels(overlay.get("Deployment", "gateway"))
    for policy in _policies(overlay):
        if not ingress_from_outside(policy):
            continue
        selected = [w for w in overlay.workloads() if _selector_matches(policy["spec"]["podSelector"], pod_labels(w))]
        assert [w["metadata"]["name"] for w in selected] == ["gateway"], policy["metadata"]["name"]
        assert _selector_matches(policy["spec"]["podSelector"], gateway)
    exposed = [s for s in overlay.of_kind("Service") if s["spec"].get("type", "ClusterIP") != "ClusterIP"]
    assert [s["metadata"]["name"] for s in exposed] in ([], ["gateway"])


def test_the_world_reaches_the_gateway_and_nothing_else(overlay: Manifests) -> None:
    policies, anyone = _policies(overlay), {"some": "pod"}
    assert allows(policies, "Ingress", pod_labels(overlay.get("Deployment", "gateway")), anyone, 8080, "elsewhere")
    for workload in overlay.workloads():
        if workload["metadata"]["name"] != "gateway":
            assert not allows(policies, "Ingress", pod_labels(workload), anyone, 8080, "elsewhere")


def _postgres(overlay: Manifests) -> tuple[dict[str, str], str]:
    """PostgreSQL's pod labels and namespace: in the cluster on kind, CloudNativePG's in production."""
    if overlay.name == "production":
        return {"cnpg.io/cluster": "fog-db"}, "fog-db"
    return pod_labels(overlay.get("StatefulSet", "postgres")), "fog"


def test_each_service_reaches_nats_and_only_its_database_users_reach_postgres(overlay: Manifests) -> None:
    policies = _policies(overlay)
    nats = pod_labels(overlay.get("StatefulSet", "nats"))
    postgres, postgres_ns = _postgres(overlay)
    jobs = {name: pod_labels(overlay.get("Job", name)) for name in ("provision-streams", "provision-database")}
    for svc in SERVICES:
        pod = pod_labels(overlay.get("Deployment", svc))
        assert allows(policies, "Egress", pod, nats, 4222), f"{svc} -> nats"
        assert allows(policies, "Ingress", nats, pod, 4222), f"nats <- {svc}"
        reaches_db = allows(policies, "Egress", pod, postgres, 5432, postgres_ns)
        assert reaches_db == (svc in DATABASE_SERVICES), f"{svc} -> postgres"
        if overlay.name == "kind":
            assert allows(policies, "Ingress", postgres, pod, 5432) == (svc in DATABASE_SERVICES)
        for other in SERVICES:  # services talk through NATS only
            assert not allows(policies, "Egress", pod, pod_labels(overlay.get("Deployment", other)), 8080)
    assert allows(policies, "Egress", jobs["provision-streams"], nats, 4222)
    assert allows(policies, "Egress", jobs["provision-database"], postgres, 5432, postgres_ns)


def test_nats_servers_route_to_each_other(overlay: Manifests) -> None:
    nats = pod_labels(overlay.get("StatefulSet", "nats"))
    assert allows(_policies(overlay), "Egress", nats, nats, 6222)
    assert allows(_policies(overlay), "Ingress", nats, nats, 6222)


def test_every_pod_resolves_names(overlay: Manifests) -> None:
    dns = {"k8s-app": "kube-dns"}
    for workload in overlay.workloads():
        assert allows(_policies(overlay), "Egress", pod_labels(workload), dns, 53, "kube-system")


# -- secrets ---------------------------------------------------------------------------------------
def test_production_and_base_carry_no_secret(rendered: dict[str, Manifests]) -> None:
    for name in ("base", "production"):
        assert rendered[name].of_kind("Secret") == [], name


def test_no_secret_object_is_committed() -> None:
    tracked = subprocess.run(
        ["git", "ls-files", "deploy"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for path in tracked:
        if path.endswith((".yaml", ".yml")):
            assert not re.search(r"^kind:\s*Secret\b", (REPO / path).read_text(), re.MULTILINE), path


def test_the_kind_secret_files_are_ignored_by_git() -> None:
    probe = "deploy/k8s/overlays/kind/secrets/auth.env"
    assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=REPO, check=False).returncode == 0


def test_every_secret_a_workload_reads_exists_on_kind_with_that_key(rendered: dict[str, Manifests]) -> None:
    kind = rendered["kind"]
    secrets = {s["metadata"]["name"]: set(s["data"]) for s in kind.of_kind("Secret")}
    for workload, _, container in _every_container(kind):
        for ref in _secret_refs(container):
            assert ref["key"] in secrets.get(ref["name"], set()), f"{workload}: {ref}"


def test_every_secret_production_reads_is_documented(rendered: dict[str, Manifests]) -> None:
    """Production's Secrets are made by hand: docs/operations.md must name each one and its keys."""
    docs = (REPO / "docs" / "operations.md").read_text()
    for _, _, container in _every_container(rendered["production"]):
        for ref in _secret_refs(container):
            assert ref["name"] in docs, ref
            assert ref["key"] in docs, ref


def _secret_refs(container: Doc) -> list[Doc]:
    env = container.get("env", [])
    return [e["valueFrom"]["secretKeyRef"] for e in env if "secretKeyRef" in e.get("valueFrom", {})]
