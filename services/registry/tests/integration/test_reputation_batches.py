"""A batch of job outcomes moves reputations as the same outcomes one at a time would: the same scores and the
same announcements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from fog_registry import service, store
from fog_registry.app import MIGRATIONS
from fog_shared.events.registry import NodeReputationChanged
from fog_shared.pg.pool import create_pool
from fog_shared.testing.plugin import ServiceDbFactory

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CAPABILITIES = {"cpu_cores": 2, "memory_bytes": 1 << 30, "disk_bytes": 0, "arch": "x86_64", "os": "Linux"}
#: per node: successes and node faults, in this order
HISTORY = [True, True, True, False, True, False, False, True, True, True, True, True]


@pytest.fixture
async def pool(service_db: ServiceDbFactory) -> AsyncIterator[asyncpg.Pool]:
    db = await service_db("registry", MIGRATIONS)
    pool = await create_pool(db.dsn, db.schema, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            for node_id in ("one-by-one", "batched-a", "batched-b"):
                await store.insert_node(
                    conn, node_id=node_id, owner_id="o", name=node_id, capabilities=CAPABILITIES, labels={},
                    region=None, location=None, status="ready", now=NOW,
                )  # fmt: skip
        yield pool
    finally:
        await pool.close()


def outcomes(node_id: str) -> list[service.Outcome]:
    return [service.Outcome(node_id, success, 1.0, "job completed" if success else "job failed") for success in HISTORY]


State = tuple[float, float, float, list[tuple[float, float, str]]]


async def state(conn: asyncpg.Connection, node_id: str) -> State:
    row = await conn.fetchrow("SELECT reputation, rep_successes, rep_failures FROM nodes WHERE id = $1", node_id)
    assert row is not None
    subject = NodeReputationChanged.TYPE.subject
    bodies = await conn.fetch("SELECT body FROM outbox WHERE subject = $1 ORDER BY id", subject)
    announced = [
        (event.previous_reputation, event.reputation, event.reason)
        for event in (NodeReputationChanged.from_json(body["body"]) for body in bodies)
        if event.node_id == node_id
    ]
    return row["reputation"], row["rep_successes"], row["rep_failures"], announced


async def test_a_batch_of_outcomes_moves_reputations_as_the_same_outcomes_one_at_a_time(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for outcome in outcomes("one-by-one"):
            async with conn.transaction():
                await service.record_outcomes(conn, [outcome], now=NOW)
        interleaved = [pair for both in zip(outcomes("batched-a"), outcomes("batched-b"), strict=True) for pair in both]
        async with conn.transaction():
            await service.record_outcomes(conn, interleaved, now=NOW)

        expected = await state(conn, "one-by-one")
        assert len(expected[3]) >= 3, "the history moves the score noticeably, up and down, several times"
        assert await state(conn, "batched-a") == expected
        assert await state(conn, "batched-b") == expected
