"""The fast path of new assignments: straight to the gateways once their placement commits.

Each placement cycle's assignments go out on :data:`fog_shared.commands.gateway.ASSIGNMENTS`
(core NATS, at most once). Without it, a new job waits for the outbox relay and the JetStream
store of its ``job.assigned`` event before its node hears of it: about 10 ms on an idle stack,
most of a single job's way to running. The event stays the durable record. A push that fails
is logged and dropped, and never fails the placement that made it. It goes out on the raw NATS
client (:mod:`fog_shared.bus.push`), not through FastStream.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from nats.aio.client import Client as NatsClient

from fog_shared.bus import push
from fog_shared.commands.gateway import ASSIGNMENTS, PREPARATIONS, PUSH_BUDGET_BYTES, PUSH_MAX_ASSIGNMENTS

log = logging.getLogger(__name__)


def push_bodies(assignments: list[dict[str, Any]], budget: int = PUSH_BUDGET_BYTES) -> Iterator[bytes]:
    """:class:`~fog_shared.commands.gateway.AssignmentPush` JSON, halved until each part fits."""
    body = json.dumps({"assignments": assignments}, separators=(",", ":")).encode()
    if len(assignments) == 1 or (len(body) <= budget and len(assignments) <= PUSH_MAX_ASSIGNMENTS):
        yield body
        return
    half = len(assignments) // 2
    yield from push_bodies(assignments[:half], budget)
    yield from push_bodies(assignments[half:], budget)


class AssignmentPusher:
    """Publishes what a placement cycle assigned: ``{"node_id": ..., "assignment": {...}}`` each."""

    def __init__(self, nats: Callable[[], NatsClient]) -> None:
        self.nats = nats  # the service's client, once it runs

    async def __call__(self, assignments: list[dict[str, Any]]) -> None:
        try:
            for body in push_bodies(assignments):
                await push.push(self.nats(), ASSIGNMENTS, body)
        except Exception:  # the job.assigned events will bring them, a little later
            log.warning("assignments not pushed to the gateways", exc_info=True)


class PreparationPusher:
    """Tells the gateways of a job about to be assigned, before its placement commits, and of one withdrawn.

    Best effort, as the assignments' push: a preparation lost costs the job the time it would have saved.
    """

    def __init__(self, nats: Callable[[], NatsClient]) -> None:
        self.nats = nats

    async def prepare(self, node_id: str, assignment: dict[str, Any]) -> None:
        job_id, attempt = assignment["job_id"], assignment["attempt"]
        await self._push({"node_id": node_id, "job_id": job_id, "attempt": attempt, "assignment": assignment})

    async def withdraw(self, node_id: str, job_id: str, attempt: int) -> None:
        await self._push({"node_id": node_id, "job_id": job_id, "attempt": attempt})

    async def _push(self, preparation: dict[str, Any]) -> None:
        try:
            await push.push(self.nats(), PREPARATIONS, json.dumps(preparation, separators=(",", ":")).encode())
        except Exception:
            log.warning("a preparation was not pushed to the gateways", exc_info=True)
