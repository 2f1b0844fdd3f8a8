"""Request handlers on a ``make_broker`` broker run in the correlation id their caller sent."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from faststream.nats import NatsBroker, TestNatsBroker
from prometheus_client import CollectorRegistry

from fog_shared.bus.broker import make_broker
from fog_shared.bus.rpc import H_CORRELATION, request
from fog_shared.telemetry.context import correlation_id, use_correlation_id

SUBJECT = "fog.qry.test.whoami.v1"


@pytest.fixture
async def broker() -> AsyncIterator[NatsBroker]:
    broker = make_broker("nats://localhost:4222", "test", registry=CollectorRegistry())

    @broker.subscriber(SUBJECT)
    async def whoami(_: dict[str, str]) -> dict[str, str | None]:
        return {"correlation_id": correlation_id()}

    # TestNatsBroker runs the handler in the caller's task, through the broker's middlewares.
    async with TestNatsBroker(broker) as test_broker:
        yield test_broker


async def test_the_handler_runs_in_the_callers_correlation_id(broker: NatsBroker) -> None:
    # The whole path: rpc.request puts the id in the header, the middleware takes it from there
    # (the tests below show that the header, not the shared task, is what the handler sees).
    with use_correlation_id("req-42"):
        reply = await request(broker, SUBJECT, {}, timeout=1)
    assert reply == {"correlation_id": "req-42"}


async def test_the_header_itself_is_what_counts(broker: NatsBroker) -> None:
    reply = await broker.request({}, SUBJECT, headers={H_CORRELATION: "from-header"}, timeout=1)
    assert await reply.decode() == {"correlation_id": "from-header"}


async def test_without_the_header_the_handler_has_no_correlation_id(broker: NatsBroker) -> None:
    assert await request(broker, SUBJECT, {}, timeout=1) == {"correlation_id": None}


async def test_a_message_without_the_header_does_not_inherit_the_consumers_context(broker: NatsBroker) -> None:
    # In tests the handler shares the caller's task; in production the subscriber's task. Either
    # way, what the message does not carry must not leak in from whoever runs the handler.
    with use_correlation_id("not-this-one"):
        reply = await broker.request({}, SUBJECT, timeout=1)
    assert await reply.decode() == {"correlation_id": None}
