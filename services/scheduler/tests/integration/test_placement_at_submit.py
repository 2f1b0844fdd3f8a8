"""Placing at submit never goes before a job that is due: one waiting, or a retry whose backoff has ended."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from fog_scheduler import service, store
from fog_scheduler.domain import PlacementPolicy
from fog_scheduler.placement import PlacementLoop
from fog_shared.commands.scheduler import JobSpec, SubmitCommand
from fog_shared.pg.leader import LeaderLock
from fog_shared.testing.waiting import wait_until

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NODE = {"cpu_cores": 2, "memory_bytes": 1 << 30, "disk_bytes": 0, "arch": "x86_64", "os": "Linux"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def a_retry_in_its_backoff(conn: asyncpg.Connection, not_before: datetime) -> uuid.UUID:
    """A ready node with room, and a job back to pending after a failed attempt, due at ``not_before``."""
    await store.upsert_node(conn, "n1", status="ready", capabilities=NODE, labels={}, region=None, now=T0)
    job_id = uuid.uuid4()
    spec = JobSpec(command=["true"], max_attempts=3).model_dump(mode="json")
    await conn.execute(
        "INSERT INTO jobs (id, owner_id, spec, priority, status, attempt, not_before, submitted_at, tried_nodes)"
        " VALUES ($1, 'alice', $2, 0, 'pending', 2, $3, $4, '{n1}')",
        job_id, spec, not_before, T0,
    )  # fmt: skip
    return job_id


async def may_place_at_submit(loop: PlacementLoop) -> bool:
    async with loop.at_submit() as place:
        return place is not None


async def test_a_retry_whose_backoff_has_ended_is_not_overtaken_by_a_placement_at_submit(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    connections, dsn, schema = pool
    clock = Clock()
    loop = PlacementLoop(LeaderLock(dsn, schema, "placement"), PlacementPolicy(), dsn=dsn, schema=schema, wall=clock)
    loop.attach(connections)
    loop._leading = True  # as run() sets it once it holds the lead
    async with connections.acquire() as conn:
        retry = await a_retry_in_its_backoff(conn, T0 + timedelta(seconds=10))

    await loop.cycle()  # nothing is due yet
    assert await may_place_at_submit(loop), "an idle cluster: a lone submit is placed in its transaction"
    clock.now = T0 + timedelta(seconds=10, milliseconds=1)
    assert not await may_place_at_submit(loop), "the retry is due: the loop places it first"

    await loop.cycle()
    async with connections.acquire() as conn:
        assert await conn.fetchval("SELECT status FROM jobs WHERE id = $1", retry) == "assigned"
    assert await may_place_at_submit(loop)


async def test_the_loop_decides_a_retry_when_its_backoff_ends_not_at_its_next_idle_wake_up(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    connections, dsn, schema = pool
    loop = PlacementLoop(LeaderLock(dsn, schema, "placement"), PlacementPolicy(), dsn=dsn, schema=schema, idle_s=60)
    loop.attach(connections)
    async with connections.acquire() as conn:
        retry = await a_retry_in_its_backoff(conn, datetime.now(UTC) + timedelta(seconds=0.5))

    async def assigned() -> bool:
        async with connections.acquire() as conn:
            return bool(await conn.fetchval("SELECT status = 'assigned' FROM jobs WHERE id = $1", retry))

    running = asyncio.create_task(loop.run())
    try:
        await wait_until(assigned, timeout=20, what="the retry placed (idle_s is 60)")
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


class Node:
    """What the node's gateway hears: preparations (with whether their job had committed), then assignments."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.heard: list[tuple[str, str, object]] = []

    async def prepare(self, node_id: str, assignment: dict[str, Any]) -> None:
        async with self.pool.acquire() as conn:
            committed = await conn.fetchval("SELECT count(*) FROM jobs WHERE id = $1", uuid.UUID(assignment["job_id"]))
        self.heard.append(("prepare", assignment["job_id"], f"{committed} committed"))

    async def withdraw(self, node_id: str, job_id: str, attempt: int) -> None:
        self.heard.append(("withdraw", job_id, attempt))

    async def push(self, assignments: list[dict[str, Any]]) -> None:
        for pushed in assignments:
            self.heard.append(("assignment", pushed["assignment"]["job_id"], pushed["node_id"]))


async def submit(pool: asyncpg.Pool, loop: PlacementLoop, spec: JobSpec) -> dict[str, Any]:
    async with pool.acquire() as conn, loop.at_submit() as place:
        return await service.submit(conn, SubmitCommand(owner_id="alice", spec=spec), now=T0, place=place)


async def test_a_node_hears_of_a_job_placed_at_submit_before_it_commits_and_of_one_that_did_not(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    connections, dsn, schema = pool
    node = Node(connections)
    loop = PlacementLoop(
        LeaderLock(dsn, schema, "placement"), PlacementPolicy(), dsn=dsn, schema=schema, push=node.push, prepare=node
    )
    loop.attach(connections)
    loop._leading = True
    async with connections.acquire() as conn:
        await store.upsert_node(conn, "n1", status="ready", capabilities=NODE, labels={}, region=None, now=T0)
    await loop.cycle()

    first = await submit(connections, loop, JobSpec(command=["true"], idempotency_key="once"))
    job_id = str(first["job"].id)
    assert node.heard == [("prepare", job_id, "0 committed"), ("assignment", job_id, "n1")]

    node.heard.clear()
    again = await submit(connections, loop, JobSpec(command=["true"], idempotency_key="once"))
    assert (str(again["job"].id), again["created"]) == (job_id, False)
    [(_, prepared, _), withdrawn] = node.heard  # a new job was decided, then not inserted: the key was used
    assert withdrawn == ("withdraw", prepared, 1)
    assert prepared != job_id

    node.heard.clear()
    arm = await submit(
        connections, loop, JobSpec.model_validate({"command": ["true"], "constraints": {"arch": "arm64"}})
    )
    assert arm["job"].status == "pending"
    assert node.heard == [], "a job placed nowhere prepares nothing"
