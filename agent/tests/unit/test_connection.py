"""The run loop against a real WebSocket server on 127.0.0.1: welcome, heartbeats, reconnection, refusal, goodbye.

The last tests run ``fog-agent run`` as a process and stop it with real signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fog_agent.connection import EXIT_REFUSED, EXIT_STOPPED, AgentConnection
from fog_agent.protocol import ProtocolViolation, connect_url, parse_welcome
from fog_agent.state import NodeState
from fog_client import NodeUsage
from fog_shared.testing.waiting import wait_until

NODE_ID = "n-1"
CREDENTIAL = "fogn_never_in_a_log_line"
USAGE = NodeUsage(cpu_percent=12.5, memory_used_bytes=2**30, disk_used_bytes=10**9)


class Gateway:
    """``/v1/nodes/connect``, scripted: welcomes each connection, records what it receives, and lets the test
    end a connection however it likes through ``sockets``."""

    def __init__(self) -> None:
        self.url = ""
        self.welcome: dict[str, Any] | None = {"type": "welcome", "node_id": NODE_ID, "heartbeat_interval_s": 0.05}
        self.before_welcome: list[str] = []  # raw frames sent ahead of the welcome
        self.refuse_with: int | None = None  # close right after accepting, with this code
        self.http_status: int | None = None  # refuse the handshake itself with this HTTP status
        self.sockets: list[ServerConnection] = []
        self.received: list[list[dict[str, Any]]] = []  # per connection
        self.closed_with: list[int | None] = []  # the close code each connection ended with
        self.requests: list[Request] = []

    def reject(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        if self.http_status is None:
            return None
        return connection.respond(self.http_status, "refused\n")

    async def handler(self, ws: ServerConnection) -> None:
        index = len(self.sockets)
        self.sockets.append(ws)
        self.received.append([])
        try:
            if self.refuse_with is not None:
                await ws.close(self.refuse_with, "refused")
                return
            for frame in self.before_welcome:
                await ws.send(frame)
            if self.welcome is not None:
                await ws.send(json.dumps(self.welcome))
            with contextlib.suppress(ConnectionClosed):
                async for raw in ws:
                    self.received[index].append(json.loads(raw))
        finally:
            await ws.wait_closed()
            self.closed_with.append(ws.close_code)

    def heartbeats(self, index: int) -> list[dict[str, Any]]:
        return [m for m in self.received[index] if m["type"] == "heartbeat"]


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    fake = Gateway()
    quiet = logging.getLogger("test.gateway")  # the server logs the agent's headers at DEBUG: keep them apart
    async with serve(fake.handler, "127.0.0.1", 0, process_request=fake.reject, logger=quiet) as server:
        fake.url = f"http://127.0.0.1:{_port(server)}"
        yield fake


def _port(server: Server) -> int:
    port: int = next(iter(server.sockets)).getsockname()[1]
    return port


class NoJitter(random.Random):
    """Retry at once: the tests are about whether the agent reconnects, not how long it waits."""

    def uniform(self, a: float, b: float) -> float:
        return a


def new_agent(url: str, rng: random.Random | None = None) -> AgentConnection:
    return AgentConnection(url, NODE_ID, CREDENTIAL, usage=lambda: USAGE, rng=rng or NoJitter())


async def until(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    async def probe() -> bool:
        return bool(condition())

    await wait_until(probe, timeout=timeout, what=what)


async def finished(run: asyncio.Task[int]) -> int:
    return await asyncio.wait_for(run, timeout=5)


async def test_welcome_then_heartbeats_then_goodbye_on_stop(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and len(gateway.heartbeats(0)) >= 3, "three heartbeats")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED

    [request] = gateway.requests
    assert request.path == "/v1/nodes/connect"
    assert request.headers["Authorization"] == f"Bearer {CREDENTIAL}"
    beats = gateway.heartbeats(0)
    assert [b["seq"] for b in beats] == list(range(1, len(beats) + 1))
    assert beats[0] == {
        "type": "heartbeat",
        "node_id": NODE_ID,
        "seq": 1,
        "running_jobs": 0,
        "usage": {"cpu_percent": 12.5, "memory_used_bytes": 2**30, "disk_used_bytes": 10**9},
    }
    assert gateway.received[0][-1] == {"type": "goodbye", "reason": "shutdown"}
    assert [m["type"] for m in gateway.received[0]].count("goodbye") == 1  # and no heartbeat after it
    await until(lambda: gateway.closed_with, "the server to see the close")
    assert gateway.closed_with == [1000]
    agent_lines = [r.getMessage() for r in caplog.records if not r.name.startswith("test.gateway")]
    assert any("connected to" in line for line in agent_lines)  # the agent was logging, at DEBUG
    assert not [line for line in agent_lines if CREDENTIAL in line]


async def test_heartbeats_carry_the_node_id_the_gateway_welcomed(gateway: Gateway) -> None:
    assert gateway.welcome is not None
    gateway.welcome["node_id"] = "n-from-welcome"
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED
    assert {b["node_id"] for b in gateway.heartbeats(0)} == {"n-from-welcome"}


@pytest.mark.parametrize("how", ["abort", 1001, 1011, 4409])
async def test_a_dropped_connection_reconnects_with_a_fresh_welcome_and_seq_from_1(
    gateway: Gateway, how: str | int
) -> None:
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and len(gateway.heartbeats(0)) >= 2, "heartbeats on the first connection")
    first = gateway.sockets[0]
    if how == "abort":
        first.transport.abort()  # no close frame at all: as when the network goes
    else:
        assert isinstance(how, int)
        await first.close(how, "going")
    await until(lambda: len(gateway.received) >= 2 and len(gateway.heartbeats(1)) >= 2, "heartbeats after reconnecting")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED
    assert [b["seq"] for b in gateway.heartbeats(1)][:2] == [1, 2]
    assert len(gateway.requests) == len(gateway.sockets) >= 2


@pytest.mark.parametrize("code", [4401, 4403, 1008])
async def test_a_refusing_close_code_ends_the_run_with_3_and_no_retry(
    gateway: Gateway, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    await gateway.sockets[0].close(code, "no")
    assert await finished(run) == EXIT_REFUSED
    assert len(gateway.requests) == 1  # NoJitter would have made a retry immediate
    assert f"not reconnecting: the gateway closed the connection with code {code} (no)" in caplog.text


async def test_a_refusal_before_the_welcome_ends_the_run_too(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.refuse_with = 4401
    assert await finished(asyncio.create_task(new_agent(gateway.url).run())) == EXIT_REFUSED
    assert len(gateway.requests) == 1
    assert "invalid or revoked" in caplog.text


@pytest.mark.parametrize(("status", "expected"), [(401, EXIT_REFUSED), (403, EXIT_REFUSED)])
async def test_a_handshake_refused_over_http_ends_the_run(gateway: Gateway, status: int, expected: int) -> None:
    gateway.http_status = status
    assert await finished(asyncio.create_task(new_agent(gateway.url).run())) == expected
    assert len(gateway.requests) == 1


async def test_other_handshake_failures_are_retried(gateway: Gateway) -> None:
    gateway.http_status = 503  # e.g. a proxy in front of a restarting gateway
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: len(gateway.requests) >= 3, "retries")
    gateway.http_status = None
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat once the gateway answers")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED


async def test_errors_and_unknown_messages_are_logged_and_ignored(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fog_agent")
    gateway.before_welcome = [json.dumps({"type": "error", "code": "slow_down", "detail": "before the welcome"})]
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    server_side = gateway.sockets[0]
    for frame in (
        json.dumps({"type": "assignment", "job_id": "j1"}),
        "not json",
        "[1, 2]",
        json.dumps({"no_type": True}),
        json.dumps({"type": "error", "code": "bad_heartbeat", "detail": "seq went backwards"}),
    ):
        await server_side.send(frame)
    sent_so_far = len(gateway.heartbeats(0))
    await until(lambda: len(gateway.heartbeats(0)) >= sent_so_far + 2, "heartbeats going on after the noise")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED
    assert len(gateway.sockets) == 1  # none of it cost the connection
    assert "ignoring a 'assignment' message" in caplog.text
    assert "not a JSON object" in caplog.text
    assert "seq went backwards (bad_heartbeat)" in caplog.text
    assert "before the welcome (slow_down)" in caplog.text


async def test_a_bad_welcome_is_a_failed_connection(gateway: Gateway) -> None:
    gateway.welcome = {"type": "welcome", "node_id": NODE_ID, "heartbeat_interval_s": 0}
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: len(gateway.sockets) >= 2, "a reconnection")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED
    assert gateway.heartbeats(0) == []


async def test_stopping_before_the_welcome_leaves_at_once(gateway: Gateway) -> None:
    gateway.welcome = None  # a gateway that never speaks
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.sockets, "the connection")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED  # well before the welcome timeout
    await until(lambda: gateway.closed_with, "the server to see the close")
    assert gateway.closed_with == [1000]


async def test_stopping_while_the_gateway_is_unreachable_exits_0(caplog: pytest.LogCaptureFixture) -> None:
    agent = new_agent(f"http://127.0.0.1:{_unused_port()}", rng=random.Random(3))
    run = asyncio.create_task(agent.run())
    await until(lambda: caplog.text.count("retrying in") >= 2, "two failed attempts")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED


def test_the_connect_url_follows_the_gateway_url() -> None:
    assert connect_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080/v1/nodes/connect"
    assert connect_url("https://fog.example.org/") == "wss://fog.example.org/v1/nodes/connect"
    assert connect_url("HTTPS://fog.example.org/api") == "wss://fog.example.org/api/v1/nodes/connect"
    for bad in ("fog.example.org", "ftp://fog.example.org", "http://"):
        with pytest.raises(ValueError, match="not an http"):
            connect_url(bad)


@pytest.mark.parametrize("interval", [0, -1, True, "5", None, float("inf"), float("nan")])
def test_an_unusable_heartbeat_interval_is_refused(interval: object) -> None:
    with pytest.raises(ProtocolViolation, match="unusable"):
        parse_welcome({"type": "welcome", "node_id": NODE_ID, "heartbeat_interval_s": interval})


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- fog-agent run as a process ------------------------------------------------------------------------------------


async def start_agent(gateway: Gateway, state_dir: Path) -> asyncio.subprocess.Process:
    NodeState(gateway.url, NODE_ID, "edge-1", CREDENTIAL, state_dir / "node.json").save()
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fog_agent", "run", "--state-dir", str(state_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def exited(process: asyncio.subprocess.Process) -> tuple[int, str]:
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_the_agent_process_says_goodbye_and_exits_0_on_a_signal(
    gateway: Gateway, tmp_path: Path, signum: signal.Signals
) -> None:
    process = await start_agent(gateway, tmp_path / "state")
    try:
        await until(lambda: gateway.received and len(gateway.heartbeats(0)) >= 2, "heartbeats", timeout=20)
        process.send_signal(signum)
        code, stderr = await exited(process)
    finally:
        if process.returncode is None:
            process.kill()
    assert code == 0, stderr
    assert gateway.received[0][-1] == {"type": "goodbye", "reason": "shutdown"}
    assert f"{signum.name}: draining and leaving" in stderr
    assert CREDENTIAL not in stderr


async def test_the_agent_process_exits_3_when_its_credential_is_refused(gateway: Gateway, tmp_path: Path) -> None:
    gateway.refuse_with = 4401
    process = await start_agent(gateway, tmp_path / "state")
    try:
        code, stderr = await exited(process)
    finally:
        if process.returncode is None:
            process.kill()
    assert code == 3, stderr
    assert "code 4401" in stderr
    assert "fog-agent join --force" in stderr
    assert CREDENTIAL not in stderr
