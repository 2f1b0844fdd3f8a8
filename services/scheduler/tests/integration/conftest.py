"""The scheduler's schema on real Postgres, migrated, with a small pool on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from fog_scheduler.app import MIGRATIONS
from fog_shared.pg.pool import create_pool
from fog_shared.testing.plugin import ServiceDbFactory


@pytest.fixture
async def pool(service_db: ServiceDbFactory) -> AsyncIterator[tuple[asyncpg.Pool, str, str]]:
    """A pool on a fresh scheduler schema, its DSN and the schema's name."""
    db = await service_db("scheduler", MIGRATIONS)
    pool = await create_pool(db.dsn, db.schema, min_size=1, max_size=2)
    try:
        yield pool, db.dsn, db.schema
    finally:
        await pool.close()
