"""Jobs run after others (a spec's ``after``), on real Postgres: a job waits, unplaced, until every job it names has
succeeded, whichever way they end; one that ends otherwise cancels it, and its own dependants in turn; explain
says what it waits for; a submit naming what cannot be waited for is refused and writes nothing."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import asyncpg
import pytest

from fog_scheduler import service, store
from fog_shared.commands.auth import Principal
from fog_shared.commands.scheduler import (
    WAITED_SHOWN,
    ArrayRequest,
    Finished,
    JobQuery,
    JobSpec,
    ReportsCommand,
    SubmitArrayCommand,
    SubmitCommand,
)
from fog_shared.events.scheduler import JobCancelled, JobSubmitted
from fog_shared.testing.waiting import wait_until

from .test_metrics import NODE, T0, leading_loop

ALICE = Principal(kind="user", user_id="alice", roles=["user"])
Pool = tuple[asyncpg.Pool, str, str]


async def submit(conn: asyncpg.Connection, *after: str, owner: str = "alice", **spec: Any) -> str:
    body = {"command": ["true"], "after": list(after), **spec}  # after_any=[...] in spec
    command = SubmitCommand(owner_id=owner, spec=JobSpec.model_validate(body))
    created: dict[str, Any] = await service.submit(conn, command, now=T0)
    return str(created["job"].id)


async def array_of(conn: asyncpg.Connection, count: int, **spec: Any) -> tuple[str, list[str]]:
    """An array of ``count`` jobs of alice's: its id, and its jobs' in index order."""
    request = ArrayRequest(spec=JobSpec.model_validate({"command": ["true"], **spec}), count=count)
    array = await service.submit_array(conn, SubmitArrayCommand(owner_id="alice", request=request), now=T0)
    assert array.job_ids is not None
    return array.array_id, array.job_ids


async def waits(conn: asyncpg.Connection, job_id: str) -> int:
    return int(await conn.fetchval("SELECT waiting_for FROM jobs WHERE id = $1", uuid.UUID(job_id)))


async def status_of(conn: asyncpg.Connection, job_id: str) -> str:
    return str(await conn.fetchval("SELECT status FROM jobs WHERE id = $1", uuid.UUID(job_id)))


async def placed(conn: asyncpg.Connection, job_id: str) -> None:
    await conn.execute("UPDATE jobs SET status = 'running', node_id = 'n1' WHERE id = $1", uuid.UUID(job_id))


async def ended(conn: asyncpg.Connection, job_id: str, outcome: str, attempt: int = 1) -> None:
    """The job ran on n1 and its agent reported its end."""
    await placed(conn, job_id)
    report = Finished(job_id=job_id, attempt=attempt, outcome=outcome, exit_code=0 if outcome == "succeeded" else 1,
                      duration_s=0.1)  # type: ignore[arg-type]  # fmt: skip
    await service.record_reports(conn, ReportsCommand(node_id="n1", reports=[report]), now=T0)


async def explained(conn: asyncpg.Connection, job_id: str) -> tuple[str | None, list[tuple[str, str, str]]]:
    explanation = await service.explain(conn, JobQuery(job_id=job_id, by=ALICE))
    return explanation.summary, [(waited.job_id, waited.status, waited.needs) for waited in explanation.waiting_for]


async def test_a_job_is_placed_only_once_every_job_it_names_has_succeeded(pool: Pool) -> None:
    connections = pool[0]
    loop = leading_loop(pool)
    async with connections.acquire() as conn:
        await store.upsert_node(conn, "n1", status="ready", capabilities=NODE, labels={}, region=None, now=T0)
        first, second = await submit(conn, priority=0), await submit(conn, priority=0)
        await placed(conn, first)
        await placed(conn, second)
        last = await submit(conn, first, second, priority=100)  # first in line, were it not waiting
        rows = await conn.fetch("SELECT body FROM outbox WHERE subject = $1", JobSubmitted.TYPE.subject)
        submitted = {event.job_id: event for event in (JobSubmitted.from_json(row["body"]) for row in rows)}
        assert (submitted[last].after, submitted[first].after) == ([first, second], [])  # what an operator reads

    await loop.cycle()
    async with connections.acquire() as conn:
        assert await status_of(conn, last) == "pending"
        one, other = sorted((first, second))  # submitted at one instant: in id order
        assert await explained(conn, last) == (
            f"waiting for 2 jobs first: {one} to succeed (running), {other} to succeed (running)",
            [(one, "running", "success"), (other, "running", "success")],
        )
        await ended(conn, first, "succeeded")
    await loop.cycle()
    async with connections.acquire() as conn:
        assert await status_of(conn, last) == "pending"
        assert await explained(conn, last) == (
            f"waiting for job first: {second} to succeed (running)",
            [(second, "running", "success")],
        )
        await ended(conn, second, "succeeded")
    await loop.cycle()
    async with connections.acquire() as conn:
        assert await status_of(conn, last) == "assigned"
        summary, waiting = await explained(conn, last)
        assert (summary or "").startswith("placed on n1")
        assert waiting == []


async def test_a_job_after_one_that_already_succeeded_waits_for_nothing(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        done = await submit(conn)
        await ended(conn, done, "succeeded")
        after = await submit(conn, done)
        assert await waits(conn, after) == 0


@pytest.mark.parametrize("outcome", ["failed", "timed_out", "cancelled"])
async def test_a_job_whose_dependency_did_not_succeed_is_cancelled_and_so_are_its_own_dependants(
    pool: Pool, outcome: str
) -> None:
    async with pool[0].acquire() as conn:
        first = await submit(conn, max_attempts=1)
        middle = await submit(conn, first)
        last = await submit(conn, middle)
        other = await submit(conn)  # waits for nothing: untouched
        await ended(conn, first, outcome)

        for job_id, blocker in ((middle, first), (last, middle)):
            row = await conn.fetchrow("SELECT status, error FROM jobs WHERE id = $1", uuid.UUID(job_id))
            ending = outcome if blocker == first else "cancelled"
            assert dict(row) == {
                "status": "cancelled", "error": f"never ran: job {blocker}, which it was to run after, ended {ending}"
            }  # fmt: skip
        assert await status_of(conn, other) == "pending"
        events = await conn.fetch("SELECT body FROM outbox WHERE subject = $1", JobCancelled.TYPE.subject)
        cancelled = {event.job_id: event for event in (JobCancelled.from_json(row["body"]) for row in events)}
        assert cancelled[middle].reason == f"never ran: job {first}, which it was to run after, ended {outcome}"
        assert cancelled[middle].node_id is None
        assert cancelled[last].reason is not None


async def test_a_failed_attempt_with_attempts_left_strands_nothing(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        first = await submit(conn, max_attempts=2)
        after = await submit(conn, first)
        await ended(conn, first, "failed")  # tried again
        assert (await status_of(conn, first), await status_of(conn, after)) == ("pending", "pending")
        await ended(conn, first, "succeeded", attempt=2)
        assert await waits(conn, after) == 0


async def test_a_job_whose_dependency_was_lost_with_no_attempts_left_is_cancelled(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        first = await submit(conn, max_attempts=1)
        after = await submit(conn, first)
        await placed(conn, first)
        await service.node_went_down(conn, "n1", now=T0)
        assert (await status_of(conn, first), await status_of(conn, after)) == ("failed", "cancelled")


async def test_its_owner_cancelling_a_job_cancels_what_waits_for_it(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        first = await submit(conn)
        after = await submit(conn, first)
        await service.cancel(conn, JobQuery(job_id=first, by=ALICE), now=T0)
        error = await conn.fetchval("SELECT error FROM jobs WHERE id = $1", uuid.UUID(after))
        assert error == f"never ran: job {first}, which it was to run after, ended cancelled"


async def test_a_job_after_an_array_waits_for_each_of_its_jobs_and_an_array_may_wait_too(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        array_id, mapped = await array_of(conn, 3)
        reduce = await submit(conn, array_id)
        assert await waits(conn, reduce) == 3

        _, then = await array_of(conn, 2, after_any=[reduce])
        assert [await waits(conn, job_id) for job_id in then] == [1, 1]
        rows = await conn.fetch("SELECT body FROM outbox WHERE subject = $1", JobSubmitted.TYPE.subject)
        submitted = {event.job_id: event for event in (JobSubmitted.from_json(row["body"]) for row in rows)}
        assert [submitted[job_id].after_any for job_id in then] == [[reduce], [reduce]]

        for job_id in mapped:
            await ended(conn, job_id, "succeeded")
        assert await waits(conn, reduce) == 0
        await ended(conn, reduce, "failed", attempt=1)  # three attempts: not yet its end
        assert await status_of(conn, reduce) == "pending"


async def test_what_cannot_be_waited_for_is_refused_and_nothing_is_written(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        failed = await submit(conn, max_attempts=1)
        await ended(conn, failed, "failed")
        bobs = await submit(conn, owner="bob")
        nothing = str(uuid.uuid4())
        before = await conn.fetchval("SELECT count(*) FROM jobs")

        for after, message in (
            (failed, f"after: job {failed} ended failed; a job after it would never run"),
            (bobs, f"after: no job or array of yours has the id {bobs}"),  # someone else's looks like none
            (nothing, f"after: no job or array of yours has the id {nothing}"),
        ):
            with pytest.raises(service.SchedulerError) as refused:
                await submit(conn, after)
            assert (refused.value.code, refused.value.detail) == ("invalid_dependency", message)
            command = SubmitArrayCommand(
                owner_id="alice", request=ArrayRequest(spec=JobSpec(command=["true"], after=[after]), count=2)
            )
            with pytest.raises(service.SchedulerError, match=r"^after: "):
                await service.submit_array(conn, command, now=T0)

        assert await conn.fetchval("SELECT count(*) FROM jobs") == before
        assert await conn.fetchval("SELECT count(*) FROM job_arrays") == 0
        assert await conn.fetchval("SELECT count(*) FROM job_dependencies") == 0


async def test_a_submit_making_too_many_dependencies_is_refused(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fog_scheduler.domain.DEPENDENCY_PAIRS_MAX", 5)
    async with pool[0].acquire() as conn:
        first, second = await submit(conn), await submit(conn)
        command = SubmitArrayCommand(
            owner_id="alice", request=ArrayRequest(spec=JobSpec(command=["true"], after=[first, second]), count=3)
        )
        with pytest.raises(service.SchedulerError) as refused:
            await service.submit_array(conn, command, now=T0)
        assert refused.value.code == "too_large"
        assert "3 jobs each waiting for 2 jobs" in refused.value.detail


async def test_a_repeated_submit_answers_its_first_job_though_what_it_waits_for_failed_since(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        first = await submit(conn, max_attempts=1)
        after = await submit(conn, first, idempotency_key="nightly")
        await ended(conn, first, "failed")
        assert await submit(conn, first, idempotency_key="nightly") == after


async def test_a_job_after_any_end_runs_after_a_failure_too_and_waits_for_each_job_of_an_array(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        array_id, (first, second, third) = await array_of(conn, 3, max_attempts=1)
        failed_before = await submit(conn, max_attempts=1)
        await ended(conn, failed_before, "failed")
        report = await submit(conn, after_any=[array_id, failed_before])  # an end is an end: it waits for 3
        assert await waits(conn, report) == 3

        await ended(conn, first, "failed")
        await ended(conn, second, "succeeded")
        assert await explained(conn, report) == (
            f"waiting for job first: {third} to end (pending)",
            [(third, "pending", "end")],
        )
        await service.cancel(conn, JobQuery(job_id=third, by=ALICE), now=T0)
        assert (await status_of(conn, report), await waits(conn, report)) == ("pending", 0)


async def test_a_job_named_in_after_needs_its_success_though_its_array_is_in_after_any(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        array_id, (key, other) = await array_of(conn, 2, max_attempts=1)
        after = await submit(conn, key, after_any=[array_id])
        await ended(conn, other, "failed")  # its end is all that was needed of it
        assert await status_of(conn, after) == "pending"
        await ended(conn, key, "failed")  # its success was needed
        assert await status_of(conn, after) == "cancelled"


def test_a_spec_names_a_job_in_after_or_after_any_not_both() -> None:
    job = str(uuid.uuid4())
    with pytest.raises(ValueError, match="in both after and after_any"):
        JobSpec.model_validate({"command": ["true"], "after": [job], "after_any": [job.upper()]})
    with pytest.raises(ValueError, match="more than 64 jobs and arrays in all"):
        JobSpec.model_validate({"command": ["true"], "after": [str(uuid.uuid4()) for _ in range(40)],
                                "after_any": [str(uuid.uuid4()) for _ in range(40)]})  # fmt: skip


async def test_a_submit_that_deadlocks_with_the_placement_of_what_it_waits_for_is_tried_again(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    connections, dsn, schema = pool
    async with connections.acquire() as conn:
        first, second = sorted([await submit(conn), await submit(conn)])  # the submit locks them in this order
    placing = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    watching = await asyncpg.connect(dsn)
    placed = "UPDATE jobs SET status = 'assigned', node_id = 'n1' WHERE id = $1"

    async def submit_waits_for_a_lock() -> bool:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%FOR SHARE%'"
        return bool(await watching.fetchval(waiting))

    try:
        placement = placing.transaction()
        await placement.start()
        await placing.execute(placed, uuid.UUID(second))  # as the loop writes a batch: the second first
        async with connections.acquire() as conn:
            with caplog.at_level(logging.INFO, logger="fog_scheduler.service"):
                submitting = asyncio.create_task(submit(conn, first, second))  # holds the first, waits for the second
                await wait_until(submit_waits_for_a_lock, timeout=10, what="the submit waiting for the second job")
                await placing.execute(placed, uuid.UUID(first))  # waits for the submit: Postgres ends the submit's try
                await placement.commit()
                after = await asyncio.wait_for(submitting, timeout=30)
            assert await waits(conn, after) == 2
        assert "a submit after other jobs met a deadlock (try 1 of 3): trying again" in caplog.text
    finally:
        await placing.close()
        await watching.close()


async def test_explain_lists_the_first_of_many_waited_for_and_counts_them_all(pool: Pool) -> None:
    async with pool[0].acquire() as conn:
        array_id, _ = await array_of(conn, WAITED_SHOWN + 2)
        reduce = await submit(conn, array_id)
        explanation = await service.explain(conn, JobQuery(job_id=reduce, by=ALICE))
    assert (len(explanation.waiting_for), explanation.waiting_count) == (WAITED_SHOWN, WAITED_SHOWN + 2)
    assert explanation.summary is not None
    assert explanation.summary.endswith(", and 2 more")
