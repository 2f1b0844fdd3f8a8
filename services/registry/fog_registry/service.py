"""Registry use cases: register, see, drain and deregister nodes; record status and reputation.

Each takes the connection it works in; state changes and the events they cause commit together
(through the outbox). Refusals are :class:`RegistryError` with a stable code.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from fog_registry import domain, store
from fog_shared.commands import registry as contract
from fog_shared.commands.auth import Principal
from fog_shared.commands.common import Refusal
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.events.registry import (
    NodeCapabilitiesChanged,
    NodeDeregistered,
    NodeLabelsChanged,
    NodeRegistered,
    NodeReputationChanged,
    NodeStatusChanged,
)
from fog_shared.pg import outbox

SOURCE = "fog/registry"


class RegistryError(Refusal):
    """A refusal of the registry service (a stable ``code`` and a detail for people)."""


def view(row: asyncpg.Record, live: dict[str, Any] | None = None) -> contract.NodeView:
    """A node as the API shows it; ``live`` (seen_at, usage, running_jobs, agent) is fresher than the row."""
    values = dict(row)
    if live is not None and (values["last_heartbeat_at"] is None or live["seen_at"] > values["last_heartbeat_at"]):
        values |= {"last_heartbeat_at": live["seen_at"], "usage": live["usage"], "running_jobs": live["running_jobs"],
                   "agent": live["agent"]}  # fmt: skip
    values.pop("draining", None)
    contribution = {name: values.pop(name) for name in store.CONTRIBUTION if name in values}
    return contract.NodeView(**values, contribution=contract.Contribution(**contribution))


async def register_node(
    conn: asyncpg.Connection, command: contract.RegisterNodeCommand, *, now: datetime
) -> contract.NodeView:
    """A new node, ``down`` until its first heartbeat."""
    registration, node_id = command.registration, str(uuid.uuid4())
    capabilities = registration.capabilities.model_dump(mode="json")
    location = registration.location.model_dump() if registration.location else None
    async with conn.transaction():
        row = await store.insert_node(
            conn, node_id=node_id, owner_id=command.owner_id, name=registration.name, capabilities=capabilities,
            labels=registration.labels, region=registration.region, location=location, status=domain.DOWN, now=now,
        )  # fmt: skip
        event = NodeRegistered(
            node_id=node_id, owner_id=command.owner_id, name=registration.name, capabilities=capabilities,
            labels=registration.labels, region=registration.region, registered_at=now,
        )  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
    return view(row)


async def visible_node(conn: asyncpg.Connection, node_id: str, by: Principal, *, for_update: bool = False) -> Any:
    row = await store.node(conn, node_id, for_update=for_update)
    if row is None or not domain.may_see(
        node_id=node_id, owner_id=row["owner_id"], kind=by.kind, user_id=by.user_id, by_node_id=by.node_id,
        roles=by.roles,
    ):  # fmt: skip
        raise RegistryError("not_found", "no such node")  # someone else's node looks like none
    return row


async def list_nodes(conn: asyncpg.Connection, query: contract.ListNodesQuery) -> list[asyncpg.Record]:
    by = query.by
    if by.kind == "node":
        return []
    owner = query.owner_id if "admin" in by.roles else by.user_id
    return await store.list_nodes(
        conn, owner_id=owner, status=query.status, labels=query.labels, min_cpu_cores=query.min_cpu_cores,
        min_memory_bytes=query.min_memory_bytes, limit=query.limit,
    )  # fmt: skip


async def drain_node(conn: asyncpg.Connection, query: contract.NodeQuery, *, now: datetime) -> contract.NodeView:
    """No new work for the node; running work finishes. Announced at once if it is ready."""
    return await _set_draining(conn, query, draining=True, now=now)


async def resume_node(conn: asyncpg.Connection, query: contract.NodeQuery, *, now: datetime) -> contract.NodeView:
    """The drain is over: the node takes new work again. Announced at once if it is draining (alive); a node
    that is suspect or down comes back ready, not draining, with its next heartbeat."""
    return await _set_draining(conn, query, draining=False, now=now)


async def _set_draining(
    conn: asyncpg.Connection, query: contract.NodeQuery, *, draining: bool, now: datetime
) -> contract.NodeView:
    async with conn.transaction():
        row = await visible_node(conn, query.node_id, query.by, for_update=True)
        await store.set_draining(conn, query.node_id, now, draining=draining)
        change = domain.drain_change(query.node_id, row["status"], draining=draining)
        if change is not None:
            await record_transition(conn, change, now=now)
        return view(await visible_node(conn, query.node_id, query.by))


async def label_node(
    conn: asyncpg.Connection, command: contract.LabelNodeCommand, *, now: datetime
) -> contract.NodeView:
    """Change the node's labels (a merge patch); announced with the whole new set, unless nothing changed."""
    async with conn.transaction():
        row = await visible_node(conn, command.node_id, command.by, for_update=True)
        previous = dict(row["labels"])
        try:
            labels = domain.patched_labels(previous, command.labels, most=contract.MAX_LABELS)
        except domain.TooManyLabels as exc:
            raise RegistryError("too_many_labels", str(exc)) from None
        if labels != previous:
            await store.set_labels(conn, command.node_id, labels, now)
            event = NodeLabelsChanged(node_id=command.node_id, labels=labels, previous_labels=previous, changed_at=now)
            await outbox.record(conn, event, source=SOURCE)
        return view(await visible_node(conn, command.node_id, command.by))


