"""The network a job asks for: placed only on a node that gives its jobs that network, explained while none does,
and named in its assignment (the agent runs it so, or refuses it)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg

from fog_scheduler import service, store
from fog_scheduler.placement import UNPLACEABLE_RETRY
from fog_shared.commands.scheduler import JobSpec

from .test_metrics import NODE, T0, insert_job, leading_loop
from .test_placement_at_submit import Clock
from .test_placement_full_cluster import explained

CUT_OFF = JobSpec.model_validate({"command": ["true"], "network": "none"})


async def node_offering(conn: asyncpg.Connection, node_id: str, networks: list[str] | None) -> None:
    """The node as the registry announced it; ``None``: registered before nodes named their networks."""
    capabilities: dict[str, Any] = NODE if networks is None else {**NODE, "networks": networks}
    await store.upsert_node(conn, node_id, status="ready", capabilities=capabilities, labels={}, region=None, now=T0)


async def test_a_job_cut_off_the_network_waits_for_a_node_that_can_cut_it_off(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    connections = pool[0]
    clock = Clock()
    loop = leading_loop(pool, wall=clock)
    async with connections.acquire() as conn:
        await node_offering(conn, "n1", None)
        job_id = await insert_job(conn, "pending", T0, CUT_OFF)

    await loop.cycle()
    assert await explained(connections, job_id) == {
        "status": "pending", "filtered": {"no isolated network for jobs": 1}
    }  # fmt: skip

    async with connections.acquire() as conn:  # its agent joined again, as root: it gives both now
        await node_offering(conn, "n1", ["host", "none"])
    clock.now += UNPLACEABLE_RETRY  # a job no node could run is looked at again after a while, as nodes change
    await loop.cycle()
    assert (await explained(connections, job_id))["status"] == "assigned"
    async with connections.acquire() as conn:
        [assignment] = (await service.node_assignments(conn, "n1")).assignments
    assert (assignment.job_id, assignment.network) == (str(job_id), "none")


async def test_a_node_whose_owner_gives_jobs_no_network_takes_only_jobs_that_need_none(
    pool: tuple[asyncpg.Pool, str, str],
) -> None:
    connections = pool[0]
    loop = leading_loop(pool)
    async with connections.acquire() as conn:
        await node_offering(conn, "n1", ["none"])
        hosted = await insert_job(conn, "pending", T0)
        cut_off = await insert_job(conn, "pending", T0 + timedelta(seconds=1), CUT_OFF)

    await loop.cycle()
    assert await explained(connections, hosted) == {"status": "pending", "filtered": {"no host network for jobs": 1}}
    assert (await explained(connections, cut_off))["status"] == "assigned"
    async with connections.acquire() as conn:
        placed = await conn.fetchval("SELECT node_id FROM jobs WHERE id = $1", cut_off)
    assert placed == "n1"
