"""The transactional outbox: events commit with the state change that causes them.

:func:`record` inserts the event in the caller's transaction and NOTIFYs the relay (Postgres
delivers the notification only at commit). :class:`OutboxRelay` publishes unpublished rows to
JetStream in id order and in batches, waits for every ack, and only then marks the rows
published. A crash between ack and mark re-publishes with the same ``Nats-Msg-Id``: JetStream's
duplicate window drops it, and the consumers' inbox catches anything past the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass

import asyncpg
from nats.js import JetStreamContext
from opentelemetry import trace

from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.telemetry import context as log_context
from fog_shared.telemetry.metrics import OUTBOX_PENDING, OUTBOX_PUBLISH_ERRORS, OUTBOX_PUBLISHED
from fog_shared.telemetry.tracing import current_traceparent, extract_context, tracer

log = logging.getLogger(__name__)


def notify_channel(schema: str) -> str:
    return f"fog_outbox_{schema}"


async def record(
    conn: asyncpg.Connection,
    event: Event,
    *,
    source: str,
    schema: str,
    caused_by: Envelope | None = None,
    correlation_id: str | None = None,
) -> Envelope:
    """Write ``event`` to the outbox inside the caller's transaction; returns its envelope.

    The envelope carries the current trace context, so the consumer's span joins this trace,
    and the correlation id of the request (or of ``caused_by``, whose id becomes the causation).
    """
    aggregate = event.aggregate_id
    if caused_by is not None:
        envelope = caused_by.caused(type=event.TYPE.name, source=source, subject=aggregate)
    else:
        envelope = Envelope.new(
            type=event.TYPE.name,
            source=source,
            subject=aggregate,
            correlation_id=correlation_id or log_context.correlation_id(),
        )
    traceparent, tracestate = current_traceparent()
    if traceparent:
        envelope = envelope.with_trace(traceparent, tracestate)
    await conn.execute(
        # Text cast to jsonb: correct whether or not the connection has a jsonb codec installed.
        "INSERT INTO outbox (event_id, subject, headers, body) VALUES ($1, $2, $3::text::jsonb, $4)",
        uuid.UUID(envelope.id),
        event.TYPE.subject,
        json.dumps(envelope.to_headers()),
        event.to_json(),
    )
    await conn.execute("SELECT pg_notify($1, '')", notify_channel(schema))
    return envelope


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    subject: str
    headers: dict[str, str]
    body: bytes


class OutboxRelay:
    """Publishes one schema's outbox to its JetStream stream. One active relay per schema."""

    def __init__(
        self,
        *,
        dsn: str,
        schema: str,
        js: JetStreamContext,
        stream: str,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        ack_timeout_s: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.js = js
        self.stream = stream
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.ack_timeout_s = ack_timeout_s
        self._wake = asyncio.Event()
        self.published = 0

    async def run(self) -> None:
        """Relay until cancelled. Reconnects to Postgres and retries NATS on failure."""
        while True:
            try:
                await self._run_connected()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; restarting", extra={"schema": self.schema})
                await asyncio.sleep(self.poll_interval_s)

    async def _run_connected(self) -> None:
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            await self._become_leader(conn)
            await conn.add_listener(notify_channel(self.schema), self._on_notify)
            while True:
                self._wake.clear()
                await self.drain(conn)
                # The poll fallback: a missed NOTIFY delays an event, never loses it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
        finally:
            await conn.close(timeout=2)

    async def _become_leader(self, conn: asyncpg.Connection) -> None:
        # A session advisory lock: replicas of a service stand by while one relays, which keeps
        # the stream in outbox order. The lock goes with the connection if this process dies.
        lock = "SELECT pg_try_advisory_lock(hashtext('fog.outbox.' || $1))"
        while not await conn.fetchval(lock, self.schema):
            await asyncio.sleep(self.poll_interval_s)

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def drain(self, conn: asyncpg.Connection) -> int:
        """Publish until the outbox is empty or NATS fails; returns how many were published."""
        total = 0
        while True:
            rows = await conn.fetch(
                "SELECT id, subject, headers::text AS headers, body FROM outbox"
                " WHERE published_at IS NULL ORDER BY id LIMIT $1",
                self.batch_size,
            )
            OUTBOX_PENDING.labels(self.schema).set(len(rows))
            if not rows:
                return total
            batch = [_Row(r["id"], r["subject"], json.loads(r["headers"]), r["body"]) for r in rows]
            acked = await self._publish(batch)
            if acked:
                await self._mark_published(conn, acked)
                total += len(acked)
            if len(acked) < len(batch):
                return total  # NATS is unhappy: back off until the next wake-up or poll

    async def _publish(self, batch: list[_Row]) -> list[int]:
        """Publish a batch pipelined; returns the ids acked, in order, up to the first failure."""
        futures = []
        try:
            for row in batch:
                with tracer("fog.outbox").start_as_current_span(
                    f"publish {row.subject}",
                    context=extract_context(row.headers),
                    kind=trace.SpanKind.PRODUCER,
                ):
                    headers = dict(row.headers)
                    # The publish span is the consumer's parent: the chain reads request → publish → handle.
                    traceparent, _ = current_traceparent()
                    if traceparent:
                        headers["traceparent"] = traceparent
                    futures.append(
                        await self.js.publish_async(row.subject, row.body, stream=self.stream, headers=headers)
                    )
        except Exception:
            OUTBOX_PUBLISH_ERRORS.labels(self.schema).inc()
            log.warning("outbox publish failed", exc_info=True, extra={"schema": self.schema})
        acked: list[int] = []
        for row, future in zip(batch, futures, strict=False):
            try:
                await asyncio.wait_for(future, timeout=self.ack_timeout_s)
            except Exception:
                OUTBOX_PUBLISH_ERRORS.labels(self.schema).inc()
                log.warning("outbox publish not acked", exc_info=True, extra={"schema": self.schema})
                break
            acked.append(row.id)
        for future in futures[len(acked) :]:
            future.cancel()
        return acked

    async def _mark_published(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)
        OUTBOX_PUBLISHED.labels(self.schema).inc(len(ids))
        self.published += len(ids)