async def declare_capabilities(
    conn: asyncpg.Connection, command: contract.DeclareCapabilitiesCommand, *, now: datetime
) -> contract.NodeView:
    """What the node's agent measured at its start; announced with the whole new set, unless nothing changed. Only
    the node itself declares: a person cannot know the machine better than its agent."""
    if command.by.kind != "node" or command.by.node_id != command.node_id:
        raise RegistryError("forbidden", "only the node itself declares what it offers")
    async with conn.transaction():
        row = await visible_node(conn, command.node_id, command.by, for_update=True)
        previous = dict(row["capabilities"])
        capabilities = command.capabilities.model_dump(mode="json")
        if capabilities != previous:
            await store.set_capabilities(conn, command.node_id, capabilities, now)
            event = NodeCapabilitiesChanged(
                node_id=command.node_id, capabilities=capabilities, previous_capabilities=previous, changed_at=now
            )
            await outbox.record(conn, event, source=SOURCE)
        return view(await visible_node(conn, command.node_id, command.by))


async def deregister_node(conn: asyncpg.Connection, query: contract.NodeQuery, *, now: datetime) -> str:
    """The node is gone; returns its owner (the gateway revokes its credential next)."""
    async with conn.transaction():
        row = await visible_node(conn, query.node_id, query.by, for_update=True)
        await store.deregister(conn, query.node_id, now)
        event = NodeDeregistered(node_id=query.node_id, owner_id=row["owner_id"], deregistered_at=now)
        await outbox.record(conn, event, source=SOURCE)
        return str(row["owner_id"])


async def record_transition(conn: asyncpg.Connection, transition: domain.Transition, *, now: datetime) -> bool:
    """Persist one announced status change with its event; False if the row moved meanwhile."""
    if not await store.set_status(conn, transition.node_id, previous=transition.previous, status=transition.status,
                                  now=now, bump=transition.status == domain.DRAINING):  # fmt: skip
        return False
    event = NodeStatusChanged(
        node_id=transition.node_id, status=transition.status, previous_status=transition.previous,
        reason=transition.reason, changed_at=now,
    )  # fmt: skip
    await outbox.record(conn, event, source=SOURCE)
    if transition.counts_against:
        await record_outcome(conn, transition.node_id, success=False, weight=domain.WENT_DOWN_WEIGHT,
                             reason="went down", now=now)  # fmt: skip
    return True


@dataclass(frozen=True, slots=True)
class Outcome:
    """Something that happened on a node and moves its reputation (``weight`` for or against it)."""

    node_id: str
    success: bool
    weight: float
    reason: str
    caused_by: Envelope | None = None


async def record_outcome(
    conn: asyncpg.Connection, node_id: str, *, success: bool, weight: float, reason: str, now: datetime,
    caused_by: Envelope | None = None,
) -> None:  # fmt: skip
    """Move the node's reputation; announce it when it moved noticeably (following ``caused_by``)."""
    await record_outcomes(conn, [Outcome(node_id, success, weight, reason, caused_by)], now=now)


async def record_contributions(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """Add what each node gave (``domain.contributions``) to its totals, the nodes in id order: the rows are
    locked in the order ``record_outcomes`` then takes them again, so two batches cannot deadlock."""
    for node_id, given in sorted(domain.contributions(events).items()):
        await store.add_contribution(
            conn, node_id, succeeded=given.succeeded, failed=given.failed, lost=given.lost, run_s=given.run_s,
            cpu_s=given.cpu_s,
        )  # fmt: skip


async def record_outcomes(conn: asyncpg.Connection, outcomes: Sequence[Outcome], *, now: datetime) -> None:
    """Move the nodes' reputations, in order: one read and one write per node, however many outcomes it had.

    Each announcement is made as it would have been one outcome at a time: when the score has moved
    noticeably since the last one announced, following the outcome that moved it.
    """
    by_node: dict[str, list[Outcome]] = {}
    for outcome in outcomes:
        by_node.setdefault(outcome.node_id, []).append(outcome)
    for node_id in sorted(by_node):  # row locks in id order: two batches over the same nodes cannot deadlock
        row = await store.reputation(conn, node_id)
        if row is None:
            continue
        evidence = domain.Reputation(row["rep_successes"], row["rep_failures"], row["rep_updated_at"].timestamp())
        announced = first_announced = row["reputation"]
        for outcome in by_node[node_id]:
            evidence = evidence.record(
                success=outcome.success, weight=outcome.weight, now=now.timestamp(),
                half_life_s=domain.REPUTATION_HALF_LIFE_S,
            )  # fmt: skip
            if domain.worth_announcing(announced, evidence.score):
                event = NodeReputationChanged(
                    node_id=node_id, reputation=round(evidence.score, 4), previous_reputation=round(announced, 4),
                    reason=outcome.reason, changed_at=now,
                )  # fmt: skip
                await outbox.record(conn, event, source=SOURCE, caused_by=outcome.caused_by)
                announced = evidence.score
        await store.set_reputation(
            conn, node_id, score=None if announced == first_announced else announced,
            successes=evidence.successes, failures=evidence.failures, now=now,
        )  # fmt: skip
