"""``fogctl node list|get|drain|resume|deregister`` with the saved session, against a scripted gateway
(MockTransport)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from scripted_gateway import script_gateway
from typer.testing import CliRunner

from fogctl.__main__ import app
from fogctl.formats import human_bytes
from fogctl.session import Session

URL = "http://gateway.test"
EMAIL = "pat@example.org"
NOW = "2030-01-02T03:04:05Z"
GIB = 2**30


def node(node_id: str, **changes: Any) -> dict[str, Any]:
    capabilities = {
        "cpu_cores": 8, "memory_bytes": 16 * GIB, "disk_bytes": 500 * GIB, "arch": "x86_64", "os": "Linux 6.8",
        "gpus": [{"model": "Tesla T4", "memory_bytes": 15 * GIB}],
    }  # fmt: skip
    body = {
        "id": node_id, "name": f"edge-{node_id}", "owner_id": "u1", "status": "ready", "capabilities": capabilities,
        "labels": {"zone": "a"}, "region": "eu-west", "location": {"lat": 52.37, "lon": 4.89}, "reputation": 0.5,
        "running_jobs": 0, "usage": {"cpu_percent": 12.5, "memory_used_bytes": 4 * GIB, "disk_used_bytes": 100 * GIB},
        "last_heartbeat_at": NOW, "registered_at": NOW, "status_changed_at": NOW, "agent": "fog-agent/0.4.0",
    }  # fmt: skip
    return {**body, **changes}


def problem(status: int, code: str) -> httpx.Response:
    body = {"type": f"urn:fog:problem:{code}", "title": code.replace("_", " "), "status": status, "code": code}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json"})


class Gateway:
    """Nodes ``n1`` and ``n2``; access token ``a<current>`` is the valid one, refresh with ``r<current>`` rotates."""

    def __init__(self) -> None:
        self.current = 1
        never_heard = node("n2", region=None, last_heartbeat_at=None, status="down", agent=None)
        never_heard["contribution"] = {"attempts_succeeded": 1200, "attempts_failed": 34, "attempts_lost": 2,
                                       "run_s": 9000.0, "cpu_s": 45.0}  # fmt: skip
        self.nodes = {"n1": node("n1"), "n2": never_heard}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/auth/refresh":
            if json.loads(request.content) != {"refresh_token": f"r{self.current}"}:
                return problem(401, "invalid_grant")
            self.current += 1
            pair = {"access_token": f"a{self.current}", "refresh_token": f"r{self.current}", "expires_in": 600}
            return httpx.Response(200, json=pair)
        if request.headers.get("Authorization") != f"Bearer a{self.current}":
            return problem(401, "invalid_token")
        match request.method, request.url.path.split("/")[3:]:
            case "GET", []:
                return httpx.Response(200, json={"items": list(self.nodes.values())})
            case "GET", [node_id] if node_id in self.nodes:
                return httpx.Response(200, json=self.nodes[node_id])
            case "POST", [node_id, "drain"] if node_id in self.nodes:
                self.nodes[node_id]["status"] = "draining"
                return httpx.Response(200, json=self.nodes[node_id])
            case "PATCH", [node_id] if node_id in self.nodes:
                labels = self.nodes[node_id].setdefault("labels", {})
                for key, value in json.loads(request.content)["labels"].items():
                    if value is None:
                        labels.pop(key, None)
                    else:
                        labels[key] = value
                return httpx.Response(200, json=self.nodes[node_id])
            case "POST", [node_id, "resume"] if node_id in self.nodes:
                self.nodes[node_id]["status"] = "ready"
                return httpx.Response(200, json=self.nodes[node_id])
            case "DELETE", [node_id] if node_id in self.nodes:
                del self.nodes[node_id]
                return httpx.Response(204)
        return problem(404, "not_found")


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    fake = Gateway()
    script_gateway(monkeypatch, fake, URL)
    return fake


@pytest.fixture
def logged_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Session:
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "fog"))
    monkeypatch.setenv("COLUMNS", "200")  # a table as wide as its rows, whatever the test runner's terminal
    saved = Session(URL, EMAIL, "a1", "r1")
    saved.save()
    return saved


runner = CliRunner()


def fogctl(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def cells(out: str, border: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.split(border)[1:-1]] for line in out.splitlines() if line.startswith(border)]


def test_list_shows_a_table_of_the_nodes(gateway: Gateway, logged_in: Session) -> None:
    code, out, err = fogctl("node", "list")
    assert code == 0, err
    header = ["id", "name", "status", "cores", "memory", "region", "reputation", "jobs run", "last heartbeat", "agent"]
    assert cells(out, "┃") == [header]
    assert cells(out, "│") == [
        ["n1", "edge-n1", "ready", "8", "16.0 GiB", "eu-west", "0.50", "0", "2030-01-02 03:04:05 UTC", "0.4.0"],
        ["n2", "edge-n2", "down", "8", "16.0 GiB", "-", "0.50", "1234", "never", "-"],
    ]


def test_list_as_json_sends_the_filters(gateway: Gateway, logged_in: Session) -> None:
    code, out, err = fogctl("node", "list", "--json", "--status", "ready", "--label", "zone=a", "--label", "gpu=t4")
    assert code == 0, err
    listed = json.loads(out)
    assert [n["id"] for n in listed["items"]] == ["n1", "n2"]
    assert listed["items"][0]["capabilities"]["gpus"] == [{"model": "Tesla T4", "memory_bytes": 15 * GIB}]
    params = gateway.requests[-1].url.params
    assert (params["status"], params.get_list("label")) == ("ready", ["zone=a", "gpu=t4"])


def test_a_label_filter_must_be_key_value(gateway: Gateway, logged_in: Session) -> None:
    code, _, err = fogctl("node", "list", "--label", "zone")
    assert code == 2
    assert "not key=value" in err
    assert gateway.requests == []


def test_get_shows_one_node(gateway: Gateway, logged_in: Session) -> None:
    code, out, err = fogctl("node", "get", "n1")
    assert code == 0, err
    lines = out.splitlines()
    assert "status            ready since 2030-01-02 03:04:05 UTC" in lines
    assert "memory            16.0 GiB" in lines
    assert "gpus              Tesla T4 (15.0 GiB)" in lines
    assert "job_networks      host" in lines  # a node registered before nodes named them
    assert "labels            zone=a" in lines
    assert "usage             cpu 12.5%, memory 4.0 GiB, disk 100.0 GiB" in lines
    assert "contributed       no job yet" in lines  # from a gateway older than contributions, too
    code, out, err = fogctl("node", "get", "n2")
    assert "contributed       1234 attempts ran (1200 succeeded, 34 failed, 2 lost): 2.5 h run, 45 s of CPU" in out

    code, out, err = fogctl("node", "get", "n2", "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["id"], shown["status"], shown["region"], shown["last_heartbeat_at"]) == ("n2", "down", None, None)


def test_drain_resume_and_deregister(gateway: Gateway, logged_in: Session) -> None:
    code, _, err = fogctl("node", "drain", "n1")
    assert code == 0, err
    assert "Node n1 (edge-n1) is draining." in err
    assert (gateway.requests[-1].method, gateway.requests[-1].url.path) == ("POST", "/v1/nodes/n1/drain")

    code, _, err = fogctl("node", "resume", "n1")
    assert code == 0, err
    assert "Node n1 (edge-n1) is ready." in err
    assert (gateway.requests[-1].method, gateway.requests[-1].url.path) == ("POST", "/v1/nodes/n1/resume")

    code, _, err = fogctl("node", "deregister", "n1")
    assert code == 0, err
    assert "Deregistered node n1" in err
    assert (gateway.requests[-1].method, gateway.requests[-1].url.path) == ("DELETE", "/v1/nodes/n1")
    assert list(gateway.nodes) == ["n2"]


def test_an_unknown_node_exits_1_with_the_problem(gateway: Gateway, logged_in: Session) -> None:
    for command in ("get", "drain", "resume", "deregister"):
        code, _, err = fogctl("node", command, "n9")
        assert code == 1
        assert f"{URL} refused: 404 not found [not_found]" in err


def test_an_expired_access_token_is_refreshed_and_the_new_pair_saved(gateway: Gateway, logged_in: Session) -> None:
    gateway.current = 1
    Session(URL, EMAIL, "a0-expired", "r1").save()
    code, _, err = fogctl("node", "list", "--json")
    assert code == 0, err
    assert [r.url.path for r in gateway.requests] == ["/v1/nodes", "/v1/auth/refresh", "/v1/nodes"]
    assert Session.load() == Session(URL, EMAIL, "a2", "r2")


def test_an_ended_session_says_to_log_in(gateway: Gateway, logged_in: Session) -> None:
    gateway.current = 5
    code, _, err = fogctl("node", "list")
    assert code == 1
    assert "run `fogctl login`" in err


def test_not_logged_in(gateway: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOG_CONFIG_DIR", str(tmp_path / "nobody"))
    code, _, err = fogctl("node", "list")
    assert code == 1
    assert "not logged in" in err
    assert gateway.requests == []


@pytest.mark.parametrize(
    ("count", "shown"),
    [(None, "?"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (16 * GIB, "16.0 GiB"), (2**60, "1024.0 PiB")],
)
def test_bytes_are_shown_in_binary_units(count: int | None, shown: str) -> None:
    assert human_bytes(count) == shown


def test_label_sets_and_removes_labels_and_refuses_what_is_neither(gateway: Gateway, logged_in: Session) -> None:
    gateway.nodes["n1"]["labels"] = {"site": "a", "rack": "3"}
    code, _, err = fogctl("node", "label", "n1", "gpu=a100", "rack-")
    assert code == 0, err
    assert "Node n1 (edge-n1) labels: site=a, gpu=a100" in err
    request = gateway.requests[-1]
    assert (request.method, request.url.path) == ("PATCH", "/v1/nodes/n1")
    assert json.loads(request.content) == {"labels": {"gpu": "a100", "rack": None}}
    sent = len(gateway.requests)
    code, _, err = fogctl("node", "label", "n1", "gpu")
    assert code == 2
    assert "neither key=value nor key-" in err
    assert len(gateway.requests) == sent  # nothing sent


def test_a_table_too_wide_for_the_terminal_is_printed_whole(
    gateway: Gateway, logged_in: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 40 columns, or a pipe (80 to Rich): a cut cell would be an id nobody can copy into the next command
    monkeypatch.setenv("COLUMNS", "40")
    code, out, err = fogctl("node", "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "id", "name", "status", "cores", "memory", "region", "reputation", "jobs", "run", "last", "heartbeat", "agent"
    ]  # fmt: skip
    assert lines[1].split() == [
        "n1", "edge-n1", "ready", "8", "16.0", "GiB", "eu-west", "0.50", "0", "2030-01-02", "03:04:05", "UTC", "0.4.0"
    ]  # fmt: skip
    assert "…" not in out
