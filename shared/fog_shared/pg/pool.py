"""asyncpg pools that live inside one service's schema."""

from __future__ import annotations

import json

import asyncpg


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in ``schema`` (then nowhere else)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings={"search_path": schema, "application_name": f"fog-{schema}"},
    )
    assert pool is not None
    return pool


async def connect(dsn: str, schema: str | None = None) -> asyncpg.Connection:
    settings = {"search_path": schema} if schema else {}
    conn: asyncpg.Connection = await asyncpg.connect(dsn, server_settings=settings)
    await _init_connection(conn)
    return conn
