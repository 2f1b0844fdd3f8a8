"""The transactional outbox: events commit with the state change that causes them.

:func:`record` inserts the event in the caller's transaction; a statement trigger NOTIFYs the
relay, which Postgres delivers only at commit. :class:`OutboxRelay` publishes unpublished rows to
JetStream in id order and in batches, waits for every ack, and only then marks the rows
published. A crash between ack and mark re-publishes with the same ``Nats-Msg-Id``: JetStream's
duplicate window drops it, and the consumers' inbox catches anything past the window.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck

from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.recorder import ContextRecorder
from fog_shared.subjects import event_type_of
from fog_shared.telemetry import context as log_context
from fog_shared.telemetry.metrics import OUTBOX_PENDING, OUTBOX_PUBLISH_ERRORS, OUTBOX_PUBLISHED
from fog_shared.telemetry.tracing import current_traceparent

log = logging.getLogger(__name__)


_recorded_ids = ContextRecorder[str]("outbox_recorded_ids")


def recording_ids() -> contextlib.AbstractContextManager[list[str]]:
    """The ids of the events :func:`record` and :func:`record_many` write in this context, in
    order: for a fast path that names the events it makes needless (BitChat's timeline push)."""
    return _recorded_ids.recording()


def notify_channel(schema: str) -> str:
    """The channel the ``outbox_notify`` trigger (migration 0002) signals on commit."""
    return f"fog_outbox_{schema}"


async def record(
    conn: asyncpg.Connection,
    event: Event,
    *,
    source: str,
    caused_by: Envelope | None = None,
    correlation_id: str | None = None,
    causation_id: str | None = None,
    event_id: str | None = None,
) -> Envelope:
    """Write ``event`` to the outbox inside the caller's transaction; returns its envelope.

    The envelope carries the current trace context, so the consumer's span joins this trace,
    and the correlation id of the request (or of ``caused_by``, whose id becomes the causation).
    Without ``caused_by``, ``correlation_id`` and ``causation_id`` say which request and which
    earlier event this one follows from (an aggregate's next event after its previous one).
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
            causation_id=causation_id,
            id=event_id,
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
    _recorded_ids.note([envelope.id])
    return envelope


async def record_many(
    conn: asyncpg.Connection,
    events: Sequence[Event],
    *,
    source: str,
    causes: Sequence[tuple[str | None, str | None]] | None = None,
    ids: Sequence[str] | None = None,
    traces: Sequence[tuple[str | None, str | None]] | None = None,
) -> list[Envelope]:
    """:func:`record` for a whole batch in one round trip: the hot paths (placements) use it.

    ``causes`` gives each event its (correlation id, causation id); by default every event gets
    the current correlation id and no causation. ``ids`` are the events' ids, when the caller
    needs to know them before (to store them with the state they describe). ``traces`` gives
    each event its (traceparent, tracestate), when the events of one batch come from different
    requests (group-committed sends); by default all carry the current trace.
    """
    if not events:
        return []
    envelopes, rows = _rows(events, source=source, causes=causes, ids=ids, traces=traces)
    await conn.executemany(
        "INSERT INTO outbox (event_id, subject, headers, body) VALUES ($1, $2, $3::text::jsonb, $4)", rows
    )
    _recorded_ids.note(envelope.id for envelope in envelopes)
    return envelopes


async def record_with(
    conn: asyncpg.Connection,
    change: str,
    args: Sequence[object],
    events: Sequence[Event],
    *,
    source: str,
    causes: Sequence[tuple[str | None, str | None]] | None = None,
    ids: Sequence[str] | None = None,
) -> list[asyncpg.Record]:
    """One statement that makes a state change and records its events: one round trip, atomic on its own.

    ``change`` is a data-modifying statement with ``RETURNING`` (its parameters ``$1``.. are ``args``);
    its rows are returned. The events (as :func:`record_many` takes them) are inserted by the same
    statement, in order, and only if ``change`` returned a row: an ``INSERT .. ON CONFLICT DO NOTHING``
    that inserted nothing records nothing. Outside a transaction the statement is one, so a use case
    whose whole write is one statement saves the BEGIN, a statement and the COMMIT.
    """
    envelopes, rows = _rows(events, source=source, causes=causes, ids=ids, traces=None)
    n = len(args)
    sql = (
        f"WITH change AS ({change}), recorded AS (INSERT INTO outbox (event_id, subject, headers, body)"
        " SELECT e.id, e.subject, e.headers::jsonb, e.body"
        f" FROM unnest(${n + 1}::uuid[], ${n + 2}::text[], ${n + 3}::text[], ${n + 4}::bytea[])"
        " WITH ORDINALITY AS e(id, subject, headers, body, position)"
        " WHERE EXISTS (SELECT FROM change) ORDER BY e.position)"
        " SELECT * FROM change"
    )
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[], [], [], []]
    changed = list(await conn.fetch(sql, *args, *columns))
    if changed:
        _recorded_ids.note(envelope.id for envelope in envelopes)
    return changed


def _rows(
    events: Sequence[Event],
    *,
    source: str,
    causes: Sequence[tuple[str | None, str | None]] | None,
    ids: Sequence[str] | None,
    traces: Sequence[tuple[str | None, str | None]] | None,
) -> tuple[list[Envelope], list[tuple[uuid.UUID, str, str, bytes]]]:
    current = current_traceparent()
    rows, envelopes = [], []
    for index, event in enumerate(events):
        correlation, causation = causes[index] if causes is not None else (None, None)
        envelope = Envelope.new(
            type=event.TYPE.name, source=source, subject=event.aggregate_id,
            correlation_id=correlation or log_context.correlation_id(), causation_id=causation,
            id=ids[index] if ids is not None else None,
        )  # fmt: skip
        traceparent, tracestate = traces[index] if traces is not None else current
        if traceparent:
            envelope = envelope.with_trace(traceparent, tracestate)
        envelopes.append(envelope)
        rows.append((uuid.UUID(envelope.id), event.TYPE.subject, json.dumps(envelope.to_headers()), event.to_json()))
    return envelopes, rows


class BatchRejected(RuntimeError):
    """The stream refused an atomic batch as a whole; nothing of it was stored."""


#: the server's ceiling on messages in one atomic batch (jetstream.limits.batch.max_msgs)
MAX_ATOMIC_BATCH = 1000


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
        nc: NatsClient,
        stream: str,
        batch_size: int = 500,
        poll_interval_s: float = 1.0,
        ack_timeout_s: float = 5.0,
    ) -> None:
        self.dsn = dsn
        self.schema = schema
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.stream = stream
        self.batch_size = min(batch_size, MAX_ATOMIC_BATCH)
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
        # Its marks need no fsync of their own: a mark lost with a crash means a re-publish under the same
        # Nats-Msg-Id, which the duplicate window (and past it, the consumers' inbox) absorbs, as after a
        # crash between ack and mark. Each batch then costs the disk nothing here; the stream stores the events.
        settings = {"search_path": self.schema, "synchronous_commit": "off"}
        conn: asyncpg.Connection = await asyncpg.connect(self.dsn, server_settings=settings)
        try:
            await self._become_leader(conn)
            await conn.add_listener(notify_channel(self.schema), self._on_notify)
            while True:
                self._wake.clear()
                await self.drain(conn)
                # The poll fallback: a missed NOTIFY delays an event, never loses it. asyncio.timeout,
                # not wait_for: on 3.11 wait_for swallows a cancellation that meets a NOTIFY, and
                # the relay would then outlive its service's stop.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval_s):
                        await self._wake.wait()
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
                self._count_published(batch[: len(acked)])  # acked: a prefix of the batch
                total += len(acked)
            if len(acked) < len(batch):
                return total  # NATS is unhappy: back off until the next wake-up or poll

    async def _publish(self, batch: list[_Row]) -> list[int]:
        """Publish a batch; returns the ids the stream acknowledged, in order.

        First as one atomic batch (all stored or none, one disk sync for the lot: with
        ``sync_interval: always`` that is ~10x the rate of single publishes). A batch the server
        refuses (e.g. it holds a ``Nats-Msg-Id`` already stored, after a relay crash) goes
        message by message, where the duplicate window drops the copies one by one.

        Each event keeps the ``traceparent`` recorded with it, so its consumer's span is a child
        of the code that recorded it, however late the relay publishes.
        """
        try:
            await self._publish_atomic(batch)
            return [row.id for row in batch]
        except BatchRejected as rejected:
            log.info(
                "atomic batch refused; publishing one by one", extra={"schema": self.schema, "reason": str(rejected)}
            )
        except Exception:
            OUTBOX_PUBLISH_ERRORS.labels(self.schema).inc()
            log.warning("outbox batch publish failed", exc_info=True, extra={"schema": self.schema})
            return []
        return await self._publish_each(batch)

    async def _publish_atomic(self, batch: list[_Row]) -> None:
        batch_id = uuid.uuid4().hex
        last = len(batch)
        for sequence, row in enumerate(batch, start=1):
            headers = row.headers | {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(sequence)}
            if sequence < last:
                await self.nc.publish(row.subject, row.body, headers=headers)
                continue
            headers["Nats-Batch-Commit"] = "1"
            reply = await self.nc.request(row.subject, row.body, headers=headers, timeout=self.ack_timeout_s)
            ack = json.loads(reply.data or b"{}")
            if "error" in ack:
                raise BatchRejected(ack["error"].get("description", str(ack["error"])))
            if ack.get("stream") != self.stream or ack.get("count") != last:
                raise BatchRejected(f"unexpected batch ack {ack}")

    async def _publish_each(self, batch: list[_Row]) -> list[int]:
        """Pipelined single publishes; the ids acked, in order, up to the first failure."""
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for row in batch:
                futures.append(
                    await self.js.publish_async(row.subject, row.body, stream=self.stream, headers=row.headers)
                )
        except Exception:
            OUTBOX_PUBLISH_ERRORS.labels(self.schema).inc()
            log.warning("outbox publish failed", exc_info=True, extra={"schema": self.schema})
        if futures:
            await asyncio.wait(futures, timeout=self.ack_timeout_s)
        acked: list[int] = []
        for row, future in zip(batch, futures, strict=False):
            if not future.done() or future.cancelled() or future.exception() is not None:
                OUTBOX_PUBLISH_ERRORS.labels(self.schema).inc()
                log.warning("outbox publish not acked", extra={"schema": self.schema, "subject": row.subject})
                break
            acked.append(row.id)
        for future in futures[len(acked) :]:
            future.cancel()
        return acked

    async def _mark_published(self, conn: asyncpg.Connection, ids: list[int]) -> None:
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)
        self.published += len(ids)

    def _count_published(self, rows: list[_Row]) -> None:
        for subject, count in collections.Counter(row.subject for row in rows).items():
            OUTBOX_PUBLISHED.labels(self.schema, event_type_of(subject)).inc(count)  # recorded from Event.TYPE
