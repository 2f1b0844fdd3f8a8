"""The consumer engine: inbox, backoff, dead-letter with the reason, and a stream that keeps flowing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import asyncpg
import pytest
from nats.js import JetStreamContext

from fog_shared.bus import consumer as consumer_module
from fog_shared.bus.consumer import EventConsumer
from fog_shared.bus.publish import publish_event, publish_raw
from fog_shared.bus.topology import ConsumerSpec
from fog_shared.envelope import Envelope
from fog_shared.events.auth import UserRegistered
from fog_shared.testing.waiting import wait_until

from .conftest import AUTH_STREAM, Effects, user

SUBJECT = UserRegistered.TYPE.subject


@pytest.fixture(params=["handler", "batch_handler"])
async def running_consumer(
    request: pytest.FixtureRequest,
    consumer_pool: asyncpg.Pool,
    streams: JetStreamContext,
    consumer_spec: ConsumerSpec,
    effects: Effects,
) -> AsyncIterator[EventConsumer]:
    """The engine with a per-event handler, and with a batch handler: same guarantees."""
    handlers = {"handler": effects.handle} if request.param == "handler" else {"batch_handler": effects.handle_batch}
    engine = EventConsumer(
        spec=consumer_spec, pool=consumer_pool, js=streams, batch_size=10, fetch_timeout_s=0.2, **handlers
    )
    task = asyncio.create_task(engine.run())
    yield engine
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def publish_user(js: JetStreamContext, n: int, email: str | None = None) -> Envelope:
    event = user(n, email)
    envelope = Envelope.new(type=event.TYPE.name, source="fog/auth", subject=event.aggregate_id)
    await publish_event(js, AUTH_STREAM, event, envelope)
    return envelope


async def emails_handled(pool: asyncpg.Pool) -> list[str]:
    return [r["email"] for r in await pool.fetch("SELECT email FROM effects ORDER BY id")]


async def dead_letters(js: JetStreamContext, count: int) -> list[tuple[dict[str, str], bytes]]:
    info = await js.stream_info("DLQ")
    if info.state.messages < count:
        return []
    messages = [await js.get_msg("DLQ", seq=s) for s in range(info.state.first_seq, info.state.last_seq + 1)]
    return [(dict(m.headers or {}), m.data or b"") for m in messages]


async def test_failing_handler_is_retried_with_backoff_then_dead_lettered_while_others_flow(
    running_consumer: EventConsumer, consumer_pool: asyncpg.Pool, streams: JetStreamContext, effects: Effects
) -> None:
    spec = running_consumer.spec
    effects.fail_emails.add("poison@example.org")
    await publish_user(streams, 1)
    poison = await publish_user(streams, 2, "poison@example.org")
    await publish_user(streams, 3)

    # The healthy events are handled while the poison one is still being retried.
    await wait_until(lambda: _has(emails_handled(consumer_pool), ["user1@example.org", "user3@example.org"]))
    parked = await wait_until(lambda: dead_letters(streams, 1), timeout=15, what="the poison event dead-lettered")

    headers, body = parked[0]
    assert headers[consumer_module.H_DLQ_REASON] == consumer_module.REASON_FAILED
    assert "RuntimeError: cannot handle poison@example.org" in headers[consumer_module.H_DLQ_ERROR]
    assert headers[consumer_module.H_DLQ_DELIVERIES] == str(spec.max_deliver)
    assert headers["ce-id"] == poison.id
    assert UserRegistered.model_validate_json(body).email == "poison@example.org"
    # Tried max_deliver times, each retry no sooner than its backoff. A batch handler may also
    # run once more per delivery, alone, to find which event of a failed batch is the culprit.
    attempts = effects.attempts["poison@example.org"]
    if running_consumer.handler is not None:
        assert len(attempts) == spec.max_deliver
        for n, (earlier, later) in enumerate(itertools.pairwise(attempts), start=1):
            assert later - earlier >= spec.backoff_for(n) * 0.9
    else:
        assert spec.max_deliver <= len(attempts) <= 2 * spec.max_deliver
    # Its failed attempts left no effect behind (each rolled back in its savepoint).
    assert await emails_handled(consumer_pool) == ["user1@example.org", "user3@example.org"]


async def test_invalid_body_is_dead_lettered_at_once(
    running_consumer: EventConsumer, consumer_pool: asyncpg.Pool, streams: JetStreamContext
) -> None:
    bad = Envelope.new(type=UserRegistered.TYPE.name, source="fog/auth")
    await publish_raw(streams, AUTH_STREAM, SUBJECT, b'{"user_id": 7, "email": null}', bad.to_headers())
    await publish_raw(streams, AUTH_STREAM, SUBJECT, b"not json", {"Nats-Msg-Id": "no-envelope"})
    await publish_user(streams, 4)

    parked = await wait_until(lambda: dead_letters(streams, 2), what="both bad events dead-lettered")
    reasons = {h[consumer_module.H_DLQ_REASON] for h, _ in parked}
    assert reasons == {consumer_module.REASON_INVALID}
    assert all(h[consumer_module.H_DLQ_DELIVERIES] == "1" for h, _ in parked), "no retry for invalid input"
    errors = " | ".join(h[consumer_module.H_DLQ_ERROR] for h, _ in parked)
    assert "invalid field" in errors
    assert "missing CloudEvents headers" in errors
    await wait_until(lambda: _has(emails_handled(consumer_pool), ["user4@example.org"]), what="the stream flowing")


async def test_redelivered_event_is_acked_and_skipped(
    running_consumer: EventConsumer, consumer_pool: asyncpg.Pool, streams: JetStreamContext
) -> None:
    envelope = await publish_user(streams, 5)
    # The same event again under another message id (a re-publish past the duplicate window).
    message = await streams.get_msg(AUTH_STREAM, seq=1)
    headers = dict(message.headers or {}) | {"Nats-Msg-Id": envelope.id + "-again"}
    await publish_raw(streams, AUTH_STREAM, SUBJECT, message.data or b"", headers)
    await publish_user(streams, 6)
    await wait_until(lambda: _has(emails_handled(consumer_pool), ["user5@example.org", "user6@example.org"]))
    info = await streams.consumer_info(AUTH_STREAM, running_consumer.spec.durable)
    assert info.num_ack_pending == 0
    assert await emails_handled(consumer_pool) == ["user5@example.org", "user6@example.org"]


async def _has(value: object, expected: list[str]) -> bool:
    return bool(await value == expected)  # type: ignore[misc]
