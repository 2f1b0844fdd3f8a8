"""Messages: stored numbered, edited, tombstoned, listed for a reader."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.sender_id, m.text, m.client_msg_id, m.reply_to_seq, m.device_id, m.clock,"
    " m.concurrent_with, m.sent_at, m.edited_at, m.deleted_at"
)


async def message_by_client_id(
    conn: asyncpg.Connection, conversation_id: uuid.UUID, sender_id: str, client_msg_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m"
        " WHERE m.conversation_id = $1 AND m.sender_id = $2 AND m.client_msg_id = $3",
        conversation_id,
        sender_id,
        client_msg_id,
    )


async def message(conn: asyncpg.Connection, conversation_id: uuid.UUID, seq: int) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1 AND m.seq = $2", conversation_id, seq
    )


async def recent_clocks(conn: asyncpg.Connection, conversation_id: uuid.UUID, limit: int) -> list[tuple[int, Any]]:
    rows = await conn.fetch(
        "SELECT seq, clock FROM messages WHERE conversation_id = $1 AND clock IS NOT NULL ORDER BY seq DESC LIMIT $2",
        conversation_id,
        limit,
    )
    return [(r["seq"], r["clock"]) for r in rows]


async def device_history(
    conn: asyncpg.Connection, conversation_id: uuid.UUID, sender_id: str, device_id: str
) -> tuple[bool, int | None]:
    """Whether another sender wrote from ``device_id`` in this conversation, and the highest
    counter the sender's device gave itself so far."""
    row = await conn.fetchrow(
        "SELECT coalesce(bool_or(sender_id <> $2), false) AS taken,"
        " max((clock ->> $3)::bigint) FILTER (WHERE sender_id = $2) AS counter"
        " FROM messages WHERE conversation_id = $1 AND device_id = $3",
        conversation_id,
        sender_id,
        device_id,
    )
    assert row is not None
    return bool(row["taken"]), row["counter"]


#: what :func:`insert_message` stores, in its parameters' order
INSERTED_COLUMNS = (
    "conversation_id", "seq", "id", "sender_id", "client_msg_id", "device_id", "text", "reply_to_seq", "clock",
    "weight", "concurrent_with", "sent_at",
)  # fmt: skip


async def insert_message(conn: asyncpg.Connection, values: dict[str, Any]) -> asyncpg.Record:
    """Store the message and move the conversation's numbering on (the caller holds its row), in
    one statement; returns the stored message."""
    placeholders = ", ".join(f"${i}" for i in range(1, len(INSERTED_COLUMNS) + 1))
    stored: asyncpg.Record = await conn.fetchrow(
        "WITH moved AS (UPDATE conversations SET last_seq = $2, max_weight = greatest(max_weight, $10),"
        "               active_at = $12 WHERE id = $1)"
        f" INSERT INTO messages AS m ({', '.join(INSERTED_COLUMNS)}) VALUES ({placeholders})"
        f" RETURNING {MESSAGE_COLUMNS}",
        *(values[column] for column in INSERTED_COLUMNS),
    )
    return stored


async def edit_message(
    conn: asyncpg.Connection, conversation_id: uuid.UUID, seq: int, text: str, now: datetime
) -> asyncpg.Record:
    await conn.execute(
        "UPDATE messages SET text = $3, edited_at = $4 WHERE conversation_id = $1 AND seq = $2",
        conversation_id,
        seq,
        text,
        now,
    )
    edited = await message(conn, conversation_id, seq)
    assert edited is not None
    return edited


async def delete_message(conn: asyncpg.Connection, conversation_id: uuid.UUID, seq: int, now: datetime) -> None:
    await conn.execute(
        "UPDATE messages SET text = NULL, deleted_at = $3 WHERE conversation_id = $1 AND seq = $2",
        conversation_id,
        seq,
        now,
    )


async def search_messages(
    conn: asyncpg.Connection, reader: str, text: str, *, conversation_id: uuid.UUID | None, limit: int
) -> list[asyncpg.Record]:
    """The messages ``reader`` may read (within a stretch of membership) whose text holds ``text``, any case,
    the newest first; deleted ones never. Only the reader's conversations are looked through."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM access a JOIN messages m ON m.conversation_id = a.conversation_id"
        "  AND m.seq > a.after_seq AND (a.until_seq IS NULL OR m.seq <= a.until_seq)"
        " WHERE a.member_id = $1 AND ($3::uuid IS NULL OR a.conversation_id = $3)"
        "  AND m.deleted_at IS NULL AND strpos(lower(m.text), lower($2)) > 0"
        " ORDER BY m.sent_at DESC, m.id LIMIT $4",
        reader,
        text,
        conversation_id,
        limit,
    )
    return rows


async def list_messages(
    conn: asyncpg.Connection,
    conversation_id: uuid.UUID,
    reader: str,
    *,
    after_seq: int | None,
    before_seq: int | None,
    limit: int,
    causal: bool,
) -> list[asyncpg.Record]:
    """The messages ``reader`` may read (see ``domain.Access``), in seq order or causal order;
    paging back (``before_seq`` alone) returns the newest ones before it."""
    backwards = before_seq is not None and after_seq is None
    if causal:
        order = "m.weight, coalesce(m.device_id, ''), m.sender_id, m.client_msg_id"
    else:
        order = "m.seq DESC" if backwards else "m.seq"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = $1"
        " AND ($3::bigint IS NULL OR m.seq > $3) AND ($4::bigint IS NULL OR m.seq < $4)"
        " AND EXISTS (SELECT 1 FROM access a WHERE a.conversation_id = m.conversation_id AND a.member_id = $2"
        "             AND m.seq > a.after_seq AND (a.until_seq IS NULL OR m.seq <= a.until_seq))"
        f" ORDER BY {order} LIMIT $5",
        conversation_id,
        reader,
        after_seq,
        before_seq,
        limit,
    )
    return rows
