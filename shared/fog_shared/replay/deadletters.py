"""Dead letters: the events a consumer parked, with its reason, and sending them back to it.

A re-drive publishes the parked event again on its original subject, into its original stream,
with its original CloudEvents id, marked for the one consumer that parked it
(:data:`~fog_shared.bus.consumer.H_REDRIVE_FOR`). That consumer has no inbox row for the id (its
attempts rolled back), so it handles the event; every other consumer acks the copy unseen, and
the gateway's live feeds ignore it: nothing else happens twice. The entry leaves the dead-letter
stream once the copy is stored. Should the fix not hold, the copy is parked again, as a new entry.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from fog_shared.bus import consumer as engine
from fog_shared.bus.publish import publish_raw
from fog_shared.bus.topology import DEAD_LETTER_STREAM, StreamSpec
from fog_shared.envelope import H_ID, NATS_MSG_ID
from fog_shared.replay.history import Page, Query, history
from fog_shared.replay.records import EventRecord, build_record
from fog_shared.subjects import DEAD_LETTER_PREFIX, dead_letter_subject


class NoSuchDeadLetter(LookupError):
    """No dead letter at that sequence (never was, or already re-driven)."""


class NotRedrivable(ValueError):
    """The entry lacks what a re-drive needs (its original subject and stream)."""


class Redriven(BaseModel):
    dead_letter_seq: int
    consumer: str
    stream: str
    subject: str
    #: where the copy is stored in the event stream
    seq: int


async def list_dead_letters(
    js: JetStreamContext, query: Query, *, consumer: str | None = None, stream: StreamSpec = DEAD_LETTER_STREAM
) -> Page:
    """A page of parked events, oldest first; of one consumer when ``consumer`` is given."""
    subject = dead_letter_subject(consumer) if consumer else f"{DEAD_LETTER_PREFIX}.>"
    return await history(js, replace(query, subject=subject), (stream,))


async def show(js: JetStreamContext, seq: int, *, stream: str = DEAD_LETTER_STREAM.name) -> EventRecord:
    try:
        raw = await js.get_msg(stream, seq=seq)
    except NotFoundError:
        raise NoSuchDeadLetter(f"no dead letter {seq} in {stream}") from None
    assert raw.subject is not None
    assert raw.time is not None
    return build_record(
        stream=stream, seq=seq, subject=raw.subject, stored_at=raw.time, headers=raw.headers or {}, body=raw.data or b""
    )


async def redrive(js: JetStreamContext, seq: int, *, stream: str = DEAD_LETTER_STREAM.name) -> Redriven:
    """Send dead letter ``seq`` back to the consumer that parked it; then drop the entry."""
    try:
        raw = await js.get_msg(stream, seq=seq)
    except NotFoundError:
        raise NoSuchDeadLetter(f"no dead letter {seq} in {stream}") from None
    headers = dict(raw.headers or {})
    consumer, subject = headers.get(engine.H_DLQ_CONSUMER), headers.get(engine.H_DLQ_SUBJECT)
    origin = headers.get(engine.H_DLQ_STREAM)
    if not (consumer and subject and origin):
        raise NotRedrivable(f"dead letter {seq} does not say which consumer, subject and stream it came from")
    copy = {k: v for k, v in headers.items() if not k.startswith("fog-dlq-") and not k.startswith("Nats-")}
    copy.update(
        {
            # Unique per entry, so a second re-drive of the same entry within the window is dropped.
            NATS_MSG_ID: f"redrive:{stream}:{seq}:{headers.get(H_ID, '')}",
            engine.H_REDRIVE_OF: f"{stream}:{seq}",
            engine.H_REDRIVE_FOR: consumer,
        }
    )
    ack = await publish_raw(js, origin, subject, raw.data or b"", copy)
    with contextlib.suppress(NotFoundError):  # a concurrent re-drive of the same entry removed it
        await js.delete_msg(stream, seq)
    return Redriven(dead_letter_seq=seq, consumer=consumer, stream=origin, subject=subject, seq=ack.seq)
