"""Event replay against a real JetStream: history pages, gaps, traces and dead-letter re-drive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from nats.js import JetStreamContext

from fog_shared.bus.consumer import H_REDRIVE_FOR, EventConsumer
from fog_shared.bus.publish import publish_event, publish_raw
from fog_shared.bus.topology import ConsumerSpec
from fog_shared.envelope import NATS_MSG_ID, Envelope
from fog_shared.replay import deadletters
from fog_shared.replay.causality import trace
from fog_shared.replay.history import Query, history, parse_cursor
from fog_shared.testing.waiting import wait_until

from .conftest import AUTH_STREAM, Effects, user
from .test_consumer import emails_handled

AUTH_EVENTS = "fog.evt.auth.>"


async def publish(js: JetStreamContext, n: int, *, email: str | None = None, cause: Envelope | None = None) -> Envelope:
    event = user(n, email)
    if cause is not None:
        envelope = cause.caused(type=event.TYPE.name, source="fog/auth", subject=event.aggregate_id)
    else:
        envelope = Envelope.new(type=event.TYPE.name, source="fog/auth", subject=event.aggregate_id)
    await publish_event(js, AUTH_STREAM, event, envelope)
    return envelope


async def test_history_pages_through_the_events_in_order_and_the_cursor_picks_up_new_ones(
    streams: JetStreamContext,
) -> None:
    published = [(await publish(streams, n)).id for n in range(5)]
    seen, query = [], Query(subject=AUTH_EVENTS, limit=2)
    while True:
        page = await history(streams, query)
        assert page.gaps == []
        seen.extend(r.id for r in page.items)
        if not page.more:
            break
        query = Query(subject=AUTH_EVENTS, limit=2, cursor=parse_cursor(page.cursor))
    assert seen == published
    later = await publish(streams, 9)
    page = await history(streams, Query(subject=AUTH_EVENTS, cursor=parse_cursor(page.cursor)))
    assert [r.id for r in page.items] == [later.id]
    assert page.items[0].aggregate_id == "u9"
    assert page.items[0].data["email"] == "user9@example.org"


async def test_history_of_one_aggregate_within_a_time_range(streams: JetStreamContext) -> None:
    await publish(streams, 1)
    before = datetime.now(UTC)
    wanted = [(await publish(streams, 2)).id, (await publish(streams, 3)).id, (await publish(streams, 2)).id]
    page = await history(streams, Query(subject=AUTH_EVENTS, since=before, aggregate_id="u2"))
    assert [r.id for r in page.items] == [wanted[0], wanted[2]]
    until_past = await history(streams, Query(subject=AUTH_EVENTS, until=before - timedelta(minutes=1)))
    assert until_past.items == []
    assert not until_past.more


async def test_a_start_older_than_what_the_stream_holds_is_reported_as_a_gap(streams: JetStreamContext) -> None:
    for n in range(4):
        await publish(streams, n)
    await streams.purge_stream(AUTH_STREAM, keep=2)  # as retention would drop the oldest
    page = await history(streams, Query(subject=AUTH_EVENTS, since=datetime.now(UTC) - timedelta(days=1)))
    assert [r.seq for r in page.items] == [3, 4]
    [gap] = page.gaps
    assert gap.stream == AUTH_STREAM
    assert gap.first_retained_seq == 3
    assert "no longer holds" in gap.detail
    from_seq_3 = await history(streams, Query(subject=AUTH_EVENTS, cursor={AUTH_STREAM: 3}))
    assert from_seq_3.gaps == []


async def test_reading_history_leaves_no_consumer_behind(streams: JetStreamContext) -> None:
    await publish(streams, 1)
    before = (await streams.stream_info(AUTH_STREAM)).state.consumer_count
    await history(streams, Query(subject=AUTH_EVENTS))
    assert (await streams.stream_info(AUTH_STREAM)).state.consumer_count == before


async def test_the_trace_of_a_request_follows_causation_ids(streams: JetStreamContext) -> None:
    root = await publish(streams, 1)
    child = await publish(streams, 2, cause=root)
    grandchild = await publish(streams, 3, cause=child)
    await publish(streams, 4)  # another request
    found = await trace(streams, root.correlation_id or "", since=datetime.now(UTC) - timedelta(minutes=5))
    assert [(s.event.id, s.depth) for s in found.steps] == [(root.id, 0), (child.id, 1), (grandchild.id, 2)]
    assert found.steps[2].offset_ms >= found.steps[1].offset_ms >= 0


@pytest.fixture
async def engine(
    consumer_pool: asyncpg.Pool, streams: JetStreamContext, consumer_spec: ConsumerSpec, effects: Effects
) -> AsyncIterator[EventConsumer]:
    running = EventConsumer(
        spec=consumer_spec, pool=consumer_pool, js=streams, handler=effects.handle, batch_size=10, fetch_timeout_s=0.2
    )
    task = asyncio.create_task(running.run())
    yield running
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_dead_letter_is_listed_with_its_error_and_redriven_once_fixed(
    engine: EventConsumer, consumer_pool: asyncpg.Pool, streams: JetStreamContext, effects: Effects
) -> None:
    effects.fail_emails.add("poison@example.org")
    poison = await publish(streams, 1, email="poison@example.org")

    async def parked() -> list[object]:
        return list((await deadletters.list_dead_letters(streams, Query())).items)

    [entry] = await wait_until(parked, timeout=15, what="the poison event dead-lettered")
    assert entry.id == poison.id
    assert entry.dead_letter is not None
    assert entry.dead_letter.consumer == engine.spec.durable
    assert "cannot handle poison@example.org" in entry.dead_letter.error
    assert (await deadletters.show(streams, entry.seq)).id == poison.id

    effects.fail_emails.clear()  # the fix
    redriven = await deadletters.redrive(streams, entry.seq)
    assert redriven.stream == AUTH_STREAM
    assert redriven.consumer == engine.spec.durable

    async def handled() -> bool:
        return "poison@example.org" in await emails_handled(consumer_pool)

    await wait_until(handled, what="the re-driven event handled")
    assert await parked() == []
    with pytest.raises(deadletters.NoSuchDeadLetter):
        await deadletters.redrive(streams, entry.seq)
    copy = (await history(streams, Query(subject=AUTH_EVENTS, aggregate_id="u1"))).items[-1]
    assert copy.id == poison.id
    assert copy.redrive_of == f"DLQ:{entry.seq}"


async def test_a_redriven_copy_meant_for_another_consumer_is_acked_unhandled(
    engine: EventConsumer, consumer_pool: asyncpg.Pool, streams: JetStreamContext
) -> None:
    elsewhere = user(5, "elsewhere@example.org")
    envelope = Envelope.new(type=elsewhere.TYPE.name, source="fog/auth", subject=elsewhere.aggregate_id)
    headers = {**envelope.to_headers(), H_REDRIVE_FOR: "someone__else", NATS_MSG_ID: "redrive:DLQ:9:x"}
    ack = await publish_raw(streams, AUTH_STREAM, elsewhere.TYPE.subject, elsewhere.to_json(), headers)
    await publish(streams, 6)  # the stream flows on past it

    async def past_both() -> bool:
        info = await streams.consumer_info(AUTH_STREAM, engine.spec.durable)
        return bool(info.ack_floor and (info.ack_floor.stream_seq or 0) > ack.seq)

    await wait_until(past_both, what="the consumer past the copy")
    assert await emails_handled(consumer_pool) == ["user6@example.org"]
