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
from dataclasses import dataclass
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from faststream.nats import NatsBroker
from pydantic import ValidationError
from starlette.websockets import WebSocketState

from fog_gateway.authz import Authorizer
from fog_gateway.calls import ServiceCalls
from fog_gateway.problems import Problem
from fog_gateway.security import Principal
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.commands import scheduler
from fog_shared.commands.registry import HEARTBEATS, Heartbeat, HeartbeatBatch

log = logging.getLogger(__name__)

#: close codes the agent treats as final (it does not reconnect)
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
#: another connection of the same node took over (the agent reconnected)
CLOSE_REPLACED = 4409
#: first wait before recording a job report again when the scheduler did not answer
REPORT_RETRY_S = 0.5


class HeartbeatRelay:
    def __init__(self, broker: NatsBroker, *, flush_s: float = 0.25) -> None:
        self.broker, self.flush_s = broker, flush_s
        self._beats: dict[str, Heartbeat] = {}
        self._departed: set[str] = set()

    def beat(self, heartbeat: Heartbeat) -> None:
        self._beats[heartbeat.node_id] = heartbeat  # only the latest one per batch matters
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
        if not self._beats and not self._departed:
            return
        batch = HeartbeatBatch(heartbeats=list(self._beats.values()), departed=sorted(self._departed))
        self._beats, self._departed = {}, set()
        await self.broker.publish(batch.model_dump(mode="json"), subject=HEARTBEATS)


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
    ) -> None:
        self.websocket, self.node, self.relay, self.authz = websocket, node, relay, authz
        self.calls, self.interval_s = calls, interval_s
        self._reports: asyncio.Queue[scheduler.ReportCommand] = asyncio.Queue()
        assert node.node_id is not None
        self.node_id: str = node.node_id

    async def serve(self) -> None:
        welcome = {"type": "welcome", "node_id": self.node_id, "heartbeat_interval_s": self.interval_s}
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
        if kind in ("started", "finished"):
            return await self._report(message)
        if kind != "heartbeat":
            return await self._refuse("invalid", f"unknown message type {kind!r}")
        try:
            heartbeat = Heartbeat.model_validate(message)
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
        ignores what it already runs), so nothing is lost while the node was away."""
        try:
            outstanding = await self.calls.ask_for(
                scheduler.NODE_ASSIGNMENTS, scheduler.NodeAssignmentsQuery(node_id=self.node_id),
                scheduler.NodeAssignments,
            )  # fmt: skip
        except (ServiceUnavailable, Problem):
            log.warning("outstanding assignments not fetched", extra={"node_id": self.node_id})
            return
        for assignment in outstanding.assignments:
            await self.websocket.send_json({"type": "assignment", **assignment.model_dump(mode="json")})

    async def _report(self, message: dict[str, Any]) -> bool:
        try:
            command = scheduler.ReportCommand.model_validate({"node_id": self.node_id, "report": message})
        except ValidationError as exc:
            return await self._refuse("invalid", _reasons(exc))
        # Recorded by this connection's report worker, in order, so that a scheduler that is slow
        # or away (restarting, say) never holds up the heartbeats behind the report.
        self._reports.put_nowait(command)
        return True

    async def _record_reports(self) -> None:
        while True:
            command = await self._reports.get()
            await self._record_until_acked(command)

    async def _record(self, command: scheduler.ReportCommand) -> bool:
        try:
            await self.calls.ask(scheduler.REPORT, command)
        except (ServiceUnavailable, Problem) as exc:
            log.warning("job report not recorded yet", extra={"node_id": self.node_id, "reason": str(exc)})
            return False
        report = command.report
        with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
            await self.websocket.send_json(
                {"type": "ack", "job_id": report.job_id, "attempt": report.attempt, "report": report.type}
            )
        return True

    async def _record_until_acked(self, command: scheduler.ReportCommand) -> None:
        """Keep trying while the agent is connected; the agent holds the report until the ack
        and sends it again if the connection drops."""
        delay = REPORT_RETRY_S
        while not await self._record(command):
            if self.websocket.application_state == WebSocketState.DISCONNECTED:
                return
            await asyncio.sleep(delay)  # the retry period, not synchronisation
            delay = min(delay * 2, 10.0)

    async def _refuse(self, code: str, detail: str) -> bool:
        await self.websocket.send_json({"type": "error", "code": code, "detail": detail})
        return True


def _reasons(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
