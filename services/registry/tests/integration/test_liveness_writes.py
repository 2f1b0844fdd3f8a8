"""The liveness leader against real PostgreSQL. Its writes lock node rows in id order, so they
never deadlock with the reputation batches (which lock in id order too), and a status change whose
write failed is made again by the next tick instead of being lost. A leader that hears no gateway at
all takes no node down for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from fog_registry import domain, service, store
from fog_registry.app import MIGRATIONS
from fog_registry.liveness import LivenessMonitor
from fog_shared.commands.registry import Heartbeat, HeartbeatBatch, Usage
from fog_shared.events.registry import NodeStatusChanged
from fog_shared.pg.leader import LeaderLock
from fog_shared.pg.pool import create_pool
from fog_shared.testing.plugin import ServiceDb, ServiceDbFactory
from fog_shared.testing.waiting import wait_until

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CAPABILITIES = {"cpu_cores": 2, "memory_bytes": 1 << 30, "disk_bytes": 0, "arch": "x86_64", "os": "Linux"}
#: inserted highest first, so the table's physical order is the reverse of the ids' order
NODE_IDS = [f"node-{i:02d}" for i in range(40)]
FIRST, LAST = NODE_IDS[0], NODE_IDS[-1]
POLICY = domain.LivenessPolicy.for_interval(1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def db(service_db: ServiceDbFactory) -> ServiceDb:
    return await service_db("registry", MIGRATIONS)


@pytest.fixture
async def pool(db: ServiceDb) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db.dsn, db.schema, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            for node_id in reversed(NODE_IDS):
                await store.insert_node(
                    conn, node_id=node_id, owner_id="o", name=node_id, capabilities=CAPABILITIES, labels={},
                    region=None, location=None, status="ready", now=NOW,
                )  # fmt: skip
        yield pool
    finally:
        await pool.close()


@pytest.fixture
async def monitor(db: ServiceDb, pool: asyncpg.Pool) -> AsyncIterator[tuple[LivenessMonitor, Clock]]:
    clock = Clock()
    monitor = LivenessMonitor(LeaderLock(db.dsn, db.schema, "liveness"), POLICY, clock=clock)
    monitor.attach(pool)
    await monitor.step()  # takes the lead, with every node alive and in its grace period
    assert monitor.leading
    try:
        yield monitor, clock
    finally:
        await monitor.lock.release()


async def someone_waits_on_a_row_lock(pool: asyncpg.Pool) -> None:
    """Until some other backend of the test database waits for a row lock."""

    async def waiting() -> int:
        async with pool.acquire() as conn:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND datname = current_database() AND pid <> pg_backend_pid()"
            ))  # fmt: skip

    await wait_until(waiting, timeout=10, what="the writer to wait for the row held")


async def while_first_and_last_rows_are_taken(pool: asyncpg.Pool, write: Callable[[], Awaitable[Any]]) -> None:
    """Another transaction holds the lowest id's row while ``write`` runs, then takes the highest id's
    row too, as a reputation batch does. Whoever locks in another order deadlocks with it."""
    async with pool.acquire() as other, other.transaction():
        await other.execute("SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE", FIRST)
        writing = asyncio.ensure_future(write())
        await someone_waits_on_a_row_lock(pool)
        await other.execute("SELECT 1 FROM nodes WHERE id = $1 FOR UPDATE", LAST)
    await asyncio.wait_for(writing, timeout=30)


async def statuses(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        return {r["id"]: r["status"] for r in await conn.fetch("SELECT id, status FROM nodes")}


async def announced(pool: asyncpg.Pool) -> list[tuple[str, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT body FROM outbox WHERE subject = $1 ORDER BY id", NodeStatusChanged.TYPE.subject
        )
    events = [NodeStatusChanged.from_json(r["body"]) for r in rows]
    return [(e.node_id, e.status) for e in events]


async def test_status_changes_lock_node_rows_in_id_order(
    pool: asyncpg.Pool, monitor: tuple[LivenessMonitor, Clock]
) -> None:
    leader, clock = monitor
    assert next(iter(leader.nodes)) == LAST, "the leader meets the nodes in the table's order"
    clock.now += 100  # every node silent past its down time: all go down in one transaction

    await while_first_and_last_rows_are_taken(pool, leader.step)

    assert set((await statuses(pool)).values()) == {domain.DOWN}
    assert sorted(await announced(pool)) == [(n, domain.DOWN) for n in NODE_IDS]


async def test_heartbeats_are_written_in_id_order(pool: asyncpg.Pool) -> None:
    beats = [(node_id, NOW, {"cpu": 0.5}, 1, "fog-agent/1.0") for node_id in NODE_IDS]

    async def write() -> None:
        async with pool.acquire() as conn:
            await store.write_heartbeats(conn, beats)

    await while_first_and_last_rows_are_taken(pool, write)

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM nodes WHERE running_jobs = 1") == len(NODE_IDS)


async def test_a_status_change_whose_write_failed_is_made_by_the_next_tick(
    pool: asyncpg.Pool, monitor: tuple[LivenessMonitor, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    leader, clock = monitor
    record = service.record_transition
    failures = []

    async def fails_once(conn: asyncpg.Connection, transition: domain.Transition, *, now: datetime) -> bool:
        if not failures:
            failures.append(transition)
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return await record(conn, transition, now=now)

    monkeypatch.setattr(service, "record_transition", fails_once)
    clock.now += 100
    with pytest.raises(asyncpg.DeadlockDetectedError):
        await leader.step()
    assert set((await statuses(pool)).values()) == {"ready"}, "nothing of the failed transaction stayed"

    await leader.step()

    assert set((await statuses(pool)).values()) == {domain.DOWN}
    assert sorted(await announced(pool)) == [(n, domain.DOWN) for n in NODE_IDS]


def batch(node_ids: list[str], source: str = "gateway-1", agent: str | None = None) -> HeartbeatBatch:
    usage = Usage(cpu_percent=1.0, memory_used_bytes=1, disk_used_bytes=1)
    beats = [Heartbeat(node_id=node_id, seq=1, running_jobs=0, usage=usage, agent=agent) for node_id in node_ids]
    return HeartbeatBatch(source=source, heartbeats=beats)


async def test_while_no_gateway_is_heard_no_node_goes_down_and_after_only_the_silent_ones_do(
    pool: asyncpg.Pool, monitor: tuple[LivenessMonitor, Clock]
) -> None:
    """NATS down, say: every node's beats are lost on their way, which says nothing of the nodes."""
    leader, clock = monitor
    await leader.on_batch(batch(NODE_IDS))
    for _ in range(3 * int(POLICY.down_after_s)):  # deaf for three times the down time, ticking each second
        clock.now += 1
        await leader.step()
    assert set((await statuses(pool)).values()) == {"ready"}
    assert await announced(pool) == []

    heard, silent = NODE_IDS[:20], NODE_IDS[20:]  # heard again: half the nodes come back
    await leader.on_batch(batch(heard))
    for _ in range(int(POLICY.restart_grace_s) - 1):
        clock.now += 1
        await leader.on_batch(batch(heard))
        await leader.step()
    assert set((await statuses(pool)).values()) == {"ready"}, "the others have the grace period to be heard"
    for _ in range(2):
        clock.now += 1
        await leader.on_batch(batch(heard))
        await leader.step()
    assert sorted(await announced(pool)) == [(n, domain.DOWN) for n in silent]


