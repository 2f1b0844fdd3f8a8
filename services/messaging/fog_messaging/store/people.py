"""Who exists, as messaging learned it from auth's events: users, and whose each node is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg


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


async def emails_of(conn: asyncpg.Connection, user_ids: Sequence[str]) -> dict[str, str]:
    """The e-mail address of each of ``user_ids`` that is a known user (a node's member id is not)."""
    rows = await conn.fetch("SELECT user_id, email FROM users WHERE user_id = any($1::text[])", list(user_ids))
    return {r["user_id"]: r["email"] for r in rows}


async def user_by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    """The user who signed up with ``email``, whatever its case (as auth compares them)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT user_id, email FROM users WHERE lower(email) = lower($1) ORDER BY registered_at LIMIT 1", email
    )
    return row


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
