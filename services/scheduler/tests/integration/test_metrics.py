"""What an operator sees of the queue and of placement, on real Postgres: counts, decisions, cycles."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import REGISTRY

from fog_scheduler import service, store
from fog_scheduler.domain import PlacementPolicy
from fog_scheduler.metrics import QueueGauges
from fog_scheduler.placement import PlacementLoop
from fog_shared.commands.scheduler import JobSpec, SubmitCommand
from fog_shared.pg.leader import LeaderLock

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NODE = {"cpu_cores": 2, "memory_bytes": 1 << 30, "disk_bytes": 0, "arch": "x86_64", "os": "Linux"}


def leading_loop(
    pool: tuple[asyncpg.Pool, str, str], wall: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> PlacementLoop:
    connections, dsn, schema = pool
    loop = PlacementLoop(LeaderLock(dsn, schema, "placement"), PlacementPolicy(), dsn=dsn, schema=schema, wall=wall)
    loop.attach(connections)
    loop._leading = True  # as run() sets it once it holds the lead
    return loop


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def placement_counts() -> dict[str, float]:
    return {
        "cycle": sample("fog_scheduler_placements_total", path="cycle"),
        "submit": sample("fog_scheduler_placements_total", path="submit"),
        **{
            r: sample("fog_scheduler_placement_decisions_total", result=r) for r in ("placed", "waiting", "unplaceable")
        },
        "cycles": sample("fog_scheduler_placement_cycle_seconds_count"),
    }


def changed(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


async def insert_job(
    conn: asyncpg.Connection, status: str, submitted_at: datetime, spec: JobSpec | None = None
) -> uuid.UUID:
    job_id = uuid.uuid4()
    body = (spec or JobSpec(command=["true"])).model_dump(mode="json")
    node = None if status == "pending" else "n1"
    await conn.execute(
        "INSERT INTO jobs (id, owner_id, spec, priority, status, node_id, submitted_at)"
        " VALUES ($1, 'alice', $2, 0, $3, $4, $5)",
        job_id, body, status, node, submitted_at,
    )  # fmt: skip
    return job_id


async def test_a_cycle_counts_its_placement_and_each_decision_by_result(pool: tuple[asyncpg.Pool, str, str]) -> None:
    loop = leading_loop(pool)
    async with pool[0].acquire() as conn:
        await store.upsert_node(conn, "n1", status="ready", capabilities=NODE, labels={}, region=None, now=T0)
        whole_node = JobSpec.model_validate({"command": ["true"], "resources": {"cpu_cores": 2}})
        await insert_job(conn, "pending", T0, whole_node)  # placed: it fills the node
        await insert_job(conn, "pending", T0 + timedelta(seconds=1), whole_node)  # waits for the node to free up
        arm = JobSpec.model_validate({"command": ["true"], "constraints": {"arch": "arm64"}})
        await insert_job(conn, "pending", T0 + timedelta(seconds=2), arm)  # no node could ever run it
    before = placement_counts()

    await loop.cycle()

    assert changed(before, placement_counts()) == {"cycle": 1, "placed": 1, "waiting": 1, "unplaceable": 1, "cycles": 1}


async def test_a_job_placed_at_its_submit_is_counted_apart(pool: tuple[asyncpg.Pool, str, str]) -> None:
    loop = leading_loop(pool)
    async with pool[0].acquire() as conn:
        await store.upsert_node(conn, "n1", status="ready", capabilities=NODE, labels={}, region=None, now=T0)
    await loop.cycle()  # nothing waits: the next submit may be placed as it is inserted
    before = placement_counts()

    async with pool[0].acquire() as conn, loop.at_submit() as place:
        assert place is not None
        command = SubmitCommand(owner_id="alice", spec=JobSpec(command=["true"]))
        submitted = await service.submit(conn, command, now=datetime.now(UTC), place=place)

    assert submitted["job"].status == "assigned"
    assert changed(before, placement_counts()) == {"submit": 1, "placed": 1}


async def test_the_leader_shows_the_jobs_not_ended_and_the_oldest_pending_one_others_show_zeros(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    async with pool[0].acquire() as conn:
        for status, minutes_ago in (("pending", 10), ("pending", 3), ("assigned", 20), ("running", 30),
                                    ("running", 1), ("succeeded", 60)):  # fmt: skip
            await insert_job(conn, status, T0 - timedelta(minutes=minutes_ago))
        waiting = await insert_job(conn, "pending", T0 - timedelta(minutes=90))  # for other jobs: not late
        await conn.execute("UPDATE jobs SET waiting_for = 2 WHERE id = $1", waiting)
    leading = True
    gauges = QueueGauges(lambda: pool[0], lambda: leading, lambda: T0, every_s=5)

    await gauges.refresh()
    jobs = {status: sample("fog_scheduler_jobs", status=status) for status in ("pending", "assigned", "running")}
    assert jobs == {"pending": 3, "assigned": 1, "running": 2}
    assert sample("fog_scheduler_jobs_waiting_for_jobs") == 1
    assert sample("fog_scheduler_oldest_pending_job_age_seconds") == 600
    assert sample("fog_scheduler_leading") == 1

    leading = False  # another replica took the lead: this one's figures would be counted twice
    await gauges.refresh()
    jobs = {status: sample("fog_scheduler_jobs", status=status) for status in ("pending", "assigned", "running")}
    assert jobs == {"pending": 0, "assigned": 0, "running": 0}
    assert sample("fog_scheduler_jobs_waiting_for_jobs") == 0
    assert sample("fog_scheduler_oldest_pending_job_age_seconds") == 0
    assert sample("fog_scheduler_leading") == 0