def gauge(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_the_leader_shows_the_nodes_by_status_and_its_deafness_and_a_standby_shows_zeros(
    db: ServiceDb, pool: asyncpg.Pool, monitor: tuple[LivenessMonitor, Clock]
) -> None:
    leader, clock = monitor
    await leader.on_batch(batch(NODE_IDS))
    clock.now += 3 * POLICY.down_after_s  # no gateway heard since: deaf, nobody suspected
    await leader.step()
    assert (gauge("fog_registry_leading"), gauge("fog_registry_deaf")) == (1, 1)
    assert gauge("fog_registry_nodes", status="ready") == len(NODE_IDS)
    assert gauge("fog_registry_nodes_by_agent", agent="unknown") == len(NODE_IDS)

    upgraded, odd = NODE_IDS[:15], NODE_IDS[15:20]
    for _ in range(int(POLICY.restart_grace_s) + 1):  # heard again, half of them: the others go down
        clock.now += 1
        await leader.on_batch(batch(upgraded, agent="fog-agent/1.1.0"))
        await leader.on_batch(batch(odd, agent="curl/8.5.0"))
        await leader.step()
    assert gauge("fog_registry_deaf") == 0
    counts = {status: gauge("fog_registry_nodes", status=status) for status in ("ready", "suspect", "down")}
    assert counts == {"ready": 20, "suspect": 0, "down": 20}
    by_agent = {agent: gauge("fog_registry_nodes_by_agent", agent=agent)
                for agent in ("fog-agent/1.1.0", "other", "unknown")}  # fmt: skip
    assert by_agent == {"fog-agent/1.1.0": 15, "other": 5, "unknown": None}  # the down ones are not counted

    standby = LivenessMonitor(LeaderLock(db.dsn, db.schema, "liveness"), POLICY, clock=clock)
    standby.attach(pool)
    await standby.step()
    assert not standby.leading
    assert (gauge("fog_registry_leading"), gauge("fog_registry_nodes", status="ready")) == (0, 0)
    assert gauge("fog_registry_nodes_by_agent", agent="fog-agent/1.1.0") is None
