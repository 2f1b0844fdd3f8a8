"""The nodes' side of the gateway: one WebSocket per agent, heartbeats relayed to the registry.

Heartbeats are soft state and frequent (10,000 nodes at a 5 s interval are 2,000 a second), so
the gateway neither answers nor forwards them one by one: :class:`HeartbeatRelay` keeps the
latest beat per node and publishes one batch every ``flush_s`` on core NATS. A lost batch costs
one beat per node, which the next batch repairs.

:class:`NodeLinks` knows which connection belongs to which node credential, so that revoking the
credential (``node_credential.revoked``) closes exactly that connection within moments.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from faststream.nats import NatsBroker
from pydantic import TypeAdapter, ValidationError
from starlette.websockets import WebSocketState

from fog_gateway.authz import Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import Problem
from fog_gateway.scheduler_gate import Retries, SchedulerGate
from fog_gateway.security import Principal
from fog_gateway.tolerant import read, read_as
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.commands import scheduler
from fog_shared.commands.registry import AGENT_MAX, HEARTBEATS, MAX_BATCH_ITEMS, Heartbeat

log = logging.getLogger(__name__)

#: close codes the agent treats as final (it does not reconnect)
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
#: another connection of the same node took over (the agent reconnected)
CLOSE_REPLACED = 4409
#: what this gateway takes from agents beyond the first protocol: ``usage``, a result's ``cpu_s`` and ``max_rss_bytes``;
#: ``files``, the files a job gave back (a result's ``files``)
AGENT_FEATURES = ["usage", "files"]
AgentReport = scheduler.Started | scheduler.Finished | scheduler.OutputSoFar
REPORT: TypeAdapter[AgentReport] = TypeAdapter(scheduler.Report)


class HeartbeatRelay:
    """The latest beat per node, published as one batch every ``flush_s``.

    Beats are kept as their JSON text and batches are built as bytes: at 10,000 nodes a model
    per beat, held for a flush period, outlived the young GC generations and fed the full
    collections that paused the whole gateway (docs/performance.md). Strings are not tracked by
    the cyclic GC at all.

    When no node has anything to say, the relay still publishes an empty batch every
    ``keepalive_s``: the registry then knows this gateway is alive and not stalled, and does not
    blame its nodes for a silence that is the gateway's (see the registry's liveness).
    """

    def __init__(
        self,
        broker: NatsBroker,
        *,
        source: str | None = None,
        flush_s: float = 0.25,
        keepalive_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.broker, self.flush_s, self.keepalive_s, self.clock = broker, flush_s, keepalive_s, clock
        #: names this gateway process in its batches
        self.source = source or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._beats: dict[str, str] = {}
        self._departed: set[str] = set()
        self._published_at = -math.inf

    def beat(self, heartbeat: Heartbeat) -> None:
        self._beats[heartbeat.node_id] = heartbeat.model_dump_json()  # only the latest one matters
        self._departed.discard(heartbeat.node_id)

    def depart(self, node_id: str) -> None:
        self._beats.pop(node_id, None)
        self._departed.add(node_id)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)  # the batching period
            try:
                await self.flush()
            except Exception:
                log.warning("heartbeat batch not published", exc_info=True)

    async def flush(self) -> None:
        now = self.clock()
        if not self._beats and not self._departed and now - self._published_at < self.keepalive_s:
            return
        beats, departed = list(self._beats.values()), sorted(self._departed)
        self._beats, self._departed = {}, set()
        self._published_at = now
        for body in batch_bodies(self.source, beats, departed):
            await self.broker.publish(body, subject=HEARTBEATS)


def batch_bodies(source: str, beats: list[str], departed: list[str]) -> Iterator[bytes]:
    """:class:`HeartbeatBatch` JSON from beats already serialised, split to fit its size limits."""
    chunk = MAX_BATCH_ITEMS
    for start in range(0, max(len(beats), len(departed), 1), chunk):
        body = (
            f'{{"source":{json.dumps(source)},"heartbeats":[{",".join(beats[start : start + chunk])}],'
            f'"departed":{json.dumps(departed[start : start + chunk])}}}'
        )
        yield body.encode()


@dataclass(slots=True)
class _Link:
    websocket: WebSocket
    credential_id: str | None


class NodeLinks:
    """The open connection of each node."""

    def __init__(self) -> None:
        self._links: dict[str, _Link] = {}

    def __len__(self) -> int:
        return len(self._links)

    async def attach(self, node_id: str, credential_id: str | None, websocket: WebSocket) -> None:
        previous = self._links.get(node_id)
        self._links[node_id] = _Link(websocket, credential_id)
        if previous is not None:
            await _close(previous.websocket, CLOSE_REPLACED, "another connection of this node took over")

    async def send(self, node_id: str, message: dict[str, Any]) -> bool:
        """To the node's connection on this gateway; False when it has none here."""
        link = self._links.get(node_id)
        if link is None:
            return False
        try:
            await link.websocket.send_json(message)
        except (RuntimeError, OSError, WebSocketDisconnect):
            return False
        return True

    def detach(self, node_id: str, websocket: WebSocket) -> None:
        link = self._links.get(node_id)
        if link is not None and link.websocket is websocket:
            del self._links[node_id]

    async def revoked(self, node_id: str, credential_id: str) -> None:
        link = self._links.get(node_id)
        if link is not None and link.credential_id == credential_id:
            log.info("closing the connection of a revoked node credential", extra={"node_id": node_id})
            await _close(link.websocket, CLOSE_UNAUTHORIZED, "node credential revoked")


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(code=code, reason=reason)


