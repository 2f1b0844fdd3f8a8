"""One trace links the code that records an event, the relay, the consuming handler and its SQL."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fog_shared.bus.consumer import EventConsumer
from fog_shared.bus.topology import ConsumerSpec
from fog_shared.pg import outbox
from fog_shared.pg.outbox import OutboxRelay
from fog_shared.telemetry import configure_tracing, tracer
from fog_shared.testing.plugin import ServiceDb
from fog_shared.testing.waiting import wait_until

from .conftest import AUTH_STREAM, Effects, user


async def test_one_trace_id_from_publisher_to_handler_sql(
    producer_db: ServiceDb,
    consumer_pool: asyncpg.Pool,
    streams: JetStreamContext,
    consumer_spec: ConsumerSpec,
    effects: Effects,
    nats_client: NatsClient,
) -> None:
    exporter = InMemorySpanExporter()
    configure_tracing("test", extra_processor=SimpleSpanProcessor(exporter))

    conn = await asyncpg.connect(producer_db.dsn)
    with tracer("test").start_as_current_span("POST /v1/users") as request_span:
        async with conn.transaction():
            await outbox.record(conn, user(1), source="fog/auth")
    await conn.close()
    trace_id = request_span.get_span_context().trace_id

    relay_conn = await asyncpg.connect(producer_db.dsn)
    await OutboxRelay(dsn=producer_db.dsn, schema=producer_db.schema, nc=nats_client, stream=AUTH_STREAM).drain(
        relay_conn
    )
    await relay_conn.close()
    engine = EventConsumer(spec=consumer_spec, handler=effects.handle, pool=consumer_pool, js=streams)
    task = asyncio.create_task(engine.run())
    try:
        await wait_until(lambda: _handled(consumer_pool), what="the event handled")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    by_name = {s.name: s for s in spans}
    handle = by_name[f"handle {user(1).TYPE.name}"]
    assert handle.kind == SpanKind.CONSUMER
    # The consumer's span is a child of the code that recorded the event, across the relay.
    assert handle.parent is not None
    assert handle.parent.span_id == request_span.get_span_context().span_id
    handler_sql = [s for s in spans if s.parent is not None and s.parent.span_id == handle.context.span_id]
    statements = " ".join(str((s.attributes or {}).get("db.statement", s.name)) for s in handler_sql)
    assert "INSERT INTO effects" in statements, f"no SQL span under the handler: {[s.name for s in spans]}"
    recorded_sql = [
        s for s in spans if s.parent is not None and s.parent.span_id == request_span.get_span_context().span_id
    ]
    assert any("INSERT INTO outbox" in str((s.attributes or {}).get("db.statement", "")) for s in recorded_sql)


async def _handled(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT count(*) FROM effects"))
