"""A full cluster: the jobs waiting for it are read and explained once, then not decided again until room
frees up, or the nodes themselves change."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from fog_scheduler import domain, store
from fog_shared.commands.scheduler import JobSpec

from .test_metrics import NODE, T0, insert_job, leading_loop, placement_counts

WHOLE_NODE = JobSpec.model_validate({"command": ["true"], "resources": {"cpu_cores": 2}})


async def explained(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict[str, Any]:
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT status, explain FROM jobs WHERE id = $1", job_id)
    assert row is not None
    return {"status": row["status"], "filtered": (row["explain"] or {}).get("filtered")}


async def test_waiting_jobs_are_decided_again_only_once_room_frees_up_or_the_nodes_change(
    pool: tuple[asyncpg.Pool, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    connections = pool[0]
    loop = leading_loop(pool)
    read: list[set[uuid.UUID]] = []  # the jobs whose specs each cycle read
    decisions: list[float] = []  # each full decision (the job's cores)
    specs_of, place = store.specs_of, domain.place

    async def reading(conn: asyncpg.Connection, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
        read.append(set(job_ids))
        return await specs_of(conn, job_ids)

    def deciding(request: domain.Request, *args: Any, **kwargs: Any) -> domain.Placement:
        decisions.append(request.cpu_cores)
        return place(request, *args, **kwargs)

    monkeypatch.setattr(store, "specs_of", reading)
    monkeypatch.setattr(domain, "place", deciding)
    async with connections.acquire() as conn:
        await store.upsert_node(conn, "n1", status="ready", capabilities=NODE, labels={}, region=None, now=T0)
        first = await insert_job(conn, "pending", T0, WHOLE_NODE)
        waiting = [await insert_job(conn, "pending", T0 + timedelta(seconds=n), WHOLE_NODE) for n in (1, 2, 3)]

    await loop.cycle()
    assert (read, len(decisions)) == ([{first, *waiting}], 4)
    assert (await explained(connections, first))["status"] == "assigned"
    for job_id in waiting:
        assert await explained(connections, job_id) == {"status": "pending", "filtered": {"CPU in use": 1}}

    before = placement_counts()
    await loop.cycle()  # the cluster is as full as it was
    assert (read[1:], decisions[4:]) == ([], []), "explained jobs no node has room for are neither read nor decided"
    assert placement_counts()["waiting"] - before["waiting"] == 3, "each still counts as a decision to wait"

    async with connections.acquire() as conn:
        await conn.execute("UPDATE jobs SET status = 'succeeded' WHERE id = $1", first)
    await loop.cycle()  # room for one: the first waiting job takes it, and the others are not decided
    assert (read[1:], len(decisions[4:])) == ([], 1)
    assert (await explained(connections, waiting[0]))["status"] == "assigned"

    async with connections.acquire() as conn:
        await store.set_node_status(conn, "n1", "down", T0)
    await loop.cycle()  # the node is gone: what waits for it may wait for ever, and is explained anew
    assert len(decisions[5:]) == 2
    for job_id in waiting[1:]:
        assert await explained(connections, job_id) == {"status": "pending", "filtered": {"node down": 1}}
