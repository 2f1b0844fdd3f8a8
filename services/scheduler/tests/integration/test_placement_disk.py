"""The disk a job states: placed only where the node's disk for jobs has that much left beside what placed jobs
stated, explained while none has, and named in its assignment (the agent holds the job to it)."""

from __future__ import annotations

import asyncpg

from fog_scheduler import service, store
from fog_shared.commands.scheduler import JobSpec

from .test_metrics import NODE, T0, insert_job, leading_loop
from .test_placement_full_cluster import explained

GIB = 1 << 30


def stating(disk_bytes: int) -> JobSpec:
    return JobSpec.model_validate({"command": ["true"], "resources": {"disk_bytes": disk_bytes}})


async def test_jobs_that_state_their_disk_share_the_nodes_disk_for_jobs(pool: tuple[asyncpg.Pool, str, str]) -> None:
    connections = pool[0]
    loop = leading_loop(pool)
    async with connections.acquire() as conn:
        node = {**NODE, "cpu_cores": 8, "disk_bytes": 10 * GIB}
        await store.upsert_node(conn, "n1", status="ready", capabilities=node, labels={}, region=None, now=T0)
        holding = await insert_job(conn, "running", T0, stating(6 * GIB))  # on n1
        # A job of a spec from before jobs stated their disk: it holds none.
        older = await insert_job(conn, "running", T0)
        await conn.execute("UPDATE jobs SET spec = spec #- '{resources,disk_bytes}' WHERE id = $1", older)
        waiting = await insert_job(conn, "pending", T0, stating(6 * GIB))
        unstated = await insert_job(conn, "pending", T0)
        too_big = await insert_job(conn, "pending", T0, stating(20 * GIB))

    await loop.cycle()
    assert await explained(connections, waiting) == {"status": "pending", "filtered": {"disk in use": 1}}
    assert (await explained(connections, unstated))["status"] == "assigned"  # a job that states none is placed by none
    assert await explained(connections, too_big) == {"status": "pending", "filtered": {"too little disk": 1}}

    async with connections.acquire() as conn:  # the first one ended: its disk is free again
        await conn.execute("UPDATE jobs SET status = 'succeeded' WHERE id = $1", holding)
    loop.wake()
    await loop.cycle()
    assert (await explained(connections, waiting))["status"] == "assigned"
    async with connections.acquire() as conn:
        assignments = (await service.node_assignments(conn, "n1")).assignments
    [placed] = [assignment for assignment in assignments if assignment.job_id == str(waiting)]
    assert placed.resources.disk_bytes == 6 * GIB
