"""Housekeeping trims what is old and keeps what may still matter."""

from __future__ import annotations

import asyncpg

from fog_shared.pg import outbox
from fog_shared.pg.housekeeping import trim
from fog_shared.testing.plugin import ServiceDb

from .conftest import user


async def test_trim_removes_old_published_rows_and_old_inbox_records_only(producer_db: ServiceDb) -> None:
    conn = await asyncpg.connect(producer_db.dsn)
    try:
        for n in range(3):
            await outbox.record(conn, user(n), source="fog/auth")
        await conn.execute(
            "UPDATE outbox SET published_at = now() - interval '2 days' WHERE id = (SELECT min(id) FROM outbox)"
        )
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = (SELECT max(id) FROM outbox)")
        await conn.execute(
            "INSERT INTO inbox (consumer, event_id, handled_at) VALUES"
            " ('c', 'old', now() - interval '20 days'), ('c', 'recent', now())"
        )
        assert await trim(conn, outbox_keep_s=86_400, inbox_keep_s=14 * 86_400) == (1, 1)
        # The unpublished row and the recently published one stay; so does the recent inbox record.
        assert await conn.fetchval("SELECT count(*) FROM outbox") == 2
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 1
        assert await conn.fetchval("SELECT array_agg(event_id) FROM inbox") == ["recent"]
    finally:
        await conn.close()
