"""Receipts: each member's delivered and read marks."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from fog_messaging.domain import Receipt


async def receipt(conn: asyncpg.Connection, conversation_id: uuid.UUID, member_id: str) -> Receipt:
    row = await conn.fetchrow(
        "SELECT delivered_seq, read_seq FROM receipts WHERE conversation_id = $1 AND member_id = $2 FOR UPDATE",
        conversation_id,
        member_id,
    )
    return Receipt() if row is None else Receipt(delivered_seq=row["delivered_seq"], read_seq=row["read_seq"])


async def save_receipt(
    conn: asyncpg.Connection, conversation_id: uuid.UUID, member_id: str, receipt: Receipt, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO receipts (conversation_id, member_id, delivered_seq, read_seq, updated_at)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (conversation_id, member_id) DO UPDATE"
        # greatest(): two concurrent first receipts of one member cannot move a mark back
        " SET delivered_seq = greatest(receipts.delivered_seq, EXCLUDED.delivered_seq),"
        " read_seq = greatest(receipts.read_seq, EXCLUDED.read_seq), updated_at = EXCLUDED.updated_at",
        conversation_id,
        member_id,
        receipt.delivered_seq,
        receipt.read_seq,
        now,
    )


async def receipts(conn: asyncpg.Connection, conversation_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT member_id, delivered_seq, read_seq FROM receipts WHERE conversation_id = $1 ORDER BY member_id",
        conversation_id,
    )
    return rows


async def unread(
    conn: asyncpg.Connection, member_id: str, conversation_ids: list[uuid.UUID], cap: int
) -> dict[uuid.UUID, tuple[int, int]]:
    """Per conversation: the member's read mark, and how many messages after it the member may read (within
    a stretch of membership) that others sent and nobody deleted, counted up to ``cap``."""
    rows = await conn.fetch(
        "SELECT c.id, coalesce(r.read_seq, 0) AS read_seq,"
        " (SELECT count(*) FROM (SELECT 1 FROM messages msg"
        "   WHERE msg.conversation_id = c.id AND msg.seq > coalesce(r.read_seq, 0)"
        "     AND msg.sender_id <> $1 AND msg.deleted_at IS NULL"
        "     AND EXISTS (SELECT 1 FROM access a WHERE a.conversation_id = c.id AND a.member_id = $1"
        "                 AND msg.seq > a.after_seq AND (a.until_seq IS NULL OR msg.seq <= a.until_seq))"
        "   LIMIT $3) capped) AS unread"
        " FROM unnest($2::uuid[]) AS c (id)"
        " LEFT JOIN receipts r ON r.conversation_id = c.id AND r.member_id = $1",
        member_id,
        conversation_ids,
        cap,
    )
    return {r["id"]: (r["read_seq"], r["unread"]) for r in rows}
