"""The consumer engine: durable pull consumer → inbox → handler, with backoff and dead-letter.

Events are fetched in batches and handled in one Postgres transaction per batch, each event in
its own savepoint, so one commit covers many events while one failing event rolls back alone.
Per event:

* headers that are not a CloudEvent, an unknown type or a body that fails validation go to the
  dead-letter stream at once, with the reason (retrying cannot fix them);
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
from fog_shared.pg.inbox import claim
from fog_shared.telemetry.context import use_correlation_id
from fog_shared.telemetry.metrics import DEAD_LETTERED, EVENT_HANDLE_SECONDS, EVENTS_HANDLED
from fog_shared.telemetry.tracing import extract_context, tracer

log = logging.getLogger(__name__)

#: A handler changes state through ``conn`` (already in a transaction) and may record events.
Handler = Callable[[asyncpg.Connection, Event, Envelope], Awaitable[None]]

H_DLQ_REASON = "fog-dlq-reason"
H_DLQ_ERROR = "fog-dlq-error"
H_DLQ_CONSUMER = "fog-dlq-consumer"
H_DLQ_STREAM = "fog-dlq-stream"
H_DLQ_SEQUENCE = "fog-dlq-stream-seq"
H_DLQ_SUBJECT = "fog-dlq-subject"
H_DLQ_DELIVERIES = "fog-dlq-deliveries"

REASON_INVALID = "invalid"
REASON_FAILED = "handler_failed"


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
        handler: Handler,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        dead_letter_stream: str = "DLQ",
        batch_size: int = 200,
        fetch_timeout_s: float = 1.0,
        catalogue: Catalogue = CATALOGUE,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.pool = pool
        self.js = js
        self.dead_letter_stream = dead_letter_stream
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self.catalogue = catalogue

    async def run(self) -> None:
        """Consume until cancelled; survives NATS and Postgres outages by retrying."""
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
                item = await self._decode_or_dead_letter(msg)
                if item is not None:
                    decoded.append(item)
            if decoded:
                await self._handle_decoded(decoded)

    async def _decode_or_dead_letter(self, msg: Msg) -> _Decoded | None:
        try:
            envelope = Envelope.from_headers(msg.headers)
            event = self.catalogue.decode(envelope.type, msg.data)
        except (EnvelopeError, EventDecodeError) as exc:
            await self._dead_letter(msg, REASON_INVALID, str(exc))
            return None
        return _Decoded(msg, envelope, event)

    async def _handle_decoded(self, batch: list[_Decoded]) -> None:
        failures: list[tuple[_Decoded, BaseException]] = []
        handled: list[_Decoded] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                for item in batch:
                    error = await self._handle_one(conn, item)
                    if error is None:
                        handled.append(item)
                    else:
                        failures.append((item, error))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The commit (or the connection) failed: nothing of this batch happened. Retry it all.
            # Not the events' fault (Postgres is away): back off, and do not count it towards
            # dead-letter, or an outage would park healthy events.
            log.warning("batch transaction failed", exc_info=exc, extra={"consumer": self.spec.durable})
            for item in batch:
                await item.msg.nak(delay=self.spec.backoff_for(item.msg.metadata.num_delivered or 1))
            return
        for item in handled:
            await item.msg.ack()
        for item, error in failures:
            await self._retry_or_dead_letter(item.msg, error)

    async def _handle_one(self, conn: asyncpg.Connection, item: _Decoded) -> BaseException | None:
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
            try:
                async with conn.transaction():  # a savepoint: this event's effects stand or fall alone
                    if not await claim(conn, self.spec.durable, envelope.id):
                        EVENTS_HANDLED.labels(self.spec.durable, "duplicate").inc()
                        return None
                    await self.handler(conn, item.event, envelope)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR)
                return exc
        EVENTS_HANDLED.labels(self.spec.durable, "ok").inc()
        return None

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
        headers = dict(msg.headers or {})
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
