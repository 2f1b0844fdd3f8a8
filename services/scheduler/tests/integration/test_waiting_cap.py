"""At most so many of an owner's jobs wait for a node, on real Postgres: single submits and arrays past it
are refused and leave nothing behind; jobs placed or ended no longer count, nor do other owners'; a
repeated idempotency key still answers its job."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from fog_scheduler import service
from fog_shared.commands.scheduler import ArrayRequest, JobSpec, SubmitArrayCommand, SubmitCommand

from .test_metrics import T0

CAP = 5


async def submit(conn: asyncpg.Connection, owner: str = "alice", key: str | None = None) -> dict[str, Any]:
    command = SubmitCommand(owner_id=owner, spec=JobSpec(command=["true"], idempotency_key=key))
    return await service.submit(conn, command, now=T0, waiting_max=CAP)


async def submit_array(conn: asyncpg.Connection, count: int, owner: str = "alice") -> str:
    request = ArrayRequest(spec=JobSpec(command=["true"]), count=count)
    command = SubmitArrayCommand(owner_id=owner, request=request)
    return (await service.submit_array(conn, command, now=T0, waiting_max=CAP)).array_id


async def rows(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """Jobs, arrays, and events recorded."""
    return (
        await conn.fetchval("SELECT count(*) FROM jobs"),
        await conn.fetchval("SELECT count(*) FROM job_arrays"),
        await conn.fetchval("SELECT count(*) FROM outbox"),
    )


async def test_an_owner_with_the_most_jobs_waiting_is_refused_more_until_some_are_placed(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    async with pool[0].acquire() as conn:
        await submit_array(conn, 3)
        keyed = (await submit(conn, key="k"))["job"]
        await submit(conn)
        before = await rows(conn)
        with pytest.raises(service.SchedulerError, match="5 jobs waiting") as refused:
            await submit(conn)
        assert refused.value.code == "too_many_waiting"
        with pytest.raises(service.SchedulerError) as refused_array:
            await submit_array(conn, 1)
        assert refused_array.value.code == "too_many_waiting"
        assert await rows(conn) == before  # nothing written, no event
        again = await submit(conn, key="k")  # a retried submit still finds its job
        assert (again["created"], again["job"].id) == (False, keyed.id)
        await submit(conn, owner="bob")  # another owner's queue is his own

        await conn.execute("UPDATE jobs SET status = 'assigned' WHERE id = $1", keyed.id)
        await submit(conn)  # one placed: one more may wait
        with pytest.raises(service.SchedulerError):
            await submit(conn)


async def test_an_array_that_would_pass_the_cap_is_refused_whole(pool: tuple[asyncpg.Pool, str, str]) -> None:
    async with pool[0].acquire() as conn:
        await submit_array(conn, 2)
        with pytest.raises(service.SchedulerError, match="at most 5 may wait") as refused:
            await submit_array(conn, 4)
        assert refused.value.code == "too_many_waiting"
        assert await conn.fetchval("SELECT count(*) FROM jobs") == 2
        await submit_array(conn, 3)  # exactly up to the cap
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE status = 'pending'") == CAP
