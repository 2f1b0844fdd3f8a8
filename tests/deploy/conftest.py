"""The Kubernetes manifests, rendered offline with kustomize, for the checks schemas cannot make.

Rendering works on a copy of ``deploy/k8s`` in which the kind overlay's Secret env files are
written by ``deploy/kind/make_secrets.py``, as ``make kind-up`` does: the real ones are git-ignored.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from k8s_manifests import DEPLOY, OVERLAYS, Manifests, render

from fog_shared.bus.permissions import PROVISIONER, all_permissions, password_variable
from fog_shared.bus.permissions import render as render_nats_users
from fog_shared.devservers import NatsServer
from fog_shared.subjects import SERVICES

NATS_USERS = (*SERVICES, PROVISIONER)


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/k8s with the kind Secrets' env files generated, as `make kind-up` does."""
    copy = tmp_path_factory.mktemp("deploy") / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(
        [sys.executable, str(DEPLOY / "kind" / "make_secrets.py"), str(copy / "overlays" / "kind" / "secrets")],
        check=True,
        capture_output=True,
    )
    return copy


@pytest.fixture(scope="session")
def rendered(k8s_copy: Path) -> dict[str, Manifests]:
    paths = {"base": k8s_copy / "base"} | {name: k8s_copy / "overlays" / name for name in OVERLAYS}
    return {name: Manifests(name, path, render(path)) for name, path in paths.items()}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Manifests]) -> Manifests:
    """Each overlay in turn: the checks hold for every cluster Fog is deployed to."""
    manifests: Manifests = rendered[request.param]
    return manifests


@pytest.fixture(scope="session")
def nats_passwords() -> dict[str, str]:
    return {user: secrets.token_hex(16) for user in NATS_USERS}


@pytest.fixture(scope="session")
def nats_with_users(tmp_path_factory: pytest.TempPathFactory, nats_passwords: dict[str, str]) -> Iterator[NatsServer]:
    """A real NATS server running the generated users, as the cluster's does."""
    server = NatsServer.on_free_ports(
        tmp_path_factory.mktemp("nats-users"), extra_config=render_nats_users(all_permissions())
    )
    with pytest.MonkeyPatch.context() as env:  # the server resolves $NATS_PASSWORD_<USER> from its environment
        for user, password in nats_passwords.items():
            env.setenv(password_variable(user), password)
        server.start()
    try:
        yield server
    finally:
        server.stop()
