"""Bus adapters of the scheduler: decode, call one use case, reply; follow the registry's nodes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from fog_scheduler import node_view, rebuild, service
from fog_scheduler.placement import PlacementLoop
from fog_shared.bus.broker import queue_group
from fog_shared.commands import scheduler as contract
from fog_shared.commands.common import RebuildQuery
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.events.registry import NodeDeregistered, NodeStatusChanged
from fog_shared.replay.rebuild import answer_rebuild
from fog_shared.runtime import ServiceRuntime

#: the consumer that keeps the node view (and, live, marks a down node's work lost)
NODES = rebuild.NODE_VIEW.consumer


def register(runtime: ServiceRuntime, placement: PlacementLoop, *, waiting_max: int) -> None:
    broker, group = runtime.broker, queue_group("scheduler")

    answer = runtime.answer

    @broker.subscriber(contract.SUBMIT, queue=group, title="submit")
    async def submit(body: contract.SubmitCommand) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            async with placement.at_submit() as place:
                submitted = await service.submit(conn, body, now=_now(), place=place, waiting_max=waiting_max)
            if place is None:
                placement.wake()  # committed: this replica's loop, if it leads, need not wait for the NOTIFY
            return {"job": submitted["job"].model_dump(mode="json"), "created": submitted["created"]}

        return await answer(run)

    @broker.subscriber(contract.SUBMIT_ARRAY, queue=group, title="submit_array")
    async def submit_array(body: contract.SubmitArrayCommand) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> contract.ArrayView:
            submitted = await service.submit_array(conn, body, now=_now(), waiting_max=waiting_max)
            placement.wake()
            return submitted

        return await answer(run)

    @broker.subscriber(contract.GET_JOB, queue=group, title="get_job")
    async def get_job(body: contract.JobQuery) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> contract.JobView:
            return service.view(await service.owned_job(conn, body))

        return await answer(run)

    @broker.subscriber(contract.GET_JOBS, queue=group, title="get_jobs")
    async def get_jobs(body: contract.JobsQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.jobs_by_ids(conn, body))

    @broker.subscriber(contract.LIST_JOBS, queue=group, title="list_jobs")
    async def list_jobs(body: contract.ListJobsQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.list_jobs(conn, body))

    @broker.subscriber(contract.CANCEL_JOB, queue=group, title="cancel_job")
    async def cancel_job(body: contract.JobQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.cancel(conn, body, now=_now()))

    @broker.subscriber(contract.ARRAY_SUMMARY, queue=group, title="array_summary")
    async def array_summary(body: contract.ArrayQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.array_summary(conn, body))

    @broker.subscriber(contract.CANCEL_ARRAY, queue=group, title="cancel_array")
    async def cancel_array(body: contract.ArrayQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.cancel_array(conn, body, now=_now()))

    @broker.subscriber(contract.JOB_OUTPUT, queue=group, title="job_output")
    async def job_output(body: contract.OutputQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.job_output(conn, body))

    @broker.subscriber(contract.EXPLAIN_JOB, queue=group, title="explain_job")
    async def explain_job(body: contract.JobQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.explain(conn, body))

    @broker.subscriber(contract.JOB_FILES, queue=group, title="job_files")
    async def job_files(body: contract.JobFileQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.job_files(conn, body))

    @broker.subscriber(contract.JOB_FILE, queue=group, title="job_file")
    async def job_file(body: contract.JobFileQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.job_file(conn, body))

    @broker.subscriber(contract.NODE_ASSIGNMENTS, queue=group, title="node_assignments")
    async def node_assignments(body: contract.NodeAssignmentsQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.node_assignments(conn, body.node_id))

    @broker.subscriber(contract.REPORTS, queue=group, title="reports")
    async def reports(body: contract.ReportsCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.record_reports(conn, body, now=_now()))

    @broker.subscriber(contract.REBUILD, queue=group, title="rebuild")
    async def rebuild_read_model(body: RebuildQuery) -> dict[str, Any]:
        return await answer_rebuild(runtime, rebuild.READ_MODELS, body)

    async def on_node_event(conn: asyncpg.Connection, event: Event, envelope: Envelope) -> None:
        await follow_node(conn, event, envelope)
        placement.wake()  # capacity changed

    runtime.consume(NODES, on_node_event)


async def follow_node(conn: asyncpg.Connection, event: Event, envelope: Envelope | None = None) -> None:
    """The scheduler's own view of the nodes; a node going down loses the work placed there."""
    now = datetime.now(UTC)
    await node_view.project(conn, event, now)
    gone = isinstance(event, NodeDeregistered) or (isinstance(event, NodeStatusChanged) and event.status == "down")
    if gone:
        assert isinstance(event, NodeDeregistered | NodeStatusChanged)
        await service.node_went_down(conn, event.node_id, now=now, caused_by=envelope)


def _now() -> datetime:
    return datetime.now(UTC)
