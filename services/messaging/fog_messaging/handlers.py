"""Bus adapters of the messaging service: decode, call one use case, reply."""

import asyncpg

from fog_messaging import store
from fog_shared.bus.topology import CONSUMERS
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.events.auth import UserRegistered
from fog_shared.runtime import ServiceRuntime

USERS_CONSUMER = next(c for c in CONSUMERS if c.durable == "messaging__users")


async def on_user_event(conn: asyncpg.Connection, event: Event, _: Envelope) -> None:
    """Keep messaging's own copy of who exists (a conversation needs known members)."""
    if isinstance(event, UserRegistered):
        await store.upsert_user(conn, event.user_id, event.email, event.registered_at)


def register(runtime: ServiceRuntime) -> None:
    runtime.consume(USERS_CONSUMER, on_user_event)
