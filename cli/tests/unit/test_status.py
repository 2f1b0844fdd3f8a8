"""``fogctl status`` against a scripted gateway: every replica's checks in a table, exit 1 unless all is in order."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from scripted_gateway import script_gateway
from typer.testing import CliRunner

from fogctl.__main__ import app
from fogctl.session import Session

URL = "http://gateway.test"
runner = CliRunner()


def replica(service: str, name: str, **checks: str) -> dict[str, Any]:
    all_checks = {"nats": "ok", "background_tasks": "ok"} | checks
    return {"service": service, "replica": name, "checks": all_checks, "facts": {}}


def answer_with(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, status: dict[str, Any]) -> None:
    def gateway(request: httpx.Request) -> httpx.Response:
        assert (request.url.path, request.headers["Authorization"]) == ("/v1/admin/status", "Bearer a1")
        return httpx.Response(200, json=status)

    script_gateway(monkeypatch, gateway, URL)
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    monkeypatch.setenv("COLUMNS", "200")
    Session(URL, "root@example.org", "a1", "r1").save()


def test_all_in_order_exits_0_and_names_each_replica_and_what_it_leads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    leader = replica("scheduler", "scheduler-7f9c:1") | {"facts": {"leads_placement": True}}
    standby = replica("scheduler", "scheduler-2b1d:1") | {"facts": {"leads_placement": False}}
    answer_with(
        monkeypatch, tmp_path, {"ok": True, "services": [{"service": "scheduler", "replicas": [leader, standby]}]}
    )
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "scheduler-7f9c:1" in result.output
    assert "leads_placement=true" in result.output
    assert "leads_placement=false" in result.output


def test_a_failing_check_or_a_service_without_replicas_exits_1_and_says_which(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dead = replica("registry", "registry-1:1", background_tasks="ended: liveness")
    services = [{"service": "registry", "replicas": [dead]}, {"service": "messaging", "replicas": []}]
    answer_with(monkeypatch, tmp_path, {"ok": False, "services": services})
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert "background_tasks: ended: liveness" in result.output
    assert "none answered" in result.output

    as_json = runner.invoke(app, ["status", "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.output)["services"][1] == {"service": "messaging", "replicas": []}


def test_fogctl_says_its_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"fogctl {importlib.metadata.version('fogctl')}\n")


def test_the_shell_completes_fogctls_commands() -> None:
    env = {**os.environ, "_FOGCTL_COMPLETE": "complete_bash", "COMP_WORDS": "fogctl job su", "COMP_CWORD": "2"}
    fogctl = Path(sys.executable).with_name("fogctl")  # the installed command: completion goes by its name
    completed = subprocess.run([str(fogctl)], env=env, capture_output=True, text=True, check=False)
    assert completed.stdout.split() == ["submit"], completed.stderr
