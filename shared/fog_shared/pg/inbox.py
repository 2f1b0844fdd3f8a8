"""The inbox: which events a consumer has already handled, kept in the handler's transaction."""

from __future__ import annotations

import asyncpg


async def claim(conn: asyncpg.Connection, consumer: str, event_id: str) -> bool:
    """Record ``event_id`` as handled by ``consumer``; False if it already was (skip it).

    Runs inside the handler's transaction, so the record and the state change commit together.
    """
    inserted = await conn.fetchval(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event_id,
    )
    return bool(inserted)


async def claim_many(conn: asyncpg.Connection, consumer: str, event_ids: list[str]) -> set[str]:
    """Record a batch of event ids in one statement; returns the ids that were not handled before."""
    rows = await conn.fetch(
        "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[])"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        event_ids,
    )
    return {row["event_id"] for row in rows}