def bearer_of(websocket: WebSocket) -> str | None:
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return websocket.headers.get("x-api-key")


class NodeSession:
    """One agent's connection: welcome and its outstanding assignments, then heartbeats and job
    reports (acked once the scheduler has them) until it closes."""

    def __init__(
        self,
        websocket: WebSocket,
        node: Principal,
        relay: HeartbeatRelay,
        authz: Authorizer,
        calls: ServiceCalls,
        interval_s: float,
        gate: SchedulerGate,
    ) -> None:
        self.websocket, self.node, self.relay, self.authz = websocket, node, relay, authz
        self.calls, self.interval_s, self.gate = calls, interval_s, gate
        self._reports: deque[AgentReport] = deque()
        self._reported = asyncio.Event()
        assert node.node_id is not None
        self.node_id: str = node.node_id
        #: what the agent says it is (``fog-agent/0.4.0``), told to the registry with each beat
        self.agent = agent_of(websocket.headers.get("user-agent"))

    async def serve(self) -> None:
        welcome = {
            "type": "welcome", "node_id": self.node_id, "heartbeat_interval_s": self.interval_s,
            "features": AGENT_FEATURES,  # what this gateway takes beyond the first protocol: agents send no more
        }  # fmt: skip
        await self.websocket.send_json(welcome)
        # In the background too: heartbeats must flow even while the scheduler is slow to answer.
        catching_up = asyncio.create_task(self._catch_up())
        worker = asyncio.create_task(self._record_reports())
        try:
            with contextlib.suppress(WebSocketDisconnect):
                while self.websocket.application_state != WebSocketState.DISCONNECTED:
                    if not await self.handle(await self.websocket.receive_text()):
                        return
        finally:
            worker.cancel()
            catching_up.cancel()

    async def handle(self, raw: str) -> bool:
        """One message; False once the connection is to end."""
        try:
            message = json.loads(raw)
        except ValueError:
            return await self._refuse("invalid", "not JSON")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "goodbye":
            self.relay.depart(self.node_id)
            await _close(self.websocket, 1000, "goodbye")
            return False
        if kind in ("started", "finished", "output"):
            return await self._report(message)
        if kind != "heartbeat":
            return await self._refuse("invalid", f"unknown message type {kind!r}")
        message["agent"] = self.agent  # from the connection: the agent's own word, once, not per beat
        try:
            heartbeat = read(Heartbeat, message)
        except ValidationError as exc:
            return await self._refuse("invalid", _reasons(exc))
        if heartbeat.node_id != self.node_id:
            log.warning(
                "heartbeat for another node refused", extra={"node_id": self.node_id, "claimed": heartbeat.node_id}
            )
            refusal = "a node acts only as itself"
            await self.websocket.send_json({"type": "error", "code": "forbidden", "detail": refusal})
            await _close(self.websocket, CLOSE_FORBIDDEN, refusal)
            return False
        try:
            self.authz.limit(self.node)
        except Problem as refused:
            return await self._refuse("rate_limited", refused.detail)
        self.relay.beat(heartbeat)
        return True

    async def _catch_up(self) -> None:
        """What the scheduler has placed here: sent again on every connection (the agent
        ignores what it already runs), so nothing is lost while the node was away.

        Asked again until the scheduler answers (this task ends with the connection): a job placed
        here while the node was away reaches it no other way, and a node that reconnected while the
        scheduler or NATS was restarting kept such jobs, unrun, until its next reconnection.
        """
        retries = Retries(self.gate)
        while (outstanding := await self._outstanding(retries)) is None:
            await retries.wait()
        if retries.tries:
            log.info("outstanding assignments fetched after %d retries", retries.tries, extra={"node_id": self.node_id})
        for assignment in outstanding:
            await self.websocket.send_json({"type": "assignment", **assignment})

    async def _outstanding(self, retries: Retries) -> list[dict[str, Any]] | None:
        """The assignments as the scheduler wrote them: checked against the contract, and sent on whole, so
        that an agent gets the fields a newer scheduler added (as it does through the ``job.assigned`` event)."""
        try:
            query = scheduler.NodeAssignmentsQuery(node_id=self.node_id)
            reply = await retries.ask(self.calls.ask(scheduler.NODE_ASSIGNMENTS, query))
            read(scheduler.NodeAssignments, reply)
            assignments: list[dict[str, Any]] = reply["assignments"]
            return assignments
        except (ServiceUnavailable, Problem) as exc:
            # Once per connection: while the scheduler is away, every connected node retries, and a line
            # for each retry of each node would bury the log.
            level = logging.WARNING if retries.first_try else logging.DEBUG
            extra = {"node_id": self.node_id, "reason": str(exc)}
            log.log(level, "outstanding assignments not fetched yet; asking again", extra=extra)
            return None

    async def _report(self, message: dict[str, Any]) -> bool:
        try:
            report = read_as(REPORT, message)
        except ValidationError as exc:
            return await self._refuse("invalid", _reasons(exc))
        # Recorded by this connection's report worker, in order, so that a scheduler that is slow
        # or away (restarting, say) never holds up the heartbeats behind the report.
        self._reports.append(report)
        self._reported.set()
        return True

    async def _record_reports(self) -> None:
        """Whatever queued while the previous batch was being recorded goes as the next one."""
        while True:
            while not self._reports:
                self._reported.clear()
                await self._reported.wait()
            batch = take_batch(self._reports)
            await self._record_until_acked(scheduler.ReportsCommand(node_id=self.node_id, reports=batch))

    async def _record(self, command: scheduler.ReportsCommand, retries: Retries) -> bool:
        try:
            await retries.ask(self.calls.ask(scheduler.REPORTS, command))
        except (ServiceUnavailable, Problem) as exc:
            level = logging.WARNING if retries.first_try else logging.DEBUG  # as for the catch-up
            extra = {"node_id": self.node_id, "reason": str(exc)}
            log.log(level, "job reports not recorded yet; sending again", extra=extra)
            return False
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            for report in command.reports:
                await self.websocket.send_json(_ack(report))
        return True

    async def _record_until_acked(self, command: scheduler.ReportsCommand) -> None:
        """Keep trying while the agent is connected; the agent holds the report until the ack
        and sends it again if the connection drops."""
        retries = Retries(self.gate)
        while not await self._record(command, retries):
            if self.websocket.application_state == WebSocketState.DISCONNECTED:
                return
            await retries.wait()

    async def _refuse(self, code: str, detail: str) -> bool:
        await self.websocket.send_json({"type": "error", "code": code, "detail": detail})
        return True


