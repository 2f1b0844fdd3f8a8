"""SQL of the auth service. Every function runs on a connection (and transaction) the caller owns."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True, slots=True)
class UserRow:
    id: uuid.UUID
    email: str
    password_hash: str
    roles: list[str]
    disabled: bool
    failed_logins: int
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class RefreshRow:
    session_id: uuid.UUID
    user_id: uuid.UUID
    expires_at: datetime
    used_at: datetime | None
    session_revoked_at: datetime | None


async def insert_user(
    conn: asyncpg.Connection, user_id: uuid.UUID, email: str, password_hash: str, roles: list[str], now: datetime
) -> bool:
    """False when the e-mail is taken (case-insensitively)."""
    inserted = await conn.fetchval(
        "INSERT INTO users (id, email, password_hash, roles, created_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (lower(email)) DO NOTHING RETURNING true",
        user_id,
        email,
        password_hash,
        roles,
        now,
    )
    return bool(inserted)


async def user_by_email(conn: asyncpg.Connection, email: str, *, for_update: bool = False) -> UserRow | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        "SELECT id, email, password_hash, roles, disabled, failed_logins, locked_until"
        f" FROM users WHERE lower(email) = lower($1){lock}",
        email,
    )
    return UserRow(**dict(row)) if row else None


async def user_by_id(conn: asyncpg.Connection, user_id: uuid.UUID) -> UserRow | None:
    row = await conn.fetchrow(
        "SELECT id, email, password_hash, roles, disabled, failed_logins, locked_until FROM users WHERE id = $1",
        user_id,
    )
    return UserRow(**dict(row)) if row else None


async def record_login_failure(conn: asyncpg.Connection, user_id: uuid.UUID, locked_until: datetime | None) -> None:
    await conn.execute(
        "UPDATE users SET failed_logins = failed_logins + 1, locked_until = $2 WHERE id = $1", user_id, locked_until
    )


async def record_login_success(conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str | None) -> None:
    await conn.execute(
        "UPDATE users SET failed_logins = 0, locked_until = NULL,"
        " password_hash = coalesce($2, password_hash) WHERE id = $1",
        user_id,
        password_hash,
    )


async def source_failures(conn: asyncpg.Connection, source: str) -> tuple[int, datetime | None]:
    row = await conn.fetchrow("SELECT failures, locked_until FROM source_failures WHERE source = $1", source)
    return (row["failures"], row["locked_until"]) if row else (0, None)


async def record_source_failure(
    conn: asyncpg.Connection, source: str, failures: int, locked_until: datetime | None, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO source_failures (source, failures, locked_until, updated_at) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (source) DO UPDATE SET failures = $2, locked_until = $3, updated_at = $4",
        source,
        failures,
        locked_until,
        now,
    )


async def clear_source_failures(conn: asyncpg.Connection, source: str) -> None:
    await conn.execute("DELETE FROM source_failures WHERE source = $1", source)


async def insert_session(
    conn: asyncpg.Connection, session_id: uuid.UUID, user_id: uuid.UUID, source: str, now: datetime
) -> None:
    await conn.execute(
        "INSERT INTO sessions (id, user_id, source, created_at) VALUES ($1, $2, $3, $4)",
        session_id,
        user_id,
        source,
        now,
    )


async def insert_refresh_token(
    conn: asyncpg.Connection, token_hash: bytes, session_id: uuid.UUID, now: datetime, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, issued_at, expires_at) VALUES ($1, $2, $3, $4)",
        token_hash,
        session_id,
        now,
        expires_at,
    )


async def refresh_token_for_update(conn: asyncpg.Connection, token_hash: bytes) -> RefreshRow | None:
    """The token and its session, locked: two concurrent refreshes of one token cannot both win."""
    row = await conn.fetchrow(
        "SELECT t.session_id, s.user_id, t.expires_at, t.used_at, s.revoked_at AS session_revoked_at"
        " FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id"
        " WHERE t.token_hash = $1 FOR UPDATE OF t, s",
        token_hash,
    )
    return RefreshRow(**dict(row)) if row else None


async def mark_refresh_token_used(conn: asyncpg.Connection, token_hash: bytes, now: datetime) -> None:
    await conn.execute("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1", token_hash, now)


async def revoke_session(conn: asyncpg.Connection, session_id: uuid.UUID, reason: str, now: datetime) -> bool:
    """False if it was already revoked (no second event)."""
    revoked = await conn.fetchval(
        "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 WHERE id = $1 AND revoked_at IS NULL RETURNING true",
        session_id,
        now,
        reason,
    )
    return bool(revoked)


async def signing_keys(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(
        await conn.fetch("SELECT kid, private_pem, created_at, retired_at FROM signing_keys ORDER BY created_at")
    )


async def insert_signing_key(conn: asyncpg.Connection, kid: str, private_pem: bytes, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO signing_keys (kid, private_pem, created_at) VALUES ($1, $2, $3)", kid, private_pem, now
    )


async def retire_signing_keys(conn: asyncpg.Connection, now: datetime) -> None:
    await conn.execute("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL", now)


#: a user as admins see them (``contract.UserView``)
_VIEW = (
    "id, email, roles, disabled, created_at, failed_logins, locked_until, password_changed_at,"
    " (SELECT max(s.created_at) FROM sessions s WHERE s.user_id = users.id) AS last_login_at"
)


async def list_users(
    conn: asyncpg.Connection, limit: int, offset: int, *, email: str | None = None
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_VIEW} FROM users"
            " WHERE $3::text IS NULL OR lower(email) = lower($3)"
            " ORDER BY created_at, id LIMIT $1 OFFSET $2",
            limit,
            offset,
            email,
        )
    )


async def user_view(conn: asyncpg.Connection, user_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(f"SELECT {_VIEW} FROM users WHERE id = $1", user_id)
    return row


async def lock_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> UserRow | None:
    row = await conn.fetchrow(
        "SELECT id, email, password_hash, roles, disabled, failed_logins, locked_until FROM users"
        " WHERE id = $1 FOR UPDATE",
        user_id,
    )
    return UserRow(**dict(row)) if row else None


async def set_roles(conn: asyncpg.Connection, user_id: uuid.UUID, roles: list[str]) -> None:
    await conn.execute("UPDATE users SET roles = $2 WHERE id = $1", user_id, roles)


async def disable_user(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> None:
    await conn.execute("UPDATE users SET disabled = true, disabled_at = $2 WHERE id = $1", user_id, now)


#: a session that can still be used: not revoked, and a refresh token of it not expired (an access token
#: never outlives the refresh token issued with it, so a session without one has no live token either)
_LIVE_SESSION = (
    "s.user_id = $1 AND s.revoked_at IS NULL"
    " AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id AND t.expires_at > $2)"
)


async def live_sessions(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> list[uuid.UUID]:
    rows = await conn.fetch(f"SELECT s.id FROM sessions s WHERE {_LIVE_SESSION}", user_id, now)
    return [r["id"] for r in rows]


async def other_active_admins(conn: asyncpg.Connection, user_id: uuid.UUID) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM users WHERE 'admin' = ANY (roles) AND NOT disabled AND id <> $1", user_id
    )
    return count


async def enable_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    await conn.execute("UPDATE users SET disabled = false, disabled_at = NULL WHERE id = $1", user_id)


async def set_password(conn: asyncpg.Connection, user_id: uuid.UUID, password_hash: str, now: datetime) -> None:
    """The new password, and a clean slate for the lockout (the old password's failures are not its)."""
    await conn.execute(
        "UPDATE users SET password_hash = $2, password_changed_at = $3, failed_logins = 0, locked_until = NULL"
        " WHERE id = $1",
        user_id,
        password_hash,
        now,
    )


async def live_session_views(conn: asyncpg.Connection, user_id: uuid.UUID, now: datetime) -> list[asyncpg.Record]:
    """The user's live sessions, the most recently active first (``last_active_at``: its latest token)."""
    return list(
        await conn.fetch(
            "SELECT s.id, s.source, s.created_at,"
            " (SELECT max(t.issued_at) FROM refresh_tokens t WHERE t.session_id = s.id) AS last_active_at"
            f" FROM sessions s WHERE {_LIVE_SESSION} ORDER BY last_active_at DESC, s.id",
            user_id,
            now,
        )
    )


async def session_owner(conn: asyncpg.Connection, session_id: uuid.UUID) -> uuid.UUID | None:
    owner: uuid.UUID | None = await conn.fetchval("SELECT user_id FROM sessions WHERE id = $1", session_id)
    return owner


async def replace_password_reset(
    conn: asyncpg.Connection,
    token_hash: bytes,
    user_id: uuid.UUID,
    issued_by: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """The user's one reset token: any earlier unused one is dropped with it."""
    await conn.execute("DELETE FROM password_resets WHERE user_id = $1 AND used_at IS NULL", user_id)
    await conn.execute(
        "INSERT INTO password_resets (token_hash, user_id, issued_by, issued_at, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        token_hash,
        user_id,
        issued_by,
        now,
        expires_at,
    )


async def password_reset_for_update(conn: asyncpg.Connection, token_hash: bytes) -> asyncpg.Record | None:
    """The token, locked: the same token spent twice at once cannot both win."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT user_id, expires_at, used_at FROM password_resets WHERE token_hash = $1 FOR UPDATE", token_hash
    )
    return row


async def mark_password_reset_used(conn: asyncpg.Connection, token_hash: bytes, now: datetime) -> None:
    await conn.execute("UPDATE password_resets SET used_at = $2 WHERE token_hash = $1", token_hash, now)


async def unlock_user(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    await conn.execute("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1", user_id)
