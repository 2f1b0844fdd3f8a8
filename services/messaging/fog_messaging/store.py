"""SQL of the messaging service. Every function runs on a connection the caller owns.

jsonb values go in and come out as Python objects (the pool's codec, ``fog_shared.pg.pool``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from fog_messaging.domain import Access, Receipt, Role

MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.seq, m.sender_id, m.text, m.client_msg_id, m.reply_to_seq, m.device_id, m.clock,"
    " m.concurrent_with, m.sent_at, m.edited_at, m.deleted_at"
)


# -- who exists -----------------------------------------------------------------------------


async def upsert_user(conn: asyncpg.Connection, user_id: str, email: str, registered_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO users (user_id, email, registered_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (user_id) DO UPDATE SET email = EXCLUDED.email",
        user_id,
        email,
        registered_at,
    )


async def count_users(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM users"))


async def known_users(conn: asyncpg.Connection, user_ids: Sequence[str]) -> set[str]:
    rows = await conn.fetch("SELECT user_id FROM users WHERE user_id = any($1::text[])", list(user_ids))
    return {r["user_id"] for r in rows}


async def set_node_owner(conn: asyncpg.Connection, node_id: str, owner_id: str, *, revoked: bool) -> None:
    await conn.execute(
        "INSERT INTO node_owners (node_id, owner_id, revoked) VALUES ($1, $2, $3)"
        " ON CONFLICT (node_id) DO UPDATE SET owner_id = EXCLUDED.owner_id, revoked = EXCLUDED.revoked",
        node_id,
        owner_id,
        revoked,
    )


async def node_owner(conn: asyncpg.Connection, node_id: str) -> str | None:
    owner: str | None = await conn.fetchval(
        "SELECT owner_id FROM node_owners WHERE node_id = $1 AND NOT revoked", node_id
    )
    return owner


# -- conversations and members --------------------------------------------------------------


async def direct_conversation_id(conn: asyncpg.Connection, key: str) -> uuid.UUID | None:
    found: uuid.UUID | None = await conn.fetchval("SELECT id FROM conversations WHERE direct_key = $1", key)
    return found


async def create_direct(conn: asyncpg.Connection, key: str, members: Sequence[str], now: datetime) -> uuid.UUID:
    """The pair's conversation, made now unless a concurrent first message made it already."""
    made: uuid.UUID | None = await conn.fetchval(
        "INSERT INTO conversations (id, kind, direct_key, created_at) VALUES ($1, 'direct', $2, $3)"
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
        "INSERT INTO conversations (id, kind, name, created_at) VALUES ($1, 'group', $2, $3)",
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
        " JOIN members m ON m.conversation_id = c.id WHERE m.member_id = $1 ORDER BY c.last_seq DESC, c.id LIMIT 1000",
        member_id,
    )
    return rows


# -- messages -------------------------------------------------------------------------------


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


async def insert_message(conn: asyncpg.Connection, values: dict[str, Any]) -> asyncpg.Record:
    """Store the message and move the conversation's numbering on (the caller holds its row)."""
    await conn.execute(
        "UPDATE conversations SET last_seq = $2, max_weight = greatest(max_weight, $3) WHERE id = $1",
        values["conversation_id"],
        values["seq"],
        values["weight"],
    )
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await conn.execute(
        f"INSERT INTO messages ({', '.join(columns)}) VALUES ({placeholders})", *(values[c] for c in columns)
    )
    stored = await message(conn, values["conversation_id"], values["seq"])
    assert stored is not None
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


# -- receipts -------------------------------------------------------------------------------


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


# -- timelines ------------------------------------------------------------------------------


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
