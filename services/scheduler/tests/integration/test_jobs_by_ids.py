"""Many jobs read at once (the gateway's live updates): the asker's own, in the order asked, as many as a reply
may carry."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from fog_scheduler import service
from fog_shared.commands import scheduler as contract
from fog_shared.commands.scheduler import JobSpec, JobsQuery, SubmitCommand

from .test_array_cancel import ALICE, BOB
from .test_metrics import T0


async def submitted(conn: asyncpg.Connection, owner: str, spec: JobSpec | None = None) -> str:
    command = SubmitCommand(owner_id=owner, spec=spec or JobSpec(command=["true"]))
    return (await service.submit(conn, command, now=T0))["job"].id


async def test_the_askers_jobs_come_in_the_order_asked_and_others_as_if_they_did_not_exist(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    async with pool[0].acquire() as conn:
        alices = [await submitted(conn, "alice") for _ in range(3)]
        bobs = await submitted(conn, "bob")
        asked = [alices[2], bobs, "not-a-job", str(uuid.uuid4()), alices[0], alices[1]]
        read = await service.jobs_by_ids(conn, JobsQuery(job_ids=asked, by=ALICE))
        assert ([job.id for job in read.items], read.left_out) == ([alices[2], alices[0], alices[1]], [])
        assert [job.id for job in (await service.jobs_by_ids(conn, JobsQuery(job_ids=asked, by=BOB))).items] == [bobs]


async def test_a_reply_stops_at_its_size_and_names_what_it_left_out(
    pool: tuple[asyncpg.Pool, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pool[0].acquire() as conn:
        large = JobSpec(command=["echo", "x" * 4000])
        jobs = [await submitted(conn, "alice", large) for _ in range(4)]
        monkeypatch.setattr(contract, "JOBS_REPLY_BYTES", 10_000)  # room for two such specs
        read = await service.jobs_by_ids(conn, JobsQuery(job_ids=jobs, by=ALICE))
        assert ([job.id for job in read.items], read.left_out) == (jobs[:2], jobs[2:])
        monkeypatch.setattr(contract, "JOBS_REPLY_BYTES", 100)  # not even one: the first still comes
        read = await service.jobs_by_ids(conn, JobsQuery(job_ids=jobs, by=ALICE))
        assert ([job.id for job in read.items], read.left_out) == (jobs[:1], jobs[1:])
