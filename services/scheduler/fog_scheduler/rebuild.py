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
from typing import Any

import asyncpg
from nats.js import JetStreamContext

from fog_scheduler import node_view
from fog_shared.bus.topology import ConsumerSpec
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.replay.rebuild import RebuildReport, diff_rows, replay

#: what the comparison looks at: ``updated_at`` records when the row was written, not what it says
COLUMNS = ("status", "capabilities", "labels", "region", "reputation")


async def rebuild_node_view(
    conn: asyncpg.Connection, js: JetStreamContext, spec: ConsumerSpec, schema: str
) -> RebuildReport:
    live_table = f'"{schema}".nodes'
    scratch = conn.transaction()
    await scratch.start()
    try:
        # pg_temp comes first in the search path: the projection's unqualified ``nodes`` is the scratch copy.
        await conn.execute(f"CREATE TEMP TABLE nodes (LIKE {live_table} INCLUDING ALL) ON COMMIT DROP")
        await conn.execute(f'SET LOCAL search_path = pg_temp, "{schema}"')

        async def project(event: Event, _: Envelope) -> None:
            await node_view.project(conn, event, datetime.now(UTC))

        replayed = await replay(js, spec, project)
        rebuilt = await _rows(conn, "pg_temp.nodes")
        live = await _rows(conn, live_table)
    finally:
        await scratch.rollback()
    return RebuildReport(
        service="scheduler", read_model="nodes", consumer=spec.durable, replayed_to_seq=replayed.upto_seq,
        events_replayed=replayed.applied, events_skipped=replayed.skipped, rows_live=len(live),
        rows_rebuilt=len(rebuilt), differences=diff_rows(live, rebuilt), gaps=replayed.gaps,
    )  # fmt: skip


async def _rows(conn: asyncpg.Connection, table: str) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(f"SELECT id, {', '.join(COLUMNS)} FROM {table}")
    return {row["id"]: {column: row[column] for column in COLUMNS} for row in rows}
