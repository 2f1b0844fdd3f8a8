"""The consumer engine: durable pull consumer → inbox → handler, with backoff and dead-letter.

Events are fetched in batches and handled in one Postgres transaction per batch: one inbox
statement for the batch, then each handler on the same connection. If any handler raises, that
transaction is rolled back and the batch is run again with a savepoint per event, so one failing
event rolls back alone while the others commit. Per event:

* headers that are not a CloudEvent, an unknown type or a body that fails validation go to the
  dead-letter stream at once, with the reason (retrying cannot fix them);
* a re-driven dead letter meant for another consumer is acked and skipped;
* an event already in the inbox is acked and skipped (redelivery, or a re-publish past the
  duplicate window);
* a handler that raises gets its savepoint rolled back and the event NAKed with the consumer's
  backoff; on its ``max_deliver``-th failure it goes to dead-letter with the error.

Acks go out only after the commit, so a crash loses nothing: the event is redelivered, and the
inbox makes its effect happen once.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from opentelemetry import trace

from fog_shared.bus.publish import publish_raw
from fog_shared.bus.topology import ConsumerSpec
from fog_shared.envelope import NATS_MSG_ID, Envelope, EnvelopeError
from fog_shared.events import CATALOGUE, Catalogue, Event, EventDecodeError
from fog_shared.pg.inbox import claim, claim_many
from fog_shared.telemetry.context import use_correlation_id
from fog_shared.telemetry.metrics import DEAD_LETTERED, EVENT_HANDLE_SECONDS, EVENTS_HANDLED
from fog_shared.telemetry.tracing import extract_context, tracer

log = logging.getLogger(__name__)

#: A handler changes state through ``conn`` (already in a transaction) and may record events.
#: It may run more than once per delivery (a rolled-back first try), so its only effects are
#: the ones it makes through ``conn``.
Handler = Callable[[asyncpg.Connection, Event, Envelope], Awaitable[None]]
#: A batch handler does the same for many events at once (e.g. one ``executemany``); after a
#: failure the engine calls it with one event at a time to find the culprit.
BatchHandler = Callable[[asyncpg.Connection, list[tuple[Event, Envelope]]], Awaitable[None]]

H_DLQ_REASON = "fog-dlq-reason"
H_DLQ_ERROR = "fog-dlq-error"
H_DLQ_CONSUMER = "fog-dlq-consumer"
H_DLQ_STREAM = "fog-dlq-stream"
H_DLQ_SEQUENCE = "fog-dlq-stream-seq"
H_DLQ_SUBJECT = "fog-dlq-subject"
H_DLQ_DELIVERIES = "fog-dlq-deliveries"
#: a re-driven copy of a dead letter names the entry it came from (``DLQ:<seq>``) and the one
#: consumer it is for: every other consumer, having handled the original, acks it unseen
H_REDRIVE_OF = "fog-redrive-of"
H_REDRIVE_FOR = "fog-redrive-for"

REASON_INVALID = "invalid"
REASON_FAILED = "handler_failed"


class _HandlerFailed(Exception):
    """A handler raised: undoes the transaction (or savepoint) it ran in."""

    def __init__(self, item: _Decoded | None, error: BaseException) -> None:
        super().__init__(str(error))
        self.item = item
        self.error = error


@dataclass(slots=True)
class _Decoded:
    msg: Msg
    envelope: Envelope
    event: Event


class EventConsumer:
    def __init__(
        self,
        *,
        spec: ConsumerSpec,
        handler: Handler | None = None,
        batch_handler: BatchHandler | None = None,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        dead_letter_stream: str = "DLQ",
        batch_size: int = 200,
        fetch_timeout_s: float = 1.0,
        catalogue: Catalogue = CATALOGUE,
        workers: int = 1,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise ValueError("give exactly one of handler and batch_handler")
        self.spec = spec
        self.handler = handler
        self.batch_handler = batch_handler
        self.pool = pool
        self.js = js
        self.dead_letter_stream = dead_letter_stream
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self.catalogue = catalogue
        #: concurrent batches; 1 keeps the stream's order, more trade order for throughput
        self.workers = workers

    async def run(self) -> None:
        """Consume until cancelled; survives NATS and Postgres outages by retrying."""
        if self.workers == 1:
            await self._work()
            return
        async with asyncio.TaskGroup() as group:
            for _ in range(self.workers):
                group.create_task(self._work())

    async def _work(self) -> None:
        """One fetch-handle-ack loop on its own pull subscription to the shared durable."""
        subscription = await self.js.pull_subscribe_bind(durable=self.spec.durable, stream=self.spec.stream)
        try:
            while True:
                try:
                    messages = await subscription.fetch(self.batch_size, timeout=self.fetch_timeout_s)
                except (TimeoutError, NatsTimeoutError):
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.warning("fetch failed", exc_info=True, extra={"consumer": self.spec.durable})
                    await asyncio.sleep(self.fetch_timeout_s)
                    continue
                await self.handle_batch(messages)
        finally:
            await subscription.unsubscribe()

    async def handle_batch(self, messages: list[Msg]) -> None:
        with EVENT_HANDLE_SECONDS.labels(self.spec.durable).time():
            decoded = []
            for msg in messages:
                if self._redriven_for_another(msg):
                    await msg.ack()
                    EVENTS_HANDLED.labels(self.spec.durable, "duplicate").inc()
                    continue
                item = await self._decode_or_dead_letter(msg)
                if item is not None:
                    decoded.append(item)
            if decoded:
                await self._handle_decoded(decoded)

    def _redriven_for_another(self, msg: Msg) -> bool:
        """A re-driven dead letter is for the consumer that parked it; the others handled it already."""
        meant_for = (msg.headers or {}).get(H_REDRIVE_FOR)
        return meant_for is not None and meant_for != self.spec.durable

    async def _decode_or_dead_letter(self, msg: Msg) -> _Decoded | None:
        try:
            envelope = Envelope.from_headers(msg.headers)
            event = self.catalogue.decode(envelope.type, msg.data)
        except (EnvelopeError, EventDecodeError) as exc:
            await self._dead_letter(msg, REASON_INVALID, str(exc))
            return None
        return _Decoded(msg, envelope, event)

    async def _handle_decoded(self, batch: list[_Decoded]) -> None:
        try:
            try:
                await self._handle_together(batch)
                failures: list[tuple[_Decoded, BaseException]] = []
            except _HandlerFailed as failed:
                failures = await self._handle_separately(batch, failed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The transaction itself failed (Postgres is away): nothing of this batch happened.
            # Back off, and do not count it towards dead-letter, or an outage would park
            # healthy events.
            log.warning("batch transaction failed", exc_info=exc, extra={"consumer": self.spec.durable})
            for item in batch:
                await item.msg.nak(delay=self.spec.backoff_for(item.msg.metadata.num_delivered or 1))
            return
        failed_ids = {id(item) for item, _ in failures}
        for item in batch:
            if id(item) not in failed_ids:
                await item.msg.ack()
        for item, error in failures:
            await self._retry_or_dead_letter(item.msg, error)

    async def _handle_together(self, batch: list[_Decoded]) -> None:
        """The fast path: one inbox statement and no savepoints; any handler error undoes it all."""
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await claim_many(conn, self.spec.durable, [item.envelope.id for item in batch])
            todo = []
            for item in batch:
                if item.envelope.id not in fresh:
                    EVENTS_HANDLED.labels(self.spec.durable, "duplicate").inc()
                    continue
                fresh.discard(item.envelope.id)  # the same event twice in one batch runs once
                todo.append(item)
            if self.batch_handler is not None:
                error = await self._run_batch_handler(conn, todo)
                if error is not None:
                    # With one event in the batch the culprit is known; otherwise find it.
                    raise _HandlerFailed(todo[0] if len(todo) == 1 else None, error)
            for item in todo if self.batch_handler is None else ():
                error = await self._run_handler(conn, item)
                if error is not None:
                    raise _HandlerFailed(item, error)
        EVENTS_HANDLED.labels(self.spec.durable, "ok").inc(len(todo))

    async def _handle_separately(
        self, batch: list[_Decoded], known: _HandlerFailed
    ) -> list[tuple[_Decoded, BaseException]]:
        """After a failure: each event in its own savepoint, so the others still commit.

        The event that already failed is not run again: one delivery, one handler run for it.
        """
        failures: list[tuple[_Decoded, BaseException]] = [] if known.item is None else [(known.item, known.error)]
        async with self.pool.acquire() as conn, conn.transaction():
            for item in batch:
                if item is known.item:
                    continue
                try:
                    async with conn.transaction():  # a savepoint: this event's effects stand or fall alone
                        if not await claim(conn, self.spec.durable, item.envelope.id):
                            EVENTS_HANDLED.labels(self.spec.durable, "duplicate").inc()
                            continue
                        error = await self._run_handler(conn, item)
                        if error is not None:
                            raise _HandlerFailed(item, error)
                except _HandlerFailed as failed:
                    failures.append((item, failed.error))
                    continue
                EVENTS_HANDLED.labels(self.spec.durable, "ok").inc()
        return failures

    async def _run_handler(self, conn: asyncpg.Connection, item: _Decoded) -> BaseException | None:
        """Run the handler in the event's trace and correlation; returns what it raised."""
        envelope = item.envelope
        with (
            use_correlation_id(envelope.correlation_id),
            tracer("fog.consumer").start_as_current_span(
                f"handle {envelope.type}",
                context=extract_context(item.msg.headers),
                kind=trace.SpanKind.CONSUMER,
                attributes={"messaging.consumer.group.name": self.spec.durable, "messaging.message.id": envelope.id},
            ) as span,
        ):
            if self.handler is not None:
                return await _failure_of(self.handler(conn, item.event, envelope), span)
            assert self.batch_handler is not None
            return await _failure_of(self.batch_handler(conn, [(item.event, envelope)]), span)

    async def _run_batch_handler(self, conn: asyncpg.Connection, items: list[_Decoded]) -> BaseException | None:
        """One span for the batch, linked to every event's trace; returns what the handler raised."""
        if not items:
            return None
        links = [trace.Link(trace.get_current_span(extract_context(i.msg.headers)).get_span_context()) for i in items]
        with tracer("fog.consumer").start_as_current_span(
            f"handle batch {self.spec.durable}",
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "messaging.consumer.group.name": self.spec.durable,
                "messaging.batch.message_count": len(items),
            },
        ) as span:
            assert self.batch_handler is not None
            return await _failure_of(self.batch_handler(conn, [(i.event, i.envelope) for i in items]), span)

    async def _retry_or_dead_letter(self, msg: Msg, error: BaseException) -> None:
        delivered = msg.metadata.num_delivered or 1
        if delivered >= self.spec.max_deliver:
            detail = "".join(traceback.format_exception_only(type(error), error)).strip()
            await self._dead_letter(msg, REASON_FAILED, detail)
            return
        EVENTS_HANDLED.labels(self.spec.durable, "retry").inc()
        log.warning(
            "event handler failed; will retry",
            extra={"consumer": self.spec.durable, "delivery": delivered, "error": repr(error)},
        )
        await msg.nak(delay=self.spec.backoff_for(delivered))

    async def _dead_letter(self, msg: Msg, reason: str, error: str) -> None:
        metadata = msg.metadata
        # Server control headers (atomic-batch markers, expectations) must not ride along: the
        # server would act on them again when the copy is published.
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-") or k == NATS_MSG_ID}
        original_id = headers.get(NATS_MSG_ID) or f"{metadata.stream}:{metadata.sequence.stream}"
        headers.update(
            {
                NATS_MSG_ID: f"{self.spec.durable}:{original_id}",
                H_DLQ_REASON: reason,
                H_DLQ_ERROR: error[:4000],
                H_DLQ_CONSUMER: self.spec.durable,
                H_DLQ_STREAM: metadata.stream,
                H_DLQ_SEQUENCE: str(metadata.sequence.stream),
                H_DLQ_SUBJECT: msg.subject,
                H_DLQ_DELIVERIES: str(metadata.num_delivered),
            }
        )
        try:
            await publish_raw(self.js, self.dead_letter_stream, self.spec.dead_letter_subject, msg.data, headers)
        except Exception:
            # Not parked yet: leave it to be redelivered rather than lose it.
            log.exception("dead-letter publish failed", extra={"consumer": self.spec.durable})
            await msg.nak(delay=self.spec.backoff_for(metadata.num_delivered or 1))
            return
        await msg.term()
        DEAD_LETTERED.labels(self.spec.durable, reason).inc()
        EVENTS_HANDLED.labels(self.spec.durable, "dead_lettered").inc()
        log.error(
            "event dead-lettered",
            extra={"consumer": self.spec.durable, "reason": reason, "error": error, "subject": msg.subject},
        )


async def _failure_of(call: Awaitable[None], span: trace.Span) -> BaseException | None:
    """Await a handler; what it raised (recorded on its span), or None."""
    try:
        await call
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        span.record_exception(exc)
        span.set_status(trace.StatusCode.ERROR)
        return exc
    return None
