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
