"""A whole array cancelled and summed up, on real Postgres: what has not ended is cancelled (placed jobs with
their node, so that it kills them), in batches; jobs another transaction holds are taken once it lets go."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from fog_scheduler import service
from fog_shared.commands.auth import Principal
from fog_shared.commands.scheduler import ArrayQuery, ArrayRequest, JobSpec, SubmitArrayCommand
from fog_shared.events.scheduler import JobCancelled
from fog_shared.testing.waiting import wait_until

from .test_metrics import T0

ALICE = Principal(kind="user", user_id="alice", roles=["user"])
BOB = Principal(kind="user", user_id="bob", roles=["user"])
ADMIN = Principal(kind="user", user_id="root", roles=["user", "admin"])
#: index → the status the array's job is put in before the cancel (the others stay pending)
PROGRESS = {0: "assigned", 1: "running", 2: "succeeded", 3: "failed", 5: "running"}


async def array_of(conn: asyncpg.Connection, count: int) -> str:
    command = SubmitArrayCommand(owner_id="alice", request=ArrayRequest(spec=JobSpec(command=["true"]), count=count))
    return (await service.submit_array(conn, command, now=T0)).array_id


async def progress(conn: asyncpg.Connection, array_id: str, statuses: dict[int, str]) -> None:
    for index, status in statuses.items():
        node = "n1" if status in ("assigned", "running") else None
        await conn.execute(
            "UPDATE jobs SET status = $3, node_id = $4 WHERE array_id = $1 AND array_index = $2",
            uuid.UUID(array_id), index, status, node,
        )  # fmt: skip


async def cancellations(conn: asyncpg.Connection) -> list[JobCancelled]:
    rows = await conn.fetch("SELECT body FROM outbox WHERE subject = $1", JobCancelled.TYPE.subject)
    return [JobCancelled.from_json(row["body"]) for row in rows]


async def test_an_array_is_cancelled_in_batches_and_its_placed_jobs_name_their_node(
    pool: tuple[asyncpg.Pool, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CANCEL_BATCH", 3)  # 10 jobs, 8 not ended: three transactions
    async with pool[0].acquire() as conn:
        array_id = await array_of(conn, 10)
        await progress(conn, array_id, PROGRESS)
        before = await service.array_summary(conn, ArrayQuery(array_id=array_id, by=ALICE))
        assert (before.statuses, before.ended, before.count) == (
            {"pending": 5, "assigned": 1, "running": 2, "succeeded": 1, "failed": 1}, 2, 10
        )  # fmt: skip

        after = await service.cancel_array(conn, ArrayQuery(array_id=array_id, by=ALICE), now=T0)

        assert (after.statuses, after.ended) == ({"cancelled": 8, "succeeded": 1, "failed": 1}, 10)
        events = await cancellations(conn)
        placed = {event.job_id: event.node_id for event in events if event.node_id is not None}
        rows = await conn.fetch("SELECT id, array_index, error FROM jobs WHERE status = 'cancelled'")
        by_index = {row["array_index"]: str(row["id"]) for row in rows}
        assert len(events) == 8
        assert {event.job_id for event in events} == set(by_index.values())
        assert placed == {by_index[0]: "n1", by_index[1]: "n1", by_index[5]: "n1"}  # their node kills them
        assert {row["error"] for row in rows} == {"cancelled by its owner"}

        again = await service.cancel_array(conn, ArrayQuery(array_id=array_id, by=ALICE), now=T0)
        assert again == after
        assert len(await cancellations(conn)) == 8, "cancelling again records nothing more"


async def test_someone_elses_array_is_no_array_but_an_admin_may(pool: tuple[asyncpg.Pool, str, str]) -> None:
    async with pool[0].acquire() as conn:
        array_id = await array_of(conn, 2)
        for query in (ArrayQuery(array_id=array_id, by=BOB), ArrayQuery(array_id="not-an-id", by=ALICE),
                      ArrayQuery(array_id=str(uuid.uuid4()), by=ALICE)):  # fmt: skip
            with pytest.raises(service.SchedulerError) as refused:
                await service.cancel_array(conn, query, now=T0)
            assert refused.value.code == "not_found"
            with pytest.raises(service.SchedulerError):
                await service.array_summary(conn, query)
        assert await cancellations(conn) == [], "a refused cancel changes nothing"
        summary = await service.cancel_array(conn, ArrayQuery(array_id=array_id, by=ADMIN), now=T0)
        assert summary.statuses == {"cancelled": 2}


async def test_a_job_another_transaction_holds_is_skipped_then_cancelled_once_let_go(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    connections, dsn, _ = pool
    async with connections.acquire() as conn:
        array_id = await array_of(conn, 6)
    holder = await asyncpg.connect(dsn)  # as a placement writing job 2 would hold it
    try:
        holding = holder.transaction()
        await holding.start()
        await holder.execute(
            "SELECT 1 FROM jobs WHERE array_id = $1 AND array_index = 2 FOR UPDATE", uuid.UUID(array_id)
        )
        async with connections.acquire() as conn:
            cancelling = asyncio.create_task(
                service.cancel_array(conn, ArrayQuery(array_id=array_id, by=ALICE), now=T0)
            )

            async def all_but_the_held_one_cancelled() -> bool:
                count = await holder.fetchval(
                    "SELECT count(*) FROM jobs WHERE array_id = $1 AND status = 'cancelled'", uuid.UUID(array_id)
                )
                return bool(count == 5)

            await wait_until(all_but_the_held_one_cancelled, timeout=10, what="the jobs not held cancelled")
            assert not cancelling.done(), "it waits for the held job rather than answer without it"
            await holding.commit()
            summary = await asyncio.wait_for(cancelling, timeout=10)
    finally:
        await holder.close()
    assert summary.statuses == {"cancelled": 6}


async def test_a_job_held_past_the_patience_is_left_and_said_so(
    pool: tuple[asyncpg.Pool, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service, "CANCEL_PATIENCE_S", 0.0)
    connections, dsn, _ = pool
    async with connections.acquire() as conn:
        array_id = await array_of(conn, 3)
    holder = await asyncpg.connect(dsn)
    try:
        async with holder.transaction():
            await holder.execute("SELECT 1 FROM jobs WHERE array_id = $1 AND array_index = 0 FOR UPDATE",
                                 uuid.UUID(array_id))  # fmt: skip
            async with connections.acquire() as conn:
                summary = await service.cancel_array(conn, ArrayQuery(array_id=array_id, by=ALICE), now=T0)
    finally:
        await holder.close()
    assert (summary.statuses, summary.ended, summary.count) == ({"pending": 1, "cancelled": 2}, 2, 3)
