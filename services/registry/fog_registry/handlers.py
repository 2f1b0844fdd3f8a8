"""Bus adapters of the registry: decode, call one use case, reply."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from fog_registry import domain, service
from fog_registry.liveness import LivenessMonitor
from fog_shared.bus.broker import queue_group
from fog_shared.bus.topology import CONSUMERS
from fog_shared.commands import registry as contract
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.events.scheduler import JobCompleted, JobFailed
from fog_shared.runtime import ServiceRuntime

JOB_OUTCOMES = next(c for c in CONSUMERS if c.durable == "registry__job_outcomes")


def register(runtime: ServiceRuntime, monitor: LivenessMonitor) -> None:
    broker, group = runtime.broker, queue_group("registry")

    answer = runtime.answer

    def live_view(row: asyncpg.Record) -> contract.NodeView:
        return service.view(row, monitor.live.get(row["id"]))

    @broker.subscriber(contract.REGISTER_NODE, queue=group, title="register_node")
    async def register_node(body: contract.RegisterNodeCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.register_node(conn, body, now=_now()))

    @broker.subscriber(contract.GET_NODE, queue=group, title="get_node")
    async def get_node(body: contract.NodeQuery) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> contract.NodeView:
            return live_view(await service.visible_node(conn, body.node_id, body.by))

        return await answer(run)

    @broker.subscriber(contract.LIST_NODES, queue=group, title="list_nodes")
    async def list_nodes(body: contract.ListNodesQuery) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> contract.NodeList:
            return contract.NodeList(items=[live_view(row) for row in await service.list_nodes(conn, body)])

        return await answer(run)

    @broker.subscriber(contract.DRAIN_NODE, queue=group, title="drain_node")
    async def drain_node(body: contract.NodeQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.drain_node(conn, body, now=_now()))

    @broker.subscriber(contract.RESUME_NODE, queue=group, title="resume_node")
    async def resume_node(body: contract.NodeQuery) -> dict[str, Any]:
        return await answer(lambda conn: service.resume_node(conn, body, now=_now()))

    @broker.subscriber(contract.LABEL_NODE, queue=group, title="label_node")
    async def label_node(body: contract.LabelNodeCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.label_node(conn, body, now=_now()))

    @broker.subscriber(contract.DECLARE_CAPABILITIES, queue=group, title="declare_capabilities")
    async def declare_capabilities(body: contract.DeclareCapabilitiesCommand) -> dict[str, Any]:
        return await answer(lambda conn: service.declare_capabilities(conn, body, now=_now()))

    @broker.subscriber(contract.DEREGISTER_NODE, queue=group, title="deregister_node")
    async def deregister_node(body: contract.NodeQuery) -> dict[str, Any]:
        async def run(conn: asyncpg.Connection) -> dict[str, Any]:
            return {"owner_id": await service.deregister_node(conn, body, now=_now())}

        return await answer(run)

    # No queue group: every replica hears every batch, so a standby is warm when it takes over.
    @broker.subscriber(contract.HEARTBEATS, title="heartbeats")
    async def heartbeats(body: contract.HeartbeatBatch) -> None:
        await monitor.on_batch(body)

    runtime.consume_batches(JOB_OUTCOMES, on_job_outcomes)


async def on_job_outcomes(conn: asyncpg.Connection, events: list[tuple[Event, Envelope]]) -> None:
    """Reputation and contribution follow what happened to the jobs a node ran: a batch of outcomes, one write
    of each per node."""
    await service.record_contributions(conn, [event for event, _ in events])
    outcomes = []
    for event, envelope in events:
        if isinstance(event, JobCompleted):
            weight = domain.JOB_COMPLETED_WEIGHT
            outcomes.append(service.Outcome(event.node_id, True, weight, "job completed", envelope))
        elif isinstance(event, JobFailed) and event.node_fault and event.node_id:
            reason = f"job failed: {event.reason}"
            outcomes.append(service.Outcome(event.node_id, False, domain.JOB_FAILED_BY_NODE_WEIGHT, reason, envelope))
    await service.record_outcomes(conn, outcomes, now=_now())


def _now() -> datetime:
    return datetime.now(UTC)
