"""A job's output as it is asked for before it ends, on real Postgres: a retry's wait shows the attempt before."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from fog_scheduler import service, store
from fog_shared.commands.scheduler import Finished, JobSpec, OutputQuery, OutputSoFar, ReportsCommand, SubmitCommand

from .test_array_cancel import ALICE
from .test_metrics import T0


async def run_on(conn: asyncpg.Connection, job_id: uuid.UUID, node: str) -> None:
    await conn.execute("UPDATE jobs SET status = 'running', node_id = $2 WHERE id = $1", job_id, node)


async def test_while_a_job_waits_for_its_retry_its_output_is_the_attempt_before(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    async with pool[0].acquire() as conn:
        submitted = await service.submit(conn, SubmitCommand(owner_id="alice", spec=JobSpec(command=["x"])), now=T0)
        job_id = uuid.UUID(submitted["job"].id)

        async def output(offset: int = 0) -> tuple[str, int, bool, int]:
            got = await service.job_output(conn, OutputQuery(job_id=str(job_id), by=ALICE, offset=offset))
            return got.output, got.length, got.ended, got.attempt

        async def report(*reports: Finished | OutputSoFar) -> None:
            await service.record_reports(conn, ReportsCommand(node_id="n1", reports=list(reports)), now=T0)

        assert await output() == ("", 0, False, 1)
        await run_on(conn, job_id, "n1")
        await report(OutputSoFar(job_id=str(job_id), attempt=1, offset=0, data="trying"))
        assert await output(3) == ("ing", 6, False, 1)
        await report(Finished(job_id=str(job_id), attempt=1, outcome="failed", exit_code=1, duration_s=1,
                              output="trying\nboom\n"))  # fmt: skip

        assert await output() == ("trying\nboom\n", 12, False, 1), "pending for attempt 2: attempt 1's output"
        await run_on(conn, job_id, "n1")
        assert await output() == ("", 0, False, 2), "attempt 2 runs: its own output, from its start"
        await report(OutputSoFar(job_id=str(job_id), attempt=2, offset=0, data="again"))
        assert await output() == ("again", 5, False, 2)


async def test_a_job_that_ends_while_its_output_is_read_is_answered_as_one_moment_of_it(
    pool: tuple[asyncpg.Pool, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job ends between the read of its row and the read of its output so far (another connection):
    the answer is still what was printed by then, never a running job with nothing printed."""
    connections = pool[0]
    async with connections.acquire() as conn:
        submitted = await service.submit(conn, SubmitCommand(owner_id="alice", spec=JobSpec(command=["x"])), now=T0)
        job_id = uuid.UUID(submitted["job"].id)
        await run_on(conn, job_id, "n1")
        printed = OutputSoFar(job_id=str(job_id), attempt=1, offset=0, data="one\n")
        await service.record_reports(conn, ReportsCommand(node_id="n1", reports=[printed]), now=T0)
    read_output_so_far = store.output_so_far

    async def ending_meanwhile(conn: asyncpg.Connection, job: uuid.UUID, attempt: int) -> str:
        finished = Finished(job_id=str(job_id), attempt=1, outcome="succeeded", exit_code=0, duration_s=1,
                            output="one\ntwo\n")  # fmt: skip
        async with connections.acquire() as other:
            await service.record_reports(other, ReportsCommand(node_id="n1", reports=[finished]), now=T0)
        return await read_output_so_far(conn, job, attempt)

    monkeypatch.setattr(store, "output_so_far", ending_meanwhile)
    async with connections.acquire() as conn:
        got = await service.job_output(conn, OutputQuery(job_id=str(job_id), by=ALICE, offset=0))
    assert (got.output, got.length, got.ended) == ("one\n", 4, False)
