"""Core NATS pushes on the raw client: the receiver continues the sender's trace and correlation, and drops bad ones."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from pydantic import BaseModel, ConfigDict

from fog_shared.bus import push
from fog_shared.telemetry import configure_tracing, tracer
from fog_shared.telemetry.context import correlation_id, use_correlation_id
from fog_shared.testing.waiting import wait_until

SUBJECT = "fog.test.push.v1"


class Ping(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as Fog's contracts are

    n: int


def handled(outcome: str) -> float:
    return REGISTRY.get_sample_value("fog_pushes_total", {"subject": SUBJECT, "outcome": outcome}) or 0.0


async def test_a_push_arrives_in_its_senders_trace_and_correlation(nats_client: NatsClient) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("test", extra_processor=SimpleSpanProcessor(exporter))
    seen: asyncio.Queue[tuple[int, str | None, str]] = asyncio.Queue()

    async def on_ping(ping: Ping, _: dict[str, object]) -> None:
        trace_id = format(tracer().start_span("probe").get_span_context().trace_id, "032x")
        await seen.put((ping.n, correlation_id(), trace_id))

    await push.subscribe(nats_client, SUBJECT, Ping, on_ping)
    with tracer("test").start_as_current_span("POST /v1/jobs") as request, use_correlation_id("req-1"):
        await push.push(nats_client, SUBJECT, Ping(n=1).model_dump_json().encode())
    n, correlation, trace_id = await asyncio.wait_for(seen.get(), timeout=5)

    assert (n, correlation) == (1, "req-1")
    assert trace_id == format(request.get_span_context().trace_id, "032x")

    def receive_spans() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.name == f"{SUBJECT} receive"]

    async def receive_span_ended() -> bool:  # it ends once the handler returns, just after the queue saw it
        return bool(receive_spans())

    await wait_until(receive_span_ended, timeout=5, what="the receive span to end")
    parent = receive_spans()[0].parent
    assert parent is not None
    assert parent.span_id == request.get_span_context().span_id


async def test_a_bad_push_is_dropped_and_the_next_one_still_arrives(nats_client: NatsClient) -> None:
    seen: asyncio.Queue[int] = asyncio.Queue()

    async def on_ping(ping: Ping, _: dict[str, object]) -> None:
        await seen.put(ping.n)

    invalid_before = handled("invalid")
    await push.subscribe(nats_client, SUBJECT, Ping, on_ping)
    await push.push(nats_client, SUBJECT, b'{"n": "not a number"}')
    await push.push(nats_client, SUBJECT, b"not json at all")
    await push.push(nats_client, SUBJECT, Ping(n=2).model_dump_json().encode())

    assert await asyncio.wait_for(seen.get(), timeout=5) == 2
    assert handled("invalid") == invalid_before + 2


async def test_a_newer_senders_push_is_read_without_what_the_receiver_does_not_know_and_handed_on_whole(
    nats_client: NatsClient,
) -> None:
    """During a rollout the sender may be newer: its push is still read, and what is relayed keeps its fields."""
    seen: asyncio.Queue[tuple[int, dict[str, object]]] = asyncio.Queue()

    async def on_ping(ping: Ping, sent: dict[str, object]) -> None:
        await seen.put((ping.n, sent))

    await push.subscribe(nats_client, SUBJECT, Ping, on_ping)
    await push.push(nats_client, SUBJECT, b'{"n": 3, "added_later": {"x": 1}}')
    assert await asyncio.wait_for(seen.get(), timeout=5) == (3, {"n": 3, "added_later": {"x": 1}})
