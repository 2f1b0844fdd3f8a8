"""asyncpg pools that live inside one service's schema."""

from __future__ import annotations

import json

import asyncpg


def _jsonb_out(value: object) -> bytes:
    return b"\x01" + json.dumps(value).encode()  # jsonb's binary format: version 1, then the text


def _jsonb_in(data: bytes) -> object:
    return json.loads(data[1:])


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Binary, so that COPY (bulk inserts of job arrays) can carry jsonb too.
    await conn.set_type_codec("jsonb", encoder=_jsonb_out, decoder=_jsonb_in, schema="pg_catalog", format="binary")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release: a round trip per use, for state we never leave.

    Pooled connections hold no LISTENs, cursors, session settings or session advisory locks in
    Fog (the relay's lock and LISTEN live on its own connection); transactions are already closed
    by their context managers.
    """


async def create_pool(dsn: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections resolve unqualified names in ``schema`` (then nowhere else)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"search_path": schema, "application_name": f"fog-{schema}"},
    )
    assert pool is not None
    return pool


async def connect(dsn: str, schema: str | None = None) -> asyncpg.Connection:
    settings = {"search_path": schema} if schema else {}
    conn: asyncpg.Connection = await asyncpg.connect(dsn, server_settings=settings)
    await _init_connection(conn)
    return conn
