"""Request/reply through the shared broker: answers, and a clear failure when nobody does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from faststream.nats import NatsBroker

from fog_shared.bus.broker import make_broker, queue_group
from fog_shared.bus.rpc import ServiceUnavailable, request
from fog_shared.testing.plugin import Servers


@pytest.fixture
async def broker(fog_servers: Servers) -> AsyncIterator[NatsBroker]:
    broker = make_broker(fog_servers.nats_url, "test")

    @broker.subscriber("fog.qry.test.echo.v1", queue=queue_group("test"))
    async def echo(body: dict[str, str]) -> dict[str, str]:
        return {"echo": body["say"]}

    @broker.subscriber("fog.qry.test.slow.v1", queue=queue_group("test"))
    async def slow(body: dict[str, str]) -> dict[str, str]:
        await asyncio.sleep(5)  # a service that is too slow, not test synchronisation
        return body

    await broker.start()
    yield broker
    await broker.stop()


async def test_request_gets_the_reply(broker: NatsBroker) -> None:
    assert await request(broker, "fog.qry.test.echo.v1", {"say": "hi"}, timeout=2) == {"echo": "hi"}


async def test_no_responders_fails_at_once_not_after_the_timeout(broker: NatsBroker) -> None:
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match="no service is answering"):
        await request(broker, "fog.qry.nobody.status.v1", {}, timeout=30)
    # Well under the 30 s timeout: the server answered "no responders" right away.
    assert time.monotonic() - started < 10


async def test_a_slow_service_fails_with_the_timeout(broker: NatsBroker) -> None:
    with pytest.raises(ServiceUnavailable, match=r"no answer within 0.3s"):
        await request(broker, "fog.qry.test.slow.v1", {}, timeout=0.3)
