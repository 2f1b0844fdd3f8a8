"""Fixtures for the plumbing's integration tests: a schema, streams and a consumer of auth user events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from nats.js import JetStreamContext

from fog_shared.bus.provision import provision
from fog_shared.bus.topology import DEAD_LETTER_STREAM, ConsumerSpec, StreamSpec, Topology, event_stream_name
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.events.auth import UserRegistered
from fog_shared.pg.pool import create_pool
from fog_shared.testing.plugin import ServiceDb, ServiceDbFactory

MIGRATIONS = Path(__file__).parent / "migrations"
AUTH_STREAM = event_stream_name("auth")


def user(n: int, email: str | None = None) -> UserRegistered:
    return UserRegistered(
        user_id=f"u{n}", email=email or f"user{n}@example.org", roles=["user"], registered_at=datetime.now(UTC)
    )


@pytest.fixture
def consumer_spec() -> ConsumerSpec:
    return ConsumerSpec(
        stream=AUTH_STREAM,
        durable="test__users",
        filter_subjects=("fog.evt.auth.user.>",),
        max_deliver=3,
        backoff_s=(0.2, 0.4),
        ack_wait_s=5.0,
    )


@pytest.fixture
async def streams(jetstream: JetStreamContext, consumer_spec: ConsumerSpec) -> JetStreamContext:
    topology = Topology(
        streams=(StreamSpec(AUTH_STREAM, ("fog.evt.auth.>",)), DEAD_LETTER_STREAM), consumers=(consumer_spec,)
    )
    await provision(jetstream, topology)
    return jetstream


@pytest.fixture
async def producer_db(service_db: ServiceDbFactory) -> ServiceDb:
    return await service_db("auth")


@pytest.fixture
async def consumer_db(service_db: ServiceDbFactory) -> ServiceDb:
    return await service_db("messaging", MIGRATIONS)


@pytest.fixture
async def consumer_pool(consumer_db: ServiceDb) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(consumer_db.dsn, consumer_db.schema, max_size=4)
    yield pool
    await pool.close()


@dataclass
class Effects:
    """A handler whose effect is a row per handled event, and which can be told to fail."""

    fail_emails: set[str] = field(default_factory=set)
    attempts: dict[str, list[float]] = field(default_factory=dict)

    async def handle(self, conn: asyncpg.Connection, event: Event, envelope: Envelope) -> None:
        import time

        assert isinstance(event, UserRegistered)
        self.attempts.setdefault(event.email, []).append(time.monotonic())
        await conn.execute("INSERT INTO effects (event_id, email) VALUES ($1, $2)", envelope.id, event.email)
        if event.email in self.fail_emails:
            raise RuntimeError(f"cannot handle {event.email}")

    async def handle_batch(self, conn: asyncpg.Connection, events: list[tuple[Event, Envelope]]) -> None:
        """The same effects through the batch-handler interface."""
        for event, envelope in events:
            await self.handle(conn, event, envelope)


@pytest.fixture
def effects() -> Effects:
    return Effects()
