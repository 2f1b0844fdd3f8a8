"""Messaging's copies of auth's facts, kept from auth's events alone: who exists (``users``) and whose each
node is (``node_owners``). The live consumers apply each event with these projections; ``fogctl events
rebuild messaging`` replays the same events through them into scratch copies and compares
(:mod:`fog_shared.replay.rebuild`)."""

from __future__ import annotations

import asyncpg

from fog_messaging import store
from fog_shared.bus.topology import CONSUMERS
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.events.auth import NodeCredentialIssued, NodeCredentialRevoked, UserRegistered
from fog_shared.replay.rebuild import ReadModel


async def project_user(conn: asyncpg.Connection, event: Event, _: Envelope) -> None:
    """Keep messaging's own copy of who exists (a conversation needs known members)."""
    if isinstance(event, UserRegistered):
        await store.upsert_user(conn, event.user_id, event.email, event.registered_at)


async def project_node_owner(conn: asyncpg.Connection, event: Event, _: Envelope) -> None:
    """Whose each node is: a node may message its owner only, and only while its credential lives."""
    if isinstance(event, NodeCredentialIssued):
        await store.set_node_owner(conn, event.node_id, event.owner_id, revoked=False)
    elif isinstance(event, NodeCredentialRevoked):
        await store.set_node_owner(conn, event.node_id, event.owner_id, revoked=True)


USERS = ReadModel(
    service="messaging", name="users", table="users", key="user_id", columns=("email", "registered_at"),
    consumer=next(spec for spec in CONSUMERS if spec.durable == "messaging__users"), project=project_user,
)  # fmt: skip
NODE_OWNERS = ReadModel(
    service="messaging", name="node_owners", table="node_owners", key="node_id", columns=("owner_id", "revoked"),
    consumer=next(spec for spec in CONSUMERS if spec.durable == "messaging__node_owners"), project=project_node_owner,
)  # fmt: skip
#: what ``fogctl events rebuild messaging`` can rebuild (the first when none is named)
READ_MODELS = (USERS, NODE_OWNERS)
