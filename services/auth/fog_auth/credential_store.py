"""SQL for API keys and node credentials. Secrets are looked up by their SHA-256 only."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

#: last-used times are written at most this often per credential: a hot key must not turn every
#: request into a row update
LAST_USED_RESOLUTION = timedelta(seconds=60)

API_KEY_COLUMNS = "id, name, scopes, created_at, expires_at, last_used_at, revoked_at"


@dataclass(frozen=True, slots=True)
class ApiKeyOwner:
    id: uuid.UUID
    user_id: uuid.UUID
    scopes: list[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    owner_roles: list[str]
    owner_disabled: bool


@dataclass(frozen=True, slots=True)
class NodeCredentialOwner:
    id: uuid.UUID
    node_id: str
    owner_id: uuid.UUID
    revoked_at: datetime | None
    owner_disabled: bool


async def insert_api_key(
    conn: asyncpg.Connection,
    key_id: uuid.UUID,
    user_id: uuid.UUID,
    name: str,
    secret_hash: bytes,
    scopes: list[str],
    now: datetime,
    expires_at: datetime | None,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO api_keys (id, user_id, name, secret_hash, scopes, created_at, expires_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {API_KEY_COLUMNS}",
        key_id,
        user_id,
        name,
        secret_hash,
        scopes,
        now,
        expires_at,
    )
    return row


async def api_keys_of(conn: asyncpg.Connection, user_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at", user_id)
    )


async def revoke_api_key(conn: asyncpg.Connection, key_id: uuid.UUID, user_id: uuid.UUID, now: datetime) -> bool:
    """False when the user has no such live key (someone else's key looks the same as none)."""
    revoked = await conn.fetchval(
        "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING true",
        key_id,
        user_id,
        now,
    )
    return bool(revoked)


async def api_key_by_hash(conn: asyncpg.Connection, secret_hash: bytes) -> ApiKeyOwner | None:
    row = await conn.fetchrow(
        "SELECT k.id, k.user_id, k.scopes, k.expires_at, k.revoked_at,"
        " u.roles AS owner_roles, u.disabled AS owner_disabled"
        " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.secret_hash = $1",
        secret_hash,
    )
    return ApiKeyOwner(**dict(row)) if row else None


async def touch_api_key(conn: asyncpg.Connection, key_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        key_id,
        now,
        now - LAST_USED_RESOLUTION,
    )


async def node_owner(conn: asyncpg.Connection, node_id: str) -> uuid.UUID | None:
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT owner_id FROM node_owners WHERE node_id = $1 FOR UPDATE", node_id
    )
    return owner


async def insert_node_owner(conn: asyncpg.Connection, node_id: str, owner_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO node_owners (node_id, owner_id, created_at) VALUES ($1, $2, $3)", node_id, owner_id, now
    )


async def revoke_node_credentials(conn: asyncpg.Connection, node_id: str, now: datetime) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "UPDATE node_credentials SET revoked_at = $2 WHERE node_id = $1 AND revoked_at IS NULL RETURNING id",
        node_id,
        now,
    )
    return [r["id"] for r in rows]


async def insert_node_credential(
    conn: asyncpg.Connection, credential_id: uuid.UUID, node_id: str, secret_hash: bytes, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO node_credentials (id, node_id, secret_hash, issued_at) VALUES ($1, $2, $3, $4)",
        credential_id,
        node_id,
        secret_hash,
        now,
    )


async def node_credential_by_hash(conn: asyncpg.Connection, secret_hash: bytes) -> NodeCredentialOwner | None:
    row = await conn.fetchrow(
        "SELECT c.id, c.node_id, o.owner_id, c.revoked_at, u.disabled AS owner_disabled"
        " FROM node_credentials c JOIN node_owners o ON o.node_id = c.node_id JOIN users u ON u.id = o.owner_id"
        " WHERE c.secret_hash = $1",
        secret_hash,
    )
    return NodeCredentialOwner(**dict(row)) if row else None


async def touch_node_credential(conn: asyncpg.Connection, credential_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE node_credentials SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
        credential_id,
        now,
        now - LAST_USED_RESOLUTION,
    )


async def node_ids_of(conn: asyncpg.Connection, owner_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch("SELECT node_id FROM node_owners WHERE owner_id = $1", owner_id)
    return [r["node_id"] for r in rows]
