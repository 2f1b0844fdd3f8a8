"""SQL of the messaging service. Every function runs on a connection the caller owns."""

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
