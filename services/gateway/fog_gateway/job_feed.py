"""The scheduler's job events, as this gateway's connections need them.

* ``job.assigned`` and ``job.cancelled`` go to the node's connection, if it is on this gateway
  (every gateway sees every event; the one holding the node's connection delivers it; a node
  connected nowhere gets its assignments when it reconnects);
* every job event of an owner who watches ``/v1/jobs/updates`` here makes that owner's sockets
  receive the job as it is now.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from fastapi import WebSocket
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from fog_gateway.calls import ServiceCalls
from fog_gateway.node_link import NodeLinks
from fog_gateway.problems import Problem
from fog_shared.bus.consumer import H_REDRIVE_FOR
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.commands import scheduler
from fog_shared.commands.auth import Principal
from fog_shared.events.scheduler import JobAssigned, JobCancelled

log = logging.getLogger(__name__)
JOB_EVENTS = "fog.evt.scheduler.job.>"


class JobWatchers:
    """Owners' open ``/v1/jobs/updates`` sockets on this gateway."""

    def __init__(self) -> None:
        self._sockets: dict[str, dict[WebSocket, Principal]] = defaultdict(dict)

    def add(self, principal: Principal, websocket: WebSocket) -> None:
        assert principal.user_id is not None
        self._sockets[principal.user_id][websocket] = principal

    def remove(self, principal: Principal, websocket: WebSocket) -> None:
        sockets = self._sockets.get(principal.user_id or "")
        if sockets is not None:
            sockets.pop(websocket, None)
            if not sockets:
                del self._sockets[principal.user_id or ""]

    def of(self, owner_id: str) -> list[tuple[WebSocket, Principal]]:
        return list(self._sockets.get(owner_id, {}).items())


class JobFeed:
    def __init__(self, links: NodeLinks, watchers: JobWatchers, calls: ServiceCalls) -> None:
        self.links, self.watchers, self.calls = links, watchers, calls

    async def start(self, js: JetStreamContext) -> None:
        await js.subscribe(JOB_EVENTS, cb=self._on_event, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)

    async def _on_event(self, msg: Msg) -> None:
        if H_REDRIVE_FOR in (msg.headers or {}):
            return  # a dead letter handed back to one consumer: its effects here happened already
        try:
            await self.dispatch(msg.subject, json.loads(msg.data))
        except Exception:
            log.warning("job event not delivered", exc_info=True, extra={"subject": msg.subject})

    async def dispatch(self, subject: str, body: dict[str, Any]) -> None:
        if subject == JobAssigned.TYPE.subject:
            event = JobAssigned.model_validate(body)
            await self.links.send(event.node_id, {"type": "assignment", **event.assignment})
        elif subject == JobCancelled.TYPE.subject:
            cancelled = JobCancelled.model_validate(body)
            if cancelled.node_id is not None:
                message = {"type": "cancel", "job_id": cancelled.job_id, "attempt": cancelled.attempt}
                await self.links.send(cancelled.node_id, message)
        owner, job_id = body.get("owner_id"), body.get("job_id")
        if isinstance(owner, str) and isinstance(job_id, str):
            await self._tell_owner(owner, job_id)

    async def _tell_owner(self, owner_id: str, job_id: str) -> None:
        for websocket, principal in self.watchers.of(owner_id):
            try:
                job = await self.calls.ask(scheduler.GET_JOB, scheduler.JobQuery(job_id=job_id, by=principal))
                await websocket.send_json({"type": "job", "job": job})
            except (ServiceUnavailable, Problem, RuntimeError, OSError):
                log.debug("job update not sent", exc_info=True)
