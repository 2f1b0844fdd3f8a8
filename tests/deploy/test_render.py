"""Every kustomization renders, and what it renders is valid against the Kubernetes schemas."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_manifests import DEPLOY, KUBERNETES_VERSION, OVERLAYS, Manifests, tool


@pytest.mark.parametrize("name", ["base", *OVERLAYS])
def test_renders_and_validates_strictly(rendered: dict[str, Manifests], tmp_path: Path, name: str) -> None:
    manifests = rendered[name]
    out_file = tmp_path / f"{name}.yaml"
    out_file.write_text(yaml.safe_dump_all(manifests.docs))
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(out_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Unknown kinds only warn: there must be none (no custom resources without a schema).
    assert "WARN" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_kind_runs_the_kubernetes_version_the_manifests_are_validated_against() -> None:
    cluster = yaml.safe_load((DEPLOY / "kind" / "cluster.yaml").read_text())
    images = {node["image"] for node in cluster["nodes"]}
    assert images == {f"kindest/node:v{KUBERNETES_VERSION}"}


def test_validation_rejects_what_the_schemas_forbid(tmp_path: Path) -> None:
    """The validator is strict: a misspelt field fails (so a pass above means something)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n"
        "spec: {selector: {a: b}, ports: [{port: 80, targetPort: http}], typo: 1}\n"
    )
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION, str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
