"""Outbox → JetStream: nothing lost while NATS is down, nothing doubled after a relay crash."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from fog_shared.bus.consumer import EventConsumer
from fog_shared.bus.publish import publish_raw
from fog_shared.bus.topology import ConsumerSpec
from fog_shared.envelope import NATS_MSG_ID
from fog_shared.events.auth import UserDisabled, UserRegistered
from fog_shared.pg import outbox
from fog_shared.pg.outbox import OutboxRelay
from fog_shared.subjects import event_type_of
from fog_shared.testing.plugin import Servers, ServiceDb
from fog_shared.testing.waiting import wait_until

from .conftest import AUTH_STREAM, Effects, user


async def record_users(db: ServiceDb, *numbers: int) -> None:
    conn = await asyncpg.connect(db.dsn)
    try:
        async with conn.transaction():
            for n in numbers:
                await outbox.record(conn, user(n), source="fog/auth")
    finally:
        await conn.close()


async def stream_count(js: JetStreamContext) -> int:
    return (await js.stream_info(AUTH_STREAM)).state.messages


async def unpublished(db: ServiceDb) -> int:
    conn = await asyncpg.connect(db.dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    finally:
        await conn.close()


def relay_for(db: ServiceDb, nc: NatsClient) -> OutboxRelay:
    return OutboxRelay(dsn=db.dsn, schema=db.schema, nc=nc, stream=AUTH_STREAM, poll_interval_s=0.1, ack_timeout_s=1.0)


async def test_relay_publishes_committed_events_woken_by_notify(
    producer_db: ServiceDb, streams: JetStreamContext, nats_client: NatsClient
) -> None:
    relay = relay_for(producer_db, nats_client)
    task = asyncio.create_task(relay.run())
    try:
        await record_users(producer_db, 1, 2, 3)
        await wait_until(lambda: _eq(stream_count(streams), 3), what="3 events in the stream")
        await wait_until(lambda: _eq(unpublished(producer_db), 0), what="rows marked published")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_rolled_back_transaction_publishes_nothing(
    producer_db: ServiceDb, streams: JetStreamContext, nats_client: NatsClient
) -> None:
    conn = await asyncpg.connect(producer_db.dsn)

    async def failing_state_change() -> None:
        async with conn.transaction():
            await outbox.record(conn, user(1), source="fog/auth")
            raise RuntimeError("state change failed")

    with pytest.raises(RuntimeError):
        await failing_state_change()
    await conn.close()
    await record_users(producer_db, 2)
    relay_conn = await asyncpg.connect(producer_db.dsn)
    assert await relay_for(producer_db, nats_client).drain(relay_conn) == 1
    await relay_conn.close()
    assert await stream_count(streams) == 1


async def test_event_committed_while_nats_is_down_is_published_when_it_is_back(
    fog_servers: Servers, producer_db: ServiceDb, streams: JetStreamContext, nats_client: NatsClient
) -> None:
    nats_server = fog_servers.nats
    if nats_server is None:
        pytest.fail("this fault test needs the NATS server the harness started (unset FOG_TEST_NATS_URL)")
    relay = relay_for(producer_db, nats_client)
    task = asyncio.create_task(relay.run())
    try:
        nats_server.kill()  # type: ignore[attr-defined]
        await record_users(producer_db, 1)
        # The relay tries, fails and keeps the row: NATS never acked it.
        await wait_until(lambda: _true(publish_errors(producer_db) > 0), timeout=15, what="a failed publish")
        assert await unpublished(producer_db) == 1
        nats_server.start()  # type: ignore[attr-defined]
        await wait_until(lambda: _eq(unpublished(producer_db), 0), timeout=30, what="row published after restart")
        await wait_until(lambda: _eq(stream_count(streams), 1), timeout=10, what="the event in the stream")
        assert relay.published == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class RelayKilled(BaseException):
    """Stands for SIGKILL: raised where the process would die, caught by nothing in the relay."""


async def test_relay_killed_between_ack_and_mark_causes_no_second_effect(
    producer_db: ServiceDb,
    consumer_pool: asyncpg.Pool,
    streams: JetStreamContext,
    consumer_spec: ConsumerSpec,
    effects: Effects,
    monkeypatch: pytest.MonkeyPatch,
    nats_client: NatsClient,
) -> None:
    await record_users(producer_db, 1, 2)

    async def die(*_: object) -> None:
        raise RelayKilled

    crashed = relay_for(producer_db, nats_client)
    monkeypatch.setattr(crashed, "_mark_published", die)
    conn = await asyncpg.connect(producer_db.dsn)
    with pytest.raises(RelayKilled):
        await crashed.drain(conn)
    await conn.close()
    assert await stream_count(streams) == 2, "the events were acked by JetStream before the crash"
    assert await unpublished(producer_db) == 2, "but never marked published"

    # The restarted relay publishes them again: the duplicate window drops the copies.
    conn = await asyncpg.connect(producer_db.dsn)
    assert await relay_for(producer_db, nats_client).drain(conn) == 2
    await conn.close()
    assert await stream_count(streams) == 2

    consumer = EventConsumer(spec=consumer_spec, handler=effects.handle, pool=consumer_pool, js=streams)
    task = asyncio.create_task(consumer.run())
    try:
        await wait_until(lambda: _eq(effect_count(consumer_pool), 2), what="both events handled")
        # Past the duplicate window a re-publish gets a new stream sequence: the inbox catches it.
        message = await streams.get_msg(AUTH_STREAM, seq=1)
        headers = {k: v for k, v in (message.headers or {}).items() if not k.startswith("Nats-Batch")}
        headers[NATS_MSG_ID] = headers[NATS_MSG_ID] + "-after-window"
        await publish_raw(streams, AUTH_STREAM, message.subject, message.data or b"", headers)
        await wait_until(lambda: _eq(consumer_pending(streams, consumer_spec), 0), what="the copy consumed")
        assert await effect_count(consumer_pool) == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def publish_errors(db: ServiceDb) -> float:
    return REGISTRY.get_sample_value("fog_outbox_publish_errors_total", {"service": db.schema}) or 0.0


async def _true(value: bool) -> bool:
    return value


async def effect_count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM effects"))


async def consumer_pending(js: JetStreamContext, spec: ConsumerSpec) -> int:
    info = await js.consumer_info(spec.stream, spec.durable)
    return int(info.num_pending + info.num_ack_pending)


async def _eq(value: object, expected: object) -> bool:
    return bool(await value == expected)  # type: ignore[misc]


async def test_a_change_and_its_events_are_one_statement_and_no_change_records_nothing(
    producer_db: ServiceDb, streams: JetStreamContext, nats_client: NatsClient
) -> None:
    conn = await asyncpg.connect(producer_db.dsn)
    try:
        await conn.execute("CREATE TEMP TABLE things (id int PRIMARY KEY)")  # the role may create nothing else
        once = "INSERT INTO things VALUES ($1) ON CONFLICT DO NOTHING RETURNING id"
        made = await outbox.record_with(conn, once, [1], [user(1), user(2)], source="fog/auth")
        again = await outbox.record_with(conn, once, [1], [user(3)], source="fog/auth")
        with pytest.raises(asyncpg.UniqueViolationError):  # the change fails: its event goes with it
            await outbox.record_with(conn, "INSERT INTO things VALUES ($1) RETURNING id", [1], [user(4)], source="x")
        recorded = await conn.fetch("SELECT body FROM outbox ORDER BY id")
    finally:
        await conn.close()
    assert ([row["id"] for row in made], again) == ([1], [])
    assert [UserRegistered.from_json(row["body"]).user_id for row in recorded] == ["u1", "u2"]
    relay_conn = await asyncpg.connect(producer_db.dsn)
    try:
        assert await relay_for(producer_db, nats_client).drain(relay_conn) == 2
    finally:
        await relay_conn.close()
    assert await stream_count(streams) == 2


def published(db: ServiceDb, event_type: str) -> float:
    return REGISTRY.get_sample_value("fog_outbox_published_total", {"service": db.schema, "type": event_type}) or 0.0


async def test_published_events_are_counted_by_type(
    producer_db: ServiceDb, streams: JetStreamContext, nats_client: NatsClient
) -> None:
    registered, disabled = (event_type_of(e.TYPE.subject) for e in (UserRegistered, UserDisabled))
    before = published(producer_db, registered), published(producer_db, disabled)
    await record_users(producer_db, 1, 2)
    conn = await asyncpg.connect(producer_db.dsn)
    try:
        await outbox.record(
            conn, UserDisabled(user_id="u1", disabled_by="u0", disabled_at=datetime.now(UTC)), source="fog/auth"
        )
        assert await relay_for(producer_db, nats_client).drain(conn) == 3
    finally:
        await conn.close()
    assert (published(producer_db, registered) - before[0], published(producer_db, disabled) - before[1]) == (2, 1)
