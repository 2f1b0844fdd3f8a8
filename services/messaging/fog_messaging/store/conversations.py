"""Conversations, their members and roles, and who may read which stretch of messages."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from fog_messaging.domain import Access, Role


async def direct_conversation_id(conn: asyncpg.Connection, key: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval("SELECT id FROM conversations WHERE direct_key = $1", key)
    return found


async def create_direct(conn: asyncpg.Connection, key: str, members: Sequence[str], now: datetime) -> uuid.UUID:
    """The pair's conversation, made now unless a concurrent first message made it already."""
    made: uuid.UUID | None = await conn.fetchval(
        "INSERT INTO conversations (id, kind, direct_key, created_at, active_at) VALUES ($1, 'direct', $2, $3, $3)"
        " ON CONFLICT (direct_key) DO NOTHING RETURNING id",
        uuid.uuid4(),
        key,
        now,
    )
    if made is None:
        existing = await direct_conversation_id(conn, key)
        assert existing is not None
        return existing
    for member in members:
        await add_member(conn, made, member, "member", after_seq=0, now=now)
    return made


async def create_group(conn: asyncpg.Connection, conversation_id: uuid.UUID, name: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO conversations (id, kind, name, created_at, active_at) VALUES ($1, 'group', $2, $3, $3)",
        conversation_id,
        name,
        now,
    )


async def conversation(conn: asyncpg.Connection, conversation_id: uuid.UUID, *, lock: bool = False) -> Any:
    """The conversation's row; ``lock`` holds it to the end of the transaction (numbering, roster)."""
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        "SELECT id, kind, name, last_seq, max_weight, created_at FROM conversations WHERE id = $1" + suffix,
        conversation_id,
    )


async def send_context(
    conn: asyncpg.Connection, conversation_id: uuid.UUID, sender_id: str, client_msg_id: str
) -> asyncpg.Record | None:
    """What a send needs, in one statement, with the conversation's row locked (numbering):
    the conversation, its ``roster`` (member ids in joining order), the sender's access periods
    (``after_seqs``, ``until_seqs``) and the seq of a message the sender already sent with this
    client message id (``existing_seq``). None: no such conversation."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT c.id, c.kind, c.name, c.last_seq, c.max_weight, c.created_at,"
        " ARRAY(SELECT member_id FROM members WHERE conversation_id = c.id ORDER BY joined_at, member_id) AS roster,"
        " ARRAY(SELECT after_seq FROM access WHERE conversation_id = c.id AND member_id = $2"
        "       ORDER BY after_seq) AS after_seqs,"
        " ARRAY(SELECT until_seq FROM access WHERE conversation_id = c.id AND member_id = $2"
        "       ORDER BY after_seq) AS until_seqs,"
        " (SELECT seq FROM messages WHERE conversation_id = c.id AND sender_id = $2 AND client_msg_id = $3)"
        "   AS existing_seq"
        " FROM conversations c WHERE c.id = $1 FOR UPDATE OF c",
        conversation_id,
        sender_id,
        client_msg_id,
    )
    return row


def periods_in(context: asyncpg.Record) -> list[Access]:
    """The sender's access periods of a :func:`send_context`."""
    return [Access(after_seq=a, until_seq=u) for a, u in zip(context["after_seqs"], context["until_seqs"], strict=True)]


async def members(conn: asyncpg.Connection, conversation_id: uuid.UUID) -> dict[str, Role]:
    rows = await conn.fetch(
        "SELECT member_id, role FROM members WHERE conversation_id = $1 ORDER BY joined_at, member_id",
        conversation_id,
    )
    return {r["member_id"]: r["role"] for r in rows}


async def add_member(
    conn: asyncpg.Connection, conversation_id: uuid.UUID, member_id: str, role: Role, *, after_seq: int, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO members (conversation_id, member_id, role, joined_at) VALUES ($1, $2, $3, $4)",
        conversation_id,
        member_id,
        role,
        now,
    )
    await conn.execute(
        "INSERT INTO access (conversation_id, member_id, after_seq) VALUES ($1, $2, $3)",
        conversation_id,
        member_id,
        after_seq,
    )


async def remove_member(conn: asyncpg.Connection, conversation_id: uuid.UUID, member_id: str, until_seq: int) -> None:
    await conn.execute("DELETE FROM members WHERE conversation_id = $1 AND member_id = $2", conversation_id, member_id)
    await conn.execute(
        "UPDATE access SET until_seq = $3 WHERE conversation_id = $1 AND member_id = $2 AND until_seq IS NULL",
        conversation_id,
        member_id,
        until_seq,
    )


async def set_role(conn: asyncpg.Connection, conversation_id: uuid.UUID, member_id: str, role: Role) -> None:
    await conn.execute(
        "UPDATE members SET role = $3 WHERE conversation_id = $1 AND member_id = $2", conversation_id, member_id, role
    )


async def access(conn: asyncpg.Connection, conversation_id: uuid.UUID, member_id: str) -> list[Access]:
    rows = await conn.fetch(
        "SELECT after_seq, until_seq FROM access WHERE conversation_id = $1 AND member_id = $2",
        conversation_id,
        member_id,
    )
    return [Access(after_seq=r["after_seq"], until_seq=r["until_seq"]) for r in rows]


async def readers(conn: asyncpg.Connection, conversation_id: uuid.UUID, seq: int) -> list[str]:
    """The current members who may read message ``seq``: the audience of its edits."""
    rows = await conn.fetch(
        "SELECT DISTINCT m.member_id FROM members m JOIN access a"
        " ON a.conversation_id = m.conversation_id AND a.member_id = m.member_id"
        " WHERE m.conversation_id = $1 AND $2 > a.after_seq AND (a.until_seq IS NULL OR $2 <= a.until_seq)"
        " ORDER BY m.member_id",
        conversation_id,
        seq,
    )
    return [r["member_id"] for r in rows]


async def rosters(conn: asyncpg.Connection, conversation_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Role]]:
    rows = await conn.fetch(
        "SELECT conversation_id, member_id, role FROM members WHERE conversation_id = any($1::uuid[])"
        " ORDER BY joined_at, member_id",
        list(conversation_ids),
    )
    found: dict[uuid.UUID, dict[str, Role]] = {}
    for r in rows:
        found.setdefault(r["conversation_id"], {})[r["member_id"]] = r["role"]
    return found


async def conversations_of(conn: asyncpg.Connection, member_id: str) -> list[asyncpg.Record]:
    """The conversations the member belongs to now, most recently active first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT c.id, c.kind, c.name, c.last_seq, c.created_at FROM conversations c"
        " JOIN members m ON m.conversation_id = c.id WHERE m.member_id = $1 ORDER BY c.active_at DESC, c.id LIMIT 1000",
        member_id,
    )
    return rows
