"""``fog-agent join`` against a scripted gateway (httpx.MockTransport): register, keep the credential, refuse twice."""

from __future__ import annotations

import importlib.metadata
import json
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from fog_agent import join
from fog_agent.__main__ import app
from fog_agent.sandbox import policy
from fog_agent.state import NodeState
from fog_client import Capabilities, FogClient

URL = "http://gateway.test"
API_KEY, EMAIL, PASSWORD = "fogk_provider_key", "pat@example.org", "correct horse battery staple"
CAPABILITIES = Capabilities(cpu_cores=4, memory_bytes=8 * 2**30, disk_bytes=10**11, arch="x86_64", os="Linux 6.8")
NOW = "2030-01-02T03:04:05Z"


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": f"urn:fog:problem:{code}", "title": code.replace("_", " "), "status": status, "code": code}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class Gateway:
    """Registers nodes ``n1``, ``n2``… for the provider key or the provider's session; refuses anything else."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str | None, Any]] = []
        self.refuse_registration: httpx.Response | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body: dict[str, Any] = json.loads(request.content) if request.content else {}
        auth = request.headers.get("Authorization")
        self.requests.append((request.method, request.url.path, auth, body))
        match request.url.path:
            case "/v1/auth/login" if body == {"email": EMAIL, "password": PASSWORD}:
                return httpx.Response(200, json={"access_token": "a1", "refresh_token": "r1", "expires_in": 600})
            case "/v1/auth/login":
                return problem(401, "invalid_credentials")
            case "/v1/auth/logout":
                return httpx.Response(204)
            case "/v1/nodes" if self.refuse_registration is not None:
                return self.refuse_registration
            case "/v1/nodes" if auth in (f"Bearer {API_KEY}", "Bearer a1"):
                node_id = f"n{sum(1 for r in self.requests if r[1] == '/v1/nodes')}"
                return httpx.Response(201, json={"node": self.node(node_id, body), "credential": f"fogn_{node_id}"})
        return problem(401, "invalid_token")

    @staticmethod
    def node(node_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            **body, "id": node_id, "owner_id": "u1", "status": "down", "reputation": 0.5, "running_jobs": 0,
            "usage": None, "last_heartbeat_at": None, "registered_at": NOW, "status_changed_at": NOW,
        }  # fmt: skip

    def registrations(self) -> list[tuple[str | None, Any]]:
        return [(auth, body) for _, path, auth, body in self.requests if path == "/v1/nodes"]


def fake_fingerprint(state_dir: Path, networks: Sequence[str]) -> Capabilities:
    return CAPABILITIES.model_copy(update={"networks": list(networks)})


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    fake = Gateway()

    def new_client(base_url: str, *, api_key: str | None = None) -> FogClient:
        assert base_url == URL
        return FogClient(base_url, api_key=api_key, transport=httpx.MockTransport(fake))

    monkeypatch.setattr(join, "new_client", new_client)
    monkeypatch.setattr(join, "fingerprint", fake_fingerprint)
    monkeypatch.setattr(join, "job_networks_from_env", lambda: ("host", "none"))
    monkeypatch.delenv("FOG_API_KEY", raising=False)
    return fake


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "agent-state"
    monkeypatch.setenv("FOG_AGENT_STATE_DIR", str(directory))
    return directory


runner = CliRunner()


def fog_agent(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_joining_with_an_api_key_registers_and_keeps_the_credential_privately(
    gateway: Gateway, state_dir: Path
) -> None:
    code, out, err = fog_agent(
        "join", "--gateway", URL, "--api-key", API_KEY, "--name", "edge-1",
        "--label", "zone=a", "--label", "gpu=", "--region", "eu-west",
    )  # fmt: skip
    assert code == 0, err
    [(auth, body)] = gateway.registrations()
    assert auth == f"Bearer {API_KEY}"
    assert body == {
        "name": "edge-1",
        "capabilities": {**CAPABILITIES.model_dump(mode="json"), "networks": ["host", "none"]},
        "labels": {"zone": "a", "gpu": ""},
        "region": "eu-west",
        "location": None,
    }
    assert NodeState.load() == NodeState(URL, "n1", "edge-1", "fogn_n1", networks=("host", "none"))
    assert stat.S_IMODE((state_dir / "node.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert out == "n1\n"
    assert (
        "Joined http://gateway.test as node n1 (edge-1): 4 cores, 8.0 GiB, 93.1 GiB of disk for jobs, jobs with network"
        " host or none" in err
    )
    assert "fogn_n1" not in out + err
    assert API_KEY not in out + err


def test_the_api_key_may_come_from_the_environment(
    gateway: Gateway, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOG_API_KEY", API_KEY)
    code, _, err = fog_agent("join", "--gateway", URL)
    assert code == 0, err
    [(auth, body)] = gateway.registrations()
    assert auth == f"Bearer {API_KEY}"
    assert 1 <= len(body["name"]) <= 64  # the host name by default


def test_joining_with_email_and_password_logs_in_registers_and_logs_out(gateway: Gateway, state_dir: Path) -> None:
    code, out, err = fog_agent("join", "--gateway", URL, "--email", EMAIL, "--password-stdin", stdin=f"{PASSWORD}\n")
    assert code == 0, err
    assert [(path, auth) for _, path, auth, _ in gateway.requests] == [
        ("/v1/auth/login", None),
        ("/v1/nodes", "Bearer a1"),
        ("/v1/auth/logout", None),  # no session left behind
    ]
    assert PASSWORD not in out + err
    assert (state_dir / "node.json").exists()


def test_joining_again_is_refused_unless_forced(gateway: Gateway, state_dir: Path) -> None:
    assert fog_agent("join", "--gateway", URL, "--api-key", API_KEY)[0] == 0
    code, _, err = fog_agent("join", "--gateway", URL, "--api-key", API_KEY)
    assert code == 1
    assert "already joined http://gateway.test as node n1" in err
    assert "--force" in err
    assert len(gateway.registrations()) == 1

    code, out, err = fog_agent("join", "--gateway", URL, "--api-key", API_KEY, "--force")
    assert code == 0, err
    assert out == "n2\n"
    assert "previous node n1 stays registered; `fogctl node deregister n1`" in err
    loaded = NodeState.load()
    assert loaded is not None
    assert (loaded.node_id, loaded.credential) == ("n2", "fogn_n2")


def test_a_refused_registration_exits_1_and_saves_nothing(gateway: Gateway, state_dir: Path) -> None:
    gateway.refuse_registration = problem(403, "forbidden")
    code, _, err = fog_agent("join", "--gateway", URL, "--api-key", API_KEY)
    assert code == 1
    assert f"{URL} refused: 403 forbidden [forbidden]" in err
    assert "provider" in err
    assert not (state_dir / "node.json").exists()


def test_networks_this_machine_cannot_give_jobs_are_refused_before_registering(
    gateway: Gateway, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(join, "job_networks_from_env", policy.job_networks_from_env)
    monkeypatch.setenv("FOG_AGENT_JOB_NETWORKS", "host,bridge")
    code, _, err = fog_agent("join", "--gateway", URL, "--api-key", API_KEY)
    assert code == 1
    assert "cannot offer this machine: FOG_AGENT_JOB_NETWORKS='host,bridge'" in err
    assert gateway.registrations() == []
    assert not (state_dir / "node.json").exists()


def test_a_wrong_password_exits_1(gateway: Gateway, state_dir: Path) -> None:
    code, out, err = fog_agent("join", "--gateway", URL, "--email", EMAIL, "--password-stdin", stdin="hunter2\n")
    assert code == 1
    assert "invalid_credentials" in err
    assert "hunter2" not in out + err
    assert gateway.registrations() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gateway", URL], "--api-key"),
        (["--gateway", URL, "--api-key", API_KEY, "--email", EMAIL], "not both"),
        (["--gateway", URL, "--api-key", API_KEY, "--password-stdin"], "--password-stdin needs --email"),
        (["--gateway", URL, "--api-key", API_KEY, "--label", "no-equals"], "not key=value"),
        (["--gateway", "gateway.test", "--api-key", API_KEY], "not an http(s) gateway URL"),
    ],
)
def test_bad_usage_exits_2_before_any_call(gateway: Gateway, state_dir: Path, args: list[str], message: str) -> None:
    code, _, err = fog_agent("join", *args)
    assert code == 2
    assert message in " ".join(err.replace("│", " ").split())  # typer's error box wraps lines
    assert gateway.requests == []


def test_run_without_joining_says_so(state_dir: Path) -> None:
    code, _, err = fog_agent("run")
    assert code == 1
    assert "not joined yet" in err
    assert "fog-agent join" in err


def test_the_agent_says_its_version_as_its_node_will_show_it() -> None:
    result = runner.invoke(app, ["--version"])
    assert (result.exit_code, result.stdout) == (0, f"fog-agent {importlib.metadata.version('fog-agent')}\n")
