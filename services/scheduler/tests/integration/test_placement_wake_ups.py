"""The placement loop is woken (NOTIFY) when there may be work: a job became pending, or one ended; and it
listens again when its connection dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from fog_scheduler import store
from fog_scheduler.app import MIGRATIONS
from fog_scheduler.domain import PlacementPolicy
from fog_scheduler.placement import PlacementLoop
from fog_shared.commands.scheduler import JobSpec
from fog_shared.pg.leader import LeaderLock
from fog_shared.pg.pool import connect
from fog_shared.testing.plugin import ServiceDbFactory
from fog_shared.testing.waiting import wait_until

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SPEC = JobSpec(command=["true"]).model_dump(mode="json")


class Wakes:
    """The NOTIFYs the placement loop listens for, by payload."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        self.heard = asyncio.Event()

    def __call__(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self.payloads.append(payload)
        self.heard.set()

    async def after(self, conn: asyncpg.Connection, sql: str, *args: object) -> int:
        """How many wake-ups one committed statement causes. A marker NOTIFY is sent after it: one session's
        notifications arrive in commit order, so once the marker is heard, so is everything before it."""
        before, marker = len(self.payloads), f"marker {uuid.uuid4()}"
        await conn.execute(sql, *args)
        await conn.execute("SELECT pg_notify(current_schema() || '_pending', $1)", marker)
        while marker not in self.payloads[before:]:
            self.heard.clear()
            await asyncio.wait_for(self.heard.wait(), timeout=5)
        return self.payloads[before:].index(marker)


@pytest.fixture
async def db(service_db: ServiceDbFactory) -> AsyncIterator[tuple[asyncpg.Connection, Wakes]]:
    made = await service_db("scheduler", MIGRATIONS)
    writer, listener, wakes = await connect(made.dsn, made.schema), await connect(made.dsn, made.schema), Wakes()
    await listener.add_listener(f"{made.schema}_pending", wakes)
    try:
        yield writer, wakes
    finally:
        await writer.close()
        await listener.close()


INSERT = (
    "INSERT INTO jobs (id, owner_id, spec, priority, status, node_id, submitted_at)"
    " VALUES ($1, 'alice', $2, 0, $3, $4, $5)"
)


async def test_new_pending_work_and_ended_jobs_wake_the_loop_placements_and_starts_do_not(
    db: tuple[asyncpg.Connection, Wakes],
) -> None:
    conn, wakes = db
    pending, placed = uuid.uuid4(), uuid.uuid4()
    assert await wakes.after(conn, INSERT, pending, SPEC, "pending", None, NOW) == 1, "a job to place"
    assert await wakes.after(conn, INSERT, placed, SPEC, "assigned", "n1", NOW) == 0, "placed at its submit"
    set_status = "UPDATE jobs SET status = $2 WHERE id = $1"
    assert await wakes.after(conn, set_status, pending, "assigned") == 0, "the loop's own placement"
    assert await wakes.after(conn, set_status, placed, "running") == 0, "a start frees nothing"
    assert await wakes.after(conn, "UPDATE jobs SET error = 'x' WHERE id = $1", placed) == 0, "no status change"
    assert await wakes.after(conn, set_status, placed, "succeeded") == 1, "an end frees its capacity"
    assert await wakes.after(conn, set_status, pending, "pending") == 1, "back to pending (lost, retried)"


def placement_loop(pool: tuple[asyncpg.Pool, str, str], *, idle_s: float) -> PlacementLoop:
    """A replica's placement loop on the test's schema (its lead: a lock on its own connection)."""
    connections, dsn, schema = pool
    loop = PlacementLoop(LeaderLock(dsn, schema, "placement"), PlacementPolicy(), dsn=dsn, schema=schema, idle_s=idle_s)
    loop.attach(connections)
    return loop


async def a_ready_node(connections: asyncpg.Pool) -> None:
    node = {"cpu_cores": 2, "memory_bytes": 1 << 30, "disk_bytes": 0, "arch": "x86_64", "os": "Linux"}
    async with connections.acquire() as conn:
        await store.upsert_node(conn, "n1", status="ready", capabilities=node, labels={}, region=None, now=NOW)


async def test_the_loop_listens_again_when_its_connection_dies_and_is_still_woken_by_new_jobs(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    """The listener's connection dies with a database restart: new jobs must still wake the loop."""
    connections, _, schema = pool
    loop = placement_loop(pool, idle_s=60)
    await a_ready_node(connections)

    async def listeners(conn: asyncpg.Connection) -> list[int]:
        listening = "SELECT pid FROM pg_stat_activity WHERE query = $1 AND pid <> pg_backend_pid()"
        return [row["pid"] for row in await conn.fetch(listening, f'LISTEN "{schema}_pending"')]

    running = asyncio.create_task(loop.run())
    try:
        async with connections.acquire() as conn:
            first = await wait_until(lambda: listeners(conn), timeout=20, what="the loop listening")
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", first[0])

            async def listening_again() -> list[int]:
                return [pid for pid in await listeners(conn) if pid not in first]

            await wait_until(listening_again, timeout=20, what="the loop listening on a new connection")
            job_id = uuid.uuid4()
            await conn.execute(INSERT, job_id, SPEC, "pending", None, NOW)

            async def assigned() -> bool:
                return bool(await conn.fetchval("SELECT status = 'assigned' FROM jobs WHERE id = $1", job_id))

            await wait_until(assigned, timeout=20, what="the new job placed (idle_s is 60: only a wake-up places it)")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_standby_loop_takes_the_lead_once_the_placing_one_stops_and_each_says_so(
    pool: tuple[asyncpg.Pool, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Two replicas: one places, the other waits for the lead, and places once the first is gone."""
    connections = pool[0]
    caplog.set_level(logging.INFO, logger="fog_scheduler.placement")
    first, standby = placement_loop(pool, idle_s=0.1), placement_loop(pool, idle_s=0.1)
    await a_ready_node(connections)

    async def placed(job_id: uuid.UUID) -> bool:
        async with connections.acquire() as conn:
            return bool(await conn.fetchval("SELECT status = 'assigned' FROM jobs WHERE id = $1", job_id))

    async def submit() -> uuid.UUID:
        job_id = uuid.uuid4()
        async with connections.acquire() as conn:
            await conn.execute(INSERT, job_id, SPEC, "pending", None, NOW)
        return job_id

    placing, waiting = asyncio.create_task(first.run()), None
    try:
        await wait_until(lambda: asyncio.sleep(0, first.leading), timeout=20, what="the first loop leading")
        waiting = asyncio.create_task(standby.run())  # started second, so that it stands by
        before = await submit()
        await wait_until(lambda: placed(before), timeout=20, what="a job placed by the first loop")
        assert not standby.leading
        placing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await placing  # its lock goes with it, as with a replica that dies
        await wait_until(lambda: asyncio.sleep(0, standby.leading), timeout=20, what="the standby leading")
        after = await submit()
        await wait_until(lambda: placed(after), timeout=20, what="a job placed by the standby")
    finally:
        for task in (placing, waiting):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    took_the_lead = [r for r in caplog.records if r.getMessage() == "placing jobs: this replica leads placement"]
    assert len(took_the_lead) == 2, "each replica logs when it starts placing"


class _LockFailingOnce(LeaderLock):
    """A lead check that fails in a way nobody foresaw, once."""

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(dsn, schema, "placement")
        self.failed = False

    async def try_acquire(self) -> bool:
        if not self.failed:
            self.failed = True
            raise RuntimeError("unforeseen")
        return await super().try_acquire()


async def test_a_failing_lead_check_does_not_end_the_loop(pool: tuple[asyncpg.Pool, str, str]) -> None:
    connections, dsn, schema = pool
    lock = _LockFailingOnce(dsn, schema)
    loop = PlacementLoop(lock, PlacementPolicy(), dsn=dsn, schema=schema, idle_s=0.1)
    loop.attach(connections)
    await a_ready_node(connections)
    running = asyncio.create_task(loop.run())
    try:
        await wait_until(lambda: asyncio.sleep(0, loop.leading), timeout=20, what="the loop leading after the failure")
        assert lock.failed
        assert not running.done()
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
