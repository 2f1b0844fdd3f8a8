"""Each member's timeline: the changes sync reads, in position order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg


async def append_timeline(
    conn: asyncpg.Connection,
    audience: Sequence[str],
    conversation_id: uuid.UUID,
    kind: str,
    *,
    now: datetime,
    msg_seq: int | None = None,
    payload: dict[str, Any] | None = None,
) -> int:
    """Give the change the next timeline position and put it in each audience member's timeline.

    Call it last in the transaction: the head row stays locked until commit, which is what keeps
    positions visible in order."""
    position: int = await conn.fetchval("UPDATE timeline_head SET position = position + 1 RETURNING position")
    await conn.executemany(
        "INSERT INTO timeline (member_id, position, conversation_id, kind, msg_seq, payload, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(member, position, conversation_id, kind, msg_seq, payload, now) for member in audience],
    )
    return position


async def timeline_bounds(conn: asyncpg.Connection) -> tuple[int, int]:
    """(newest position, positions up to which retention may have dropped entries)."""
    row = await conn.fetchrow("SELECT position, pruned_through FROM timeline_head")
    assert row is not None
    return int(row["position"]), int(row["pruned_through"])


async def read_timeline(conn: asyncpg.Connection, member_id: str, after: int, limit: int) -> list[asyncpg.Record]:
    """The member's entries after position ``after``, with the messages they name as they are now."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT t.position, t.conversation_id, t.kind, t.payload, t.created_at, m.id AS message_id, m.seq,"
        " m.sender_id, m.text, m.client_msg_id, m.reply_to_seq, m.device_id, m.clock, m.concurrent_with, m.sent_at,"
        " m.edited_at, m.deleted_at"
        " FROM timeline t LEFT JOIN messages m ON m.conversation_id = t.conversation_id AND m.seq = t.msg_seq"
        " WHERE t.member_id = $1 AND t.position > $2 ORDER BY t.position LIMIT $3",
        member_id,
        after,
        limit,
    )
    return rows


async def missed(conn: asyncpg.Connection, member_id: str, after: int, at_most: int) -> int:
    """How many entries the member has after ``after``, counting no further than ``at_most``."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM timeline WHERE member_id = $1 AND position > $2 LIMIT $3) s",
            member_id,
            after,
            at_most,
        )
    )


async def position_before_latest(conn: asyncpg.Connection, member_id: str, latest: int) -> int:
    """The position after which only the member's ``latest`` newest entries remain."""
    found = await conn.fetchval(
        "SELECT position FROM timeline WHERE member_id = $1 ORDER BY position DESC OFFSET $2 LIMIT 1",
        member_id,
        latest,
    )
    return int(found or 0)


async def prune_timeline(conn: asyncpg.Connection, older_than: datetime) -> int:
    """Drop timeline entries older than the retention window; syncs from before them get ``limited``."""
    async with conn.transaction():
        pruned = await conn.fetchval(
            "WITH gone AS (DELETE FROM timeline WHERE created_at < $1 RETURNING position)"
            " SELECT max(position) FROM gone",
            older_than,
        )
        if pruned is None:
            return 0
        await conn.execute("UPDATE timeline_head SET pruned_through = greatest(pruned_through, $1)", pruned)
    return int(pruned)
