"""Retention on real Postgres: ended jobs go some time after they ended, arrays as a whole, jobs not
ended never; only the replica that leads placement deletes. And the service, as it is built, does it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from fog_scheduler import retention, service, store
from fog_scheduler.app import MIGRATIONS, build_app
from fog_scheduler.config import Settings
from fog_scheduler.retention import JobRetention, Purged
from fog_shared.bus.topology import Topology
from fog_shared.commands.scheduler import (
    ArrayRequest,
    JobQuery,
    JobSpec,
    SubmitArrayCommand,
    SubmitCommand,
)
from fog_shared.pg.pool import create_pool
from fog_shared.testing.plugin import Provisioner, Servers, ServiceDbFactory, settings_in_schema
from fog_shared.testing.waiting import wait_until

from .test_array_cancel import ALICE
from .test_metrics import T0

KEEP = timedelta(days=7)
NOW = T0 + timedelta(days=30)
LONG_AGO = NOW - KEEP - timedelta(seconds=1)
LATELY = NOW - KEEP + timedelta(seconds=1)


async def lone_job(conn: asyncpg.Connection, key: str | None = None) -> uuid.UUID:
    command = SubmitCommand(owner_id="alice", spec=JobSpec(command=["true"], idempotency_key=key))
    submitted = await service.submit(conn, command, now=T0)
    return uuid.UUID(submitted["job"].id)


async def array_of(conn: asyncpg.Connection, count: int) -> uuid.UUID:
    command = SubmitArrayCommand(owner_id="alice", request=ArrayRequest(spec=JobSpec(command=["true"]), count=count))
    return uuid.UUID((await service.submit_array(conn, command, now=T0)).array_id)


async def end(conn: asyncpg.Connection, job_id: uuid.UUID, status: str, finished_at: object) -> None:
    await conn.execute(
        "UPDATE jobs SET status = $2, finished_at = $3, output = 'words' WHERE id = $1", job_id, status, finished_at
    )


async def end_array(conn: asyncpg.Connection, array_id: uuid.UUID, finished_at: object) -> None:
    await conn.execute(
        "UPDATE jobs SET status = 'succeeded', finished_at = $2 WHERE array_id = $1", array_id, finished_at
    )


async def jobs_left(conn: asyncpg.Connection) -> set[uuid.UUID]:
    return {row["id"] for row in await conn.fetch("SELECT id FROM jobs")}


async def arrays_left(conn: asyncpg.Connection) -> set[uuid.UUID]:
    return {row["id"] for row in await conn.fetch("SELECT id FROM job_arrays")}


async def array_jobs(conn: asyncpg.Connection, array_id: uuid.UUID) -> set[uuid.UUID]:
    return {row["id"] for row in await conn.fetch("SELECT id FROM jobs WHERE array_id = $1", array_id)}


async def test_ended_lone_jobs_go_once_kept_long_enough_and_live_ones_never(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    async with pool[0].acquire() as conn:
        gone = {status: await lone_job(conn) for status in ("succeeded", "failed", "timed_out", "cancelled")}
        for status, job_id in gone.items():
            await end(conn, job_id, status, LONG_AGO)
        ended_lately = await lone_job(conn)
        await end(conn, ended_lately, "succeeded", LATELY)
        for job_id in (gone["succeeded"], ended_lately):  # the files they gave back go with them, and only then
            await store.keep_files(conn, job_id, 1, [("out.txt", b"result", 6, False)])
        live = {status: await lone_job(conn) for status in ("pending", "assigned", "running")}
        for status, job_id in live.items():  # submitted a month ago, never ended
            await conn.execute("UPDATE jobs SET status = $2 WHERE id = $1", job_id, status)

        purged = await retention.purge(conn, ended_before=NOW - KEEP, batch=3)  # 4 to delete: two transactions

        assert purged == Purged(jobs=4, arrays=0)
        assert await jobs_left(conn) == {ended_lately, *live.values()}
        assert [row["job_id"] for row in await conn.fetch("SELECT job_id FROM job_files")] == [ended_lately]
        with pytest.raises(service.SchedulerError) as refused:
            await service.job_output(conn, JobQuery(job_id=str(gone["succeeded"]), by=ALICE))
        assert refused.value.code == "not_found"
        assert await retention.purge(conn, ended_before=NOW - KEEP, batch=3) == Purged(), "nothing more to delete"


async def test_an_array_goes_as_a_whole_once_its_last_job_has_been_ended_long_enough(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    async with pool[0].acquire() as conn:
        old = await array_of(conn, 7)
        await end_array(conn, old, LONG_AGO)
        one_still_running = await array_of(conn, 3)
        await end_array(conn, one_still_running, LONG_AGO)
        await conn.execute("UPDATE jobs SET status = 'running' WHERE array_id = $1 AND array_index = 2",
                           one_still_running)  # fmt: skip
        one_ended_lately = await array_of(conn, 3)
        await end_array(conn, one_ended_lately, LONG_AGO)
        await conn.execute("UPDATE jobs SET finished_at = $2 WHERE array_id = $1 AND array_index = 0",
                           one_ended_lately, LATELY)  # fmt: skip
        kept = await array_jobs(conn, one_still_running) | await array_jobs(conn, one_ended_lately)

        purged = await retention.purge(conn, ended_before=NOW - KEEP, batch=3)  # 7 jobs: three transactions

        assert purged == Purged(jobs=7, arrays=1)
        assert await arrays_left(conn) == {one_still_running, one_ended_lately}
        assert await jobs_left(conn) == kept


async def test_an_array_whose_rows_are_held_is_taken_by_a_later_round(pool: tuple[asyncpg.Pool, str, str]) -> None:
    connections = pool[0]
    async with connections.acquire() as conn, connections.acquire() as holder:
        array_id = await array_of(conn, 4)
        await end_array(conn, array_id, LONG_AGO)
        async with holder.transaction():  # a late report of one of its nodes, say, holds a row
            await holder.execute("SELECT FROM jobs WHERE array_id = $1 AND array_index = 1 FOR UPDATE", array_id)
            held = await retention.purge(conn, ended_before=NOW - KEEP, batch=10)
            assert held == Purged(jobs=3, arrays=0)
            assert await arrays_left(conn) == {array_id}
        assert await retention.purge(conn, ended_before=NOW - KEEP, batch=10) == Purged(jobs=1, arrays=1)
        assert await arrays_left(conn) == set()


async def test_an_idempotency_key_goes_with_its_job(pool: tuple[asyncpg.Pool, str, str]) -> None:
    async with pool[0].acquire() as conn:
        first = await lone_job(conn, key="nightly")
        assert await lone_job(conn, key="nightly") == first, "kept: the key still names its job"
        await end(conn, first, "succeeded", LONG_AGO)
        await retention.purge(conn, ended_before=NOW - KEEP, batch=10)

        again = await lone_job(conn, key="nightly")

        assert again != first
        assert await jobs_left(conn) == {again}


def purged_samples() -> dict[str, float]:
    return {kind: REGISTRY.get_sample_value("fog_scheduler_purged_total", {"kind": kind}) or 0.0
            for kind in ("job", "array")}  # fmt: skip


async def test_only_the_leading_replica_purges_and_it_counts_what_it_deleted(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    connections = pool[0]
    async with connections.acquire() as conn:
        job_id = await lone_job(conn)
        await end(conn, job_id, "failed", LONG_AGO)
        array_id = await array_of(conn, 2)
        await end_array(conn, array_id, LONG_AGO)
    leads = [False]

    def standing(leading: Callable[[], bool]) -> JobRetention:
        return JobRetention(lambda: connections, leading, lambda: NOW, keep_s=KEEP.total_seconds(), every_s=60,
                            batch=10)  # fmt: skip

    before = purged_samples()
    assert await standing(lambda: leads[0]).round() is None
    async with connections.acquire() as conn:
        assert len(await jobs_left(conn)) == 3

    leads[0] = True
    assert await standing(lambda: leads[0]).round() == Purged(jobs=3, arrays=1)
    after = purged_samples()
    assert (after["job"] - before["job"], after["array"] - before["array"]) == (3, 1)


async def test_the_built_service_deletes_ended_jobs_once_their_time_is_up(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> None:
    await provision_topology(Topology())
    db = await service_db("scheduler", MIGRATIONS)
    settings = settings_in_schema(
        Settings, db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(db.dsn),
        placement_idle_s=0.05, keep_ended_jobs_s=0.5, purge_every_s=0.05,
    )  # fmt: skip
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        connections = await create_pool(db.dsn, db.schema, min_size=1, max_size=1)
        try:
            async with connections.acquire() as connection:
                job_id = await lone_job(connection)
                await connection.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = now() WHERE id = $1", job_id
                )
                pending = await lone_job(connection)

                async def deleted() -> bool:
                    return await jobs_left(connection) == {pending}

                await wait_until(deleted, timeout=10, what="the ended job deleted, the pending one kept")
        finally:
            await connections.close()
