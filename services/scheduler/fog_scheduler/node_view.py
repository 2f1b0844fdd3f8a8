"""The scheduler's node view (table ``nodes``), as registry node events describe the nodes."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from fog_scheduler import store
from fog_shared.events import Event
from fog_shared.events.registry import (
    NodeCapabilitiesChanged,
    NodeDeregistered,
    NodeLabelsChanged,
    NodeRegistered,
    NodeReputationChanged,
    NodeStatusChanged,
)


async def project(conn: asyncpg.Connection, event: Event, now: datetime) -> None:
    """The node view alone (table ``nodes``), without side effects: also what a rebuild replays."""
    if isinstance(event, NodeRegistered):
        await store.upsert_node(conn, event.node_id, status="down", capabilities=event.capabilities,
                                labels=event.labels, region=event.region, now=now)  # fmt: skip
    elif isinstance(event, NodeStatusChanged):
        await store.set_node_status(conn, event.node_id, event.status, now)
    elif isinstance(event, NodeLabelsChanged):
        await store.set_node_labels(conn, event.node_id, event.labels, now)
    elif isinstance(event, NodeCapabilitiesChanged):
        await store.set_node_capabilities(conn, event.node_id, event.capabilities, now)
    elif isinstance(event, NodeReputationChanged):
        await store.set_node_reputation(conn, event.node_id, event.reputation, now)
    elif isinstance(event, NodeDeregistered):
        await store.delete_node(conn, event.node_id)
