"""The scheduler's job events, as this gateway's connections need them.

* ``job.assigned`` and ``job.cancelled`` go to the node's connection, if it is on this gateway
  (every gateway sees every event; the one holding the node's connection delivers it; a node
  connected nowhere gets its assignments when it reconnects);
* the scheduler's pushes of new assignments (``fog_shared.commands.gateway``) go the same way,
  usually well before their ``job.assigned`` events: whichever of the two comes second is not
  sent again;
* the scheduler's preparations (a job about to be assigned, or withdrawn) go to the node's connection
  too, as ``prepare`` and ``withdraw`` messages, once each;
* every job event of an owner who watches ``/v1/jobs/updates`` here makes that owner's sockets
  receive the job as it is now. The jobs to tell an owner about queue up, and one task per owner asks
  for them, up to 200 in one request (``GET_JOBS``), one request at a time: a job whose events come
  faster than that (``job.submitted`` and ``job.assigned`` come together) is fetched and sent once, as
  it is by then, and a slow socket or a 10,000-job array never holds up the events behind it nor
  floods the scheduler with requests.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import OrderedDict, defaultdict
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
from fog_shared.commands.gateway import AssignmentPush, Preparation
from fog_shared.events.scheduler import JobAssigned, JobCancelled

log = logging.getLogger(__name__)
JOB_EVENTS = "fog.evt.scheduler.job.>"
#: assignments sent by one path whose other copy has not come yet; beyond this many (copies that
#: never come: a push lost, a node gone meanwhile), the oldest are forgotten
AWAITED_COPIES = 50_000


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
        self._awaited: OrderedDict[tuple[str, int], None] = OrderedDict()
        self.copies_skipped = 0
        self._changed: dict[str, dict[str, None]] = {}  # owner -> jobs to tell them about, in event order
        self._telling: dict[str, asyncio.Task[None]] = {}  # owner -> the task that tells them

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
            await self.deliver(event.node_id, event.assignment)
        elif subject == JobCancelled.TYPE.subject:
            cancelled = JobCancelled.model_validate(body)
            if cancelled.node_id is not None:
                message = {"type": "cancel", "job_id": cancelled.job_id, "attempt": cancelled.attempt}
                await self.links.send(cancelled.node_id, message)
        owner, job_id = body.get("owner_id"), body.get("job_id")
        if isinstance(owner, str) and isinstance(job_id, str):
            self._tell_owner(owner, job_id)

    async def on_push(self, push: AssignmentPush, sent: dict[str, Any]) -> None:
        """Each assignment to its node, as the scheduler wrote it (a newer one's fields are for the agent)."""
        for pushed, as_sent in zip(push.assignments, sent["assignments"], strict=True):
            await self.deliver(pushed.node_id, as_sent["assignment"])

    async def on_preparation(self, preparation: Preparation, sent: dict[str, Any]) -> None:
        """To the node, if it is connected here: get the job ready, or let it go (withdrawn)."""
        if preparation.assignment is None:
            message = {"type": "withdraw", "job_id": preparation.job_id, "attempt": preparation.attempt}
        else:
            message = {"type": "prepare", **sent["assignment"]}
        await self.links.send(preparation.node_id, message)

    async def deliver(self, node_id: str, assignment: dict[str, Any]) -> None:
        """To the node, if it is connected here, unless the other path has brought it already."""
        key = (str(assignment.get("job_id")), int(assignment.get("attempt", 0)))
        if key in self._awaited:
            del self._awaited[key]
            self.copies_skipped += 1
            return
        self._awaited[key] = None  # before the send: a copy arriving meanwhile is the second one
        if not await self.links.send(node_id, {"type": "assignment", **assignment}):
            self._awaited.pop(key, None)  # not sent: the other copy, if it comes, is not a repeat
        elif len(self._awaited) > AWAITED_COPIES:
            self._awaited.popitem(last=False)

    def _tell_owner(self, owner_id: str, job_id: str) -> None:
        if not self.watchers.of(owner_id):
            return
        self._changed.setdefault(owner_id, {})[job_id] = None  # already queued: told once, as it is then
        if owner_id not in self._telling:
            self._telling[owner_id] = asyncio.create_task(self._tell(owner_id), name=f"job updates of {owner_id}")

    async def _tell(self, owner_id: str) -> None:
        try:
            while changed := self._changed.get(owner_id):
                batch = list(itertools.islice(changed, scheduler.MAX_JOBS_PER_QUERY))
                for job_id in batch:
                    del changed[job_id]
                left_out = await self._send_jobs(owner_id, batch)
                if left_out:  # too large for one reply: first in the next one
                    self._changed[owner_id] = dict.fromkeys([*left_out, *changed])
        finally:
            self._changed.pop(owner_id, None)
            del self._telling[owner_id]

    async def _send_jobs(self, owner_id: str, job_ids: list[str]) -> list[str]:
        """The jobs as they are now, to each of the owner's sockets; the ones to ask for again."""
        left_out: dict[str, None] = {}
        for websocket, principal in self.watchers.of(owner_id):
            try:
                reply = await self.calls.ask(scheduler.GET_JOBS, scheduler.JobsQuery(job_ids=job_ids, by=principal))
                left_out |= dict.fromkeys(reply.get("left_out", []))
                for job in reply["items"]:
                    await websocket.send_json({"type": "job", "job": job})
            except (ServiceUnavailable, Problem, RuntimeError, OSError):
                log.debug("job updates not sent", exc_info=True)
        return list(left_out)
