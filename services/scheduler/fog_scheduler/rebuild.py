"""Rebuilding the scheduler's node view from the registry's events, and comparing it with the live one.

What the scheduler can honestly rebuild from events is its node view (table ``nodes``): the
``scheduler__nodes`` consumer maintains it from registry node events alone. Its jobs are not
event-sourced (they change through commands: submit, reports, cancel), so they are not rebuilt.

The replay runs :func:`fog_scheduler.node_view.project` (the node-view half of the live
handler; the lost-work half is left out) into a temporary ``nodes`` table inside a transaction
that is rolled back: the live table, the jobs and the outbox are never written.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from fog_scheduler import node_view
from fog_shared.bus.topology import CONSUMERS
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.replay.rebuild import ReadModel


async def _project(conn: asyncpg.Connection, event: Event, _: Envelope) -> None:
    await node_view.project(conn, event, datetime.now(UTC))


NODE_VIEW = ReadModel(
    service="scheduler", name="nodes", table="nodes", key="id",
    columns=("status", "capabilities", "labels", "region", "reputation"),
    consumer=next(spec for spec in CONSUMERS if spec.durable == "scheduler__nodes"), project=_project,
)  # fmt: skip
#: what ``fogctl events rebuild scheduler`` can rebuild
READ_MODELS = (NODE_VIEW,)
