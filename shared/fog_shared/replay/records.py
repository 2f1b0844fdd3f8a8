"""What the replay tools show of one stored message: its envelope, body and where it is stored.

A stored message need not be a valid CloudEvent (a poison event in the dead-letter stream is
often exactly that), so every envelope field is optional and the raw headers stay available.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from nats.aio.msg import Msg
from pydantic import BaseModel

from fog_shared.bus import consumer as engine
from fog_shared.envelope import (
    H_CAUSATION,
    H_CORRELATION,
    H_ID,
    H_SOURCE,
    H_SUBJECT,
    H_TIME,
    H_TRACEPARENT,
    H_TYPE,
)


class DeadLetter(BaseModel):
    """Why a consumer parked an event, and where the original is."""

    consumer: str
    reason: str
    error: str
    stream: str | None = None
    stream_seq: int | None = None
    subject: str | None = None
    deliveries: int | None = None


class EventRecord(BaseModel):
    """One stored message as the history, trace and dead-letter views show it."""

    stream: str
    seq: int
    subject: str
    stored_at: datetime
    id: str | None = None
    type: str | None = None
    source: str | None = None
    time: datetime | None = None
    aggregate_id: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    trace_id: str | None = None
    #: the body as JSON, or as text when it is not JSON (poison events)
    data: Any = None
    dead_letter: DeadLetter | None = None
    redrive_of: str | None = None
    #: the one consumer a re-driven copy is for
    redrive_for: str | None = None


class Gap(BaseModel):
    """Part of the requested range is gone: retention (age, size) or a purge dropped it."""

    stream: str
    first_retained_seq: int
    first_retained_at: datetime | None
    detail: str


def trace_id_of(traceparent: str | None) -> str | None:
    """The W3C trace id (``00-<trace id>-<span id>-<flags>``), or None when absent or malformed."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def record_of(msg: Msg) -> EventRecord:
    """The record of a message delivered by a JetStream consumer."""
    metadata = msg.metadata
    return build_record(
        stream=metadata.stream,
        seq=metadata.sequence.stream,
        subject=msg.subject,
        stored_at=metadata.timestamp,
        headers=msg.headers or {},
        body=msg.data,
    )


def build_record(
    *, stream: str, seq: int, subject: str, stored_at: datetime, headers: Mapping[str, str], body: bytes
) -> EventRecord:
    return EventRecord(
        stream=stream,
        seq=seq,
        subject=subject,
        stored_at=stored_at if stored_at.tzinfo else stored_at.replace(tzinfo=UTC),
        id=headers.get(H_ID),
        type=headers.get(H_TYPE),
        source=headers.get(H_SOURCE),
        time=_time(headers.get(H_TIME)),
        aggregate_id=headers.get(H_SUBJECT),
        correlation_id=headers.get(H_CORRELATION),
        causation_id=headers.get(H_CAUSATION),
        trace_id=trace_id_of(headers.get(H_TRACEPARENT)),
        data=_body(body),
        dead_letter=_dead_letter(headers),
        redrive_of=headers.get(engine.H_REDRIVE_OF),
        redrive_for=headers.get(engine.H_REDRIVE_FOR),
    )


def _time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode(errors="replace")


def _dead_letter(headers: Mapping[str, str]) -> DeadLetter | None:
    consumer = headers.get(engine.H_DLQ_CONSUMER)
    if consumer is None:
        return None
    return DeadLetter(
        consumer=consumer,
        reason=headers.get(engine.H_DLQ_REASON, ""),
        error=headers.get(engine.H_DLQ_ERROR, ""),
        stream=headers.get(engine.H_DLQ_STREAM),
        stream_seq=_int(headers.get(engine.H_DLQ_SEQUENCE)),
        subject=headers.get(engine.H_DLQ_SUBJECT),
        deliveries=_int(headers.get(engine.H_DLQ_DELIVERIES)),
    )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def subjects_overlap(left: str, right: str) -> bool:
    """Whether two NATS subject patterns (``*`` one token, ``>`` the rest) can match one subject."""
    a, b = left.split("."), right.split(".")
    for x, y in zip(a, b, strict=False):
        if ">" in (x, y):
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(a) == len(b)
