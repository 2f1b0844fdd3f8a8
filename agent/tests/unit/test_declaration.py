"""What the machine offers, declared at the agent's start: against a scripted gateway (its replies, in order)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

from fog_agent.declaration import Declaration, warn_of_networks_no_longer_given
from fog_agent.state import NodeState
from fog_client import Capabilities

MEASURED = Capabilities(cpu_cores=4, memory_bytes=8 << 30, disk_bytes=50 << 30, arch="x86_64", os="Linux 6.8")


class Gateway:
    def __init__(self, *replies: httpx.Response | Exception) -> None:
        self.replies, self.requests = list(replies), list[httpx.Request]()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply


def state(tmp_path: Path, networks: tuple[str, ...] | None) -> NodeState:
    node = NodeState("http://gateway.test", "n1", "edge-1", "node-credential", tmp_path / "node.json", networks)
    node.save()
    return node


def declaration(node: NodeState, gateway: Gateway, networks: Sequence[str], told: list[str]) -> Declaration:
    measured: list[tuple[Path, tuple[str, ...]]] = []

    def measure(where: Path, given: Sequence[str]) -> Capabilities:
        measured.append((where, tuple(given)))
        return MEASURED.model_copy(update={"networks": list(given)})

    made = Declaration(node, Path("/var/lib/work"), networks, tell=told.append, measure=measure,
                       transport=httpx.MockTransport(gateway))  # fmt: skip
    made.retry_first_s = 0.01
    return made


async def test_what_the_machine_offers_now_is_declared_with_the_nodes_credential(tmp_path: Path) -> None:
    node, told = state(tmp_path, ("host",)), list[str]()
    gateway = Gateway(httpx.Response(200, json={}))
    assert await declaration(node, gateway, ("host", "none"), told).run()
    [request] = gateway.requests
    assert (request.method, request.url.path) == ("PUT", "/v1/nodes/n1/capabilities")
    assert request.headers["authorization"] == "Bearer node-credential"
    sent = json.loads(request.content)
    assert (sent["disk_bytes"], sent["networks"]) == (50 << 30, ["host", "none"])
    assert NodeState.load(node.path) == node
    assert node.networks == ("host", "none"), "what the next start compares with"
    assert told == []


async def test_an_unreachable_gateway_is_tried_again_until_it_takes_it(tmp_path: Path) -> None:
    node = state(tmp_path, ("host",))
    gateway = Gateway(httpx.ConnectError("refused"), httpx.Response(503, json={}), httpx.Response(200, json={}))
    assert await declaration(node, gateway, ("host",), []).run()
    assert len(gateway.requests) == 3


async def test_a_gateway_without_the_route_leaves_the_node_as_declared_and_its_owner_told_of_a_lost_network(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node, told = state(tmp_path, ("host", "none")), list[str]()
    gateway = Gateway(httpx.Response(404, json={"detail": "Not Found"}))
    with caplog.at_level(logging.WARNING):
        assert not await declaration(node, gateway, ("host",), told).run()
    assert len(gateway.requests) == 1, "a refusal is not tried again"
    assert "the gateway did not take what this node offers now (404: Not Found)" in caplog.text
    [message] = told  # its owner, who may not read its log, is told over BitChat
    assert message.startswith("This node was offered with jobs of network none, and now gives host")
    assert "fog-agent join --force" in message
    assert node.networks == ("host", "none")


async def test_a_failure_to_measure_is_logged_and_the_agent_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = state(tmp_path, None)

    def broken(where: Path, given: Sequence[str]) -> Capabilities:
        raise OSError("no such device")

    made = Declaration(node, tmp_path, ("host",), measure=broken, transport=httpx.MockTransport(Gateway()))
    with caplog.at_level(logging.ERROR):
        assert not await made.run()
    assert "could not declare what this node offers" in caplog.text


def test_only_a_network_declared_and_no_longer_given_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        warn_of_networks_no_longer_given(("host", "none"), ("host", "none"))
        warn_of_networks_no_longer_given(None, ("host",))  # joined before nodes said
        warn_of_networks_no_longer_given(("host",), ("host", "none"))  # gives more than it said: harmless
    assert caplog.records == []
