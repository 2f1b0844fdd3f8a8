"""Rendering Fog's Kubernetes manifests offline (kustomize) and looking through what they hold.

Shared by the tests in ``tests/deploy`` (on pytest's pythonpath, as the gateway's ``gateway_stack`` is).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = ("kind", "production")
#: the Kubernetes version the manifests are validated against: kind's node image (deploy/kind)
KUBERNETES_VERSION = "1.34.0"

Doc = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def tool(name: str) -> str:
    """A command-line tool of this environment (the venv's bin is not necessarily on PATH)."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: run `make setup` (requirements-dev.txt installs it)")
    return found


@dataclass
class Manifests:
    """One rendered kustomization: every object, and lookups the checks share."""

    name: str
    path: Path
    docs: list[Doc]

    def of_kind(self, kind: str) -> list[Doc]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> Doc:
        for doc in self.of_kind(kind):
            if doc["metadata"]["name"] == name:
                return doc
        raise KeyError(f"no {kind} {name} in {self.name}")

    def workloads(self) -> list[Doc]:
        return [d for d in self.docs if d["kind"] in WORKLOAD_KINDS]

    def config_map(self, prefix: str) -> Doc:
        """A generated ConfigMap by its name before kustomize's hash suffix."""
        (found,) = [d for d in self.of_kind("ConfigMap") if d["metadata"]["name"].rsplit("-", 1)[0] == prefix]
        return found


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def containers(workload: Doc, *, init: bool = True) -> list[Doc]:
    spec = pod_spec(workload)
    return [*(spec.get("initContainers", []) if init else []), *spec["containers"]]


def render(kustomization: Path) -> list[Doc]:
    command = [tool("kubectl"), "kustomize", str(kustomization)]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


# -- NetworkPolicy evaluation (matchLabels only, which is all the manifests use) ----------------
NAMESPACE = "fog"


def _matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    assert not (selector or {}).get("matchExpressions"), "the evaluator understands matchLabels only"
    return all(labels.get(k) == v for k, v in (selector or {}).get("matchLabels", {}).items())


def _selects(policy: Doc, labels: dict[str, str]) -> bool:
    return _matches(policy["spec"]["podSelector"], labels)


def _peer_matches(peer: Doc, namespace: str, labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return False  # pods are reached by selectors here; an ipBlock is checked as "outside"
    if "namespaceSelector" in peer:
        in_namespace = _matches(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        in_namespace = namespace == NAMESPACE
    return in_namespace and _matches(peer.get("podSelector"), labels)


def _port_allowed(rule: Doc, port: int) -> bool:
    ports = rule.get("ports")
    return not ports or any(p.get("port") == port and p.get("protocol", "TCP") == "TCP" for p in ports)


def _rule_allows(rule: Doc, direction: str, namespace: str, labels: dict[str, str], port: int) -> bool:
    peers = rule.get("from" if direction == "Ingress" else "to")
    peer_ok = not peers or any(_peer_matches(peer, namespace, labels) for peer in peers)
    return peer_ok and _port_allowed(rule, port)


def allows(
    policies: list[Doc], direction: str, pod: dict[str, str], peer: dict[str, str], port: int, peer_ns: str = NAMESPACE
) -> bool:
    """Whether some policy selecting ``pod`` allows traffic with ``peer`` on ``port``.

    Kubernetes semantics: a pod selected by any policy of that direction is isolated, and then
    only what some selecting policy's rule allows gets through.
    """
    key = "ingress" if direction == "Ingress" else "egress"
    for policy in policies:
        if direction not in policy["spec"].get("policyTypes", []) or not _selects(policy, pod):
            continue
        if any(_rule_allows(rule, direction, peer_ns, peer, port) for rule in policy["spec"].get(key, [])):
            return True
    return False


def ingress_from_outside(policy: Doc) -> bool:
    """Whether a policy lets in traffic from outside the namespace (or from anywhere)."""
    for rule in policy["spec"].get("ingress", []):
        peers = rule.get("from")
        if not peers or any("ipBlock" in p or "namespaceSelector" in p for p in peers):
            return True
    return False
