"""The run loop against a real WebSocket server on 127.0.0.1: welcome, heartbeats, reconnection, refusal, goodbye,
and jobs: assignments run, reports resent until acked, cancel.

The last tests run ``fog-agent run`` as a process and stop it with real signals, draining its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fog_agent.connection import EXIT_REFUSED, EXIT_STOPPED, FENCE_FLOOR_S, AgentConnection
from fog_agent.jobs import Capacity, JobRunner
from fog_agent.protocol import ProtocolViolation, connect_url, fields_not_taken, parse_welcome
from fog_agent.sandbox import Sandbox, job_users_from_env
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
        self.welcome: dict[str, Any] | None = {
            "type": "welcome", "node_id": NODE_ID, "heartbeat_interval_s": 0.05, "features": ["usage"]
        }  # fmt: skip
        self.before_welcome: list[str] = []  # raw frames sent ahead of the welcome
        self.refuse_with: int | None = None  # close right after accepting, with this code
        self.http_status: int | None = None  # refuse the handshake itself with this HTTP status
        self.sockets: list[ServerConnection] = []
        self.received: list[list[dict[str, Any]]] = []  # per connection
        self.closed_with: list[int | None] = []  # the close code each connection ended with
        self.requests: list[Request] = []
        self.auto_ack = False  # ack every job report as it arrives, as the real gateway does once recorded

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
                    message = json.loads(raw)
                    self.received[index].append(message)
                    if self.auto_ack and message["type"] in ("started", "finished"):
                        await ws.send(json.dumps({**_job_of(message), "type": "ack", "report": message["type"]}))
        finally:
            await ws.wait_closed()
            self.closed_with.append(ws.close_code)

    def heartbeats(self, index: int) -> list[dict[str, Any]]:
        return [m for m in self.received[index] if m["type"] == "heartbeat"]

    def reports(self, index: int) -> list[tuple[str, str]]:
        """The job reports connection ``index`` received: (type, job_id)."""
        if index >= len(self.received):
            return []
        return [(m["type"], m["job_id"]) for m in self.received[index] if m["type"] in ("started", "finished")]

    def finished(self, index: int, job_id: str) -> dict[str, Any]:
        [report] = [m for m in self.received[index] if m["type"] == "finished" and m["job_id"] == job_id]
        return report


def _job_of(message: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": message["job_id"], "attempt": message["attempt"]}


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


def new_agent(url: str, rng: random.Random | None = None, jobs: JobRunner | None = None) -> AgentConnection:
    # Without a runner of its own, the agent gets one that never starts a job (they would fail to).
    jobs = jobs or JobRunner(Sandbox(Path("/nonexistent/fog-agent-work"), users=None), Capacity(cpu_cores=1))
    return AgentConnection(url, NODE_ID, CREDENTIAL, usage=lambda: USAGE, jobs=jobs, rng=rng or NoJitter())


@pytest.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[JobRunner]:
    sandbox = Sandbox(tmp_path / "work", users=job_users_from_env(), kill_grace_s=0.5)
    sandbox.prepare()
    runner = JobRunner(sandbox, Capacity(cpu_cores=2))
    yield runner
    await runner.close()


def assignment(job_id: str, *command: str, timeout_s: float = 30) -> str:
    return json.dumps(
        {
            "type": "assignment",
            "job_id": job_id,
            "attempt": 1,
            "command": list(command),
            "env": {},
            "timeout_s": timeout_s,
            "resources": {"cpu_cores": 1, "memory_bytes": 256 * 2**20, "gpus": 0},
            "output_limit_bytes": 2**20,
        }
    )


def ack(job_id: str, report: str) -> str:
    return json.dumps({"type": "ack", "job_id": job_id, "attempt": 1, "report": report})


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
    assert "ignoring an assignment: attempt is not a positive integer" in caplog.text
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


@pytest.mark.parametrize(("features", "taken"), [(None, frozenset()), (["usage"], frozenset({"usage"}))])
def test_a_welcome_says_what_the_gateway_takes_beyond_the_first_protocol(
    features: list[str] | None, taken: frozenset[str]
) -> None:
    welcome = {"type": "welcome", "node_id": NODE_ID, "heartbeat_interval_s": 5}
    assert parse_welcome(welcome | ({} if features is None else {"features": features})).features == taken
    with pytest.raises(ProtocolViolation, match="features"):
        parse_welcome(welcome | {"features": "usage"})


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- jobs over the connection -------------------------------------------------------------------------------------


async def test_an_assignment_runs_and_its_reports_are_sent_again_after_reconnecting_until_acked(
    gateway: Gateway, jobs: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    agent = new_agent(gateway.url, jobs=jobs)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    await gateway.sockets[0].send(assignment("j1", "echo", "hello"))
    await until(lambda: gateway.reports(0) == [("started", "j1"), ("finished", "j1")], "both reports")
    report = gateway.finished(0, "j1")
    measured = ("duration_s", "cpu_s", "max_rss_bytes")
    assert report["cpu_s"] >= 0
    assert report["max_rss_bytes"] > 0
    assert {k: v for k, v in report.items() if k not in measured} == {
        "type": "finished",
        "job_id": "j1",
        "attempt": 1,
        "outcome": "succeeded",
        "exit_code": 0,
        "output": "hello\n",
        "output_truncated": False,
        "error": None,
    }

    gateway.sockets[0].transport.abort()  # gone before acking anything
    await until(lambda: gateway.reports(1) == [("started", "j1"), ("finished", "j1")], "the reports sent again")
    assert gateway.finished(1, "j1") == report
    await gateway.sockets[1].send(ack("j1", "started"))
    await gateway.sockets[1].send(ack("j1", "finished"))
    await until(lambda: not jobs.unacked_reports, "the acks")

    await gateway.sockets[1].close(1001, "going")
    await until(lambda: len(gateway.received) >= 3 and len(gateway.heartbeats(2)) >= 2, "a third connection")
    await gateway.sockets[2].send(assignment("j1", "echo", "hello"))  # handed out again: it does not run again
    await gateway.sockets[2].send(json.dumps({"type": "error", "code": "marker", "detail": "after the repeat"}))
    await until(lambda: "after the repeat" in caplog.text, "the marker after the repeated assignment")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED
    assert gateway.reports(2) == []
    assert jobs.unacked_reports == []


async def test_a_gateway_that_does_not_take_a_results_usage_gets_the_result_without_it(
    gateway: Gateway, jobs: JobRunner
) -> None:
    """A gateway refuses a message with a field it does not know, and a refused result would be sent again forever:
    an agent newer than its gateway sends what its welcome says it takes."""
    gateway.auto_ack = True
    assert gateway.welcome is not None
    gateway.welcome = {k: v for k, v in gateway.welcome.items() if k != "features"}  # a gateway from before usage
    agent = new_agent(gateway.url, jobs=jobs)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    await gateway.sockets[0].send(assignment("j1", "echo", "hello"))
    await until(lambda: ("finished", "j1") in gateway.reports(0), "the result")
    report = gateway.finished(0, "j1")
    assert (report["outcome"], report["output"]) == ("succeeded", "hello\n")
    assert not {"cpu_s", "max_rss_bytes"} & set(report)
    agent.stop()
    assert await finished(run) == EXIT_STOPPED


@pytest.mark.parametrize(("features", "left_out"), [
    ([], {"cpu_s", "max_rss_bytes", "files"}), (["usage"], {"files"}), (["usage", "files"], set()),
])  # fmt: skip
def test_a_result_carries_what_its_gateway_takes(features: list[str], left_out: set[str]) -> None:
    assert set(fields_not_taken(frozenset(features))) == left_out


async def test_heartbeats_count_the_running_jobs_and_a_cancel_kills_one(gateway: Gateway, jobs: JobRunner) -> None:
    gateway.auto_ack = True
    agent = new_agent(gateway.url, jobs=jobs)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    await gateway.sockets[0].send(assignment("j1", "sleep", "100"))
    await until(lambda: any(b["running_jobs"] == 1 for b in gateway.heartbeats(0)), "a heartbeat counting the job")
    await gateway.sockets[0].send(json.dumps({"type": "cancel", "job_id": "j1", "attempt": 1}))
    await until(lambda: ("finished", "j1") in gateway.reports(0), "the job's end")
    assert gateway.finished(0, "j1")["outcome"] == "cancelled"
    counted = len(gateway.heartbeats(0))
    await until(lambda: len(gateway.heartbeats(0)) > counted, "another heartbeat")
    assert gateway.heartbeats(0)[-1]["running_jobs"] == 0
    await until(lambda: not jobs.unacked_reports, "the acks")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED


async def test_messages_up_to_4_mib_are_received(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    agent = new_agent(gateway.url)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    await gateway.sockets[0].send(json.dumps({"type": "news", "padding": "x" * (4 * 2**20 - 100)}))
    await gateway.sockets[0].send(json.dumps({"type": "error", "code": "marker", "detail": "after the big one"}))
    await until(lambda: "after the big one" in caplog.text, "the marker after the big message")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED
    assert len(gateway.sockets) == 1


async def test_stopping_lets_the_running_job_finish_and_report_before_the_goodbye(
    gateway: Gateway, jobs: JobRunner
) -> None:
    gateway.auto_ack = True
    agent = new_agent(gateway.url, jobs=jobs)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    await gateway.sockets[0].send(assignment("j1", "sh", "-c", "sleep 0.3; echo done"))
    await until(lambda: gateway.reports(0) == [("started", "j1")], "the job started")
    agent.stop()
    await gateway.sockets[0].send(assignment("j2", "echo", "too late"))
    assert await finished(run) == EXIT_STOPPED
    after_start = [m["type"] for m in gateway.received[0] if m["type"] != "heartbeat"]
    assert after_start == ["started", "finished", "goodbye"]  # j2 was not taken
    assert (gateway.finished(0, "j1")["outcome"], gateway.finished(0, "j1")["output"]) == ("succeeded", "done\n")


# -- cut off from the gateway ---------------------------------------------------------------------------------------


async def test_a_node_cut_off_from_its_gateway_stops_its_jobs_before_it_would_be_declared_down(
    gateway: Gateway, jobs: JobRunner
) -> None:
    """The platform declares a node down after four silent intervals and runs its jobs elsewhere: they must not
    run on here too. Jobs of 1 core on 2: j1 and j2 run, j3 waits."""
    gateway.auto_ack = True
    agent = new_agent(gateway.url, jobs=jobs)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    for job_id in ("j1", "j2", "j3"):
        await gateway.sockets[0].send(assignment(job_id, "sleep", "100"))
    await until(lambda: gateway.reports(0) == [("started", "j1"), ("started", "j2")], "two jobs started")

    gateway.http_status = 503  # the gateway goes away and does not come back at once
    gateway.sockets[0].transport.abort()
    await until(lambda: jobs.running_jobs == 0, f"the jobs stopped after {FENCE_FLOOR_S}s of silence")
    assert len(gateway.sockets) == 1, "stopped while cut off, not on a new connection"

    gateway.http_status = None
    await until(lambda: len(gateway.reports(1)) == 2, "the reports on the next connection")
    for job_id in ("j1", "j2"):
        report = gateway.finished(1, job_id)
        assert (report["outcome"], report["exit_code"]) == ("failed", -15)  # killed: SIGTERM, SIGKILL after a grace
        assert "heard nothing from the platform" in report["error"]
    await gateway.sockets[1].send(assignment("j3", "echo", "late"))  # still placed here: handed out again, it runs
    await until(lambda: ("finished", "j3") in gateway.reports(1), "the queued job run once handed out again")
    agent.stop()
    assert await finished(run) == EXIT_STOPPED


async def test_a_connection_that_looks_up_while_nothing_gets_through_is_given_up_and_counts_as_cut_off(
    gateway: Gateway, jobs: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.auto_ack = True
    agent = new_agent(gateway.url, jobs=jobs)
    run = asyncio.create_task(agent.run())
    await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat")
    await gateway.sockets[0].send(assignment("j1", "sleep", "100"))
    await until(lambda: gateway.reports(0) == [("started", "j1")], "the job started")
    # A quiet gateway that answers the heartbeats' pings is heard: the job runs on past the fence's time.
    beats = len(gateway.heartbeats(0))
    await until(lambda: len(gateway.heartbeats(0)) > beats + 2 * FENCE_FLOOR_S / 0.05, "heartbeats for 2 s")
    assert jobs.running_jobs == 1

    gateway.http_status = 503  # no new connection gets through either
    gateway.sockets[0].transport.pause_reading()  # nothing gets through, nothing answers: yet the connection is up
    await until(lambda: "not even a ping's answer" in caplog.text, "the silent connection given up")
    await until(lambda: jobs.running_jobs == 0, "the job stopped")
    gateway.sockets[0].transport.resume_reading()  # the old connection's end is read: the fake closes it at once
    gateway.http_status = None
    await until(lambda: ("finished", "j1") in gateway.reports(1), "the report on a new connection")
    assert gateway.finished(1, "j1")["outcome"] == "failed"
    agent.stop()
    assert await finished(run) == EXIT_STOPPED


# -- fog-agent run as a process ------------------------------------------------------------------------------------


def _running(marker: str) -> bool:
    return any(marker in " ".join(p.info["cmdline"] or ()) for p in psutil.process_iter(["cmdline"]))


async def test_a_stopped_agent_process_has_its_jobs_stopped_by_its_launcher_and_reports_them_once_continued(
    gateway: Gateway, tmp_path: Path
) -> None:
    """An agent stopped (``SIGSTOP``: a debugger, a Ctrl-Z of its terminal) can neither heartbeat nor stop its
    jobs, and the platform will run them elsewhere; its launcher, heard from no more, stops them meanwhile."""
    gateway.auto_ack = True
    process = await start_agent(gateway, tmp_path / "state")
    try:
        await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat", timeout=20)
        await gateway.sockets[0].send(assignment("j1", "sleep", "30.4848"))
        await until(lambda: gateway.reports(0) == [("started", "j1")], "the job started")
        process.send_signal(signal.SIGSTOP)
        try:
            await until(lambda: not _running("30.4848"), "the job stopped while its agent is", timeout=10)
        finally:
            process.send_signal(signal.SIGCONT)
        reported = lambda: [m for got in gateway.received for m in got if m["type"] == "finished"]  # noqa: E731
        await until(reported, "the job's report once the agent runs again")
        # One report; sent again on a new connection if the agent reconnected before it read the ack.
        [report, *again] = reported()
        assert all(other == report for other in again)
        assert report["outcome"] == "failed"
        # Continued, the agent also finds the gateway silent for as long: either says why, whichever is read first.
        assert "did not run for" in report["error"] or "heard nothing from the platform" in report["error"]
        process.send_signal(signal.SIGTERM)
        code, stderr = await exited(process)
        assert code == 0, stderr
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def start_agent(gateway: Gateway, state_dir: Path, *options: str) -> asyncio.subprocess.Process:
    NodeState(gateway.url, NODE_ID, "edge-1", CREDENTIAL, state_dir / "node.json").save()
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fog_agent", "run", "--state-dir", str(state_dir), *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "FOG_AGENT_ALLOW_UNCONFINED_JOBS": "yes"},  # a contributor's machine may have no Landlock
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


@pytest.mark.parametrize(
    ("command", "options", "outcome", "output"),
    [
        (["sh", "-c", "sleep 0.5; echo done"], [], "succeeded", "done\n"),  # finishes within the drain
        (["sleep", "100"], ["--drain-timeout", "0.2"], "failed", ""),  # outlasts it: killed
    ],
)
async def test_the_agent_process_drains_its_jobs_on_sigterm(
    gateway: Gateway, tmp_path: Path, command: list[str], options: list[str], outcome: str, output: str
) -> None:
    gateway.auto_ack = True
    process = await start_agent(gateway, tmp_path / "state", "--work-dir", str(tmp_path / "work"), *options)
    try:
        await until(lambda: gateway.received and gateway.heartbeats(0), "a heartbeat", timeout=20)
        await gateway.sockets[0].send(assignment("j1", *command))
        await until(lambda: gateway.reports(0) == [("started", "j1")], "the job started")
        process.send_signal(signal.SIGTERM)
        code, stderr = await exited(process)
    finally:
        if process.returncode is None:
            process.kill()
    assert code == 0, stderr
    assert gateway.reports(0) == [("started", "j1"), ("finished", "j1")]
    report = gateway.finished(0, "j1")
    assert (report["outcome"], report["output"]) == (outcome, output)
    if outcome == "failed":
        assert "drain timeout 0.2s" in report["error"]
    assert gateway.received[0][-1] == {"type": "goodbye", "reason": "shutdown"}
    assert list((tmp_path / "work").iterdir()) == []  # the job's directory removed