def agent_of(user_agent: str | None) -> str | None:
    """The ``User-Agent`` an agent connected with, as the registry keeps it: printable, ``AGENT_MAX`` at most."""
    if not user_agent:
        return None
    printable = "".join(c for c in user_agent if c.isprintable()).strip()
    return printable[:AGENT_MAX] or None


def take_batch(reports: deque[AgentReport]) -> list[AgentReport]:
    """The oldest reports, as many as one command carries: at most ``MAX_REPORTS``, and no more
    output than ``REPORTS_OUTPUT_BUDGET`` unless a single report has that much alone."""
    batch = [reports.popleft()]
    output = _output_size(batch[0])
    while reports and len(batch) < scheduler.MAX_REPORTS:
        size = _output_size(reports[0])
        if output + size > scheduler.REPORTS_OUTPUT_BUDGET:
            break
        batch.append(reports.popleft())
        output += size
    return batch


def _output_size(report: AgentReport) -> int:
    """What the report carries of the job's making: its output, and the files it gave back."""
    if isinstance(report, scheduler.OutputSoFar):
        return len(report.data)
    if isinstance(report, scheduler.Finished):
        return len(report.output) + sum(len(f.data) for f in report.files)
    return 0


def _ack(report: AgentReport) -> dict[str, Any]:
    """Output so far is acked up to the character it reached: the agent sends on from there."""
    ack = {"type": "ack", "job_id": report.job_id, "attempt": report.attempt, "report": report.type}
    if isinstance(report, scheduler.OutputSoFar):
        ack["through"] = report.offset + len(report.data)
    return ack


def _reasons(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
