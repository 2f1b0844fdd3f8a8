"""CloudEvents 1.0 in binary mode over NATS headers.

The body of a NATS message is the event's JSON; its context attributes travel in headers:
``ce-specversion``, ``ce-id``, ``ce-source``, ``ce-type``, ``ce-time``, ``ce-subject`` (the
aggregate id), two extension attributes ``ce-correlationid`` and ``ce-causationid``, and the W3C
``traceparent``/``tracestate``. ``Nats-Msg-Id`` repeats ``ce-id`` so JetStream's duplicate window
drops a re-published event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"
NATS_MSG_ID = "Nats-Msg-Id"

H_SPECVERSION = "ce-specversion"
H_ID = "ce-id"
H_SOURCE = "ce-source"
H_TYPE = "ce-type"
H_TIME = "ce-time"
H_SUBJECT = "ce-subject"
H_CORRELATION = "ce-correlationid"
H_CAUSATION = "ce-causationid"
H_CONTENT_TYPE = "content-type"
H_TRACEPARENT = "traceparent"
H_TRACESTATE = "tracestate"

_REQUIRED = (H_SPECVERSION, H_ID, H_SOURCE, H_TYPE, H_TIME)


class EnvelopeError(ValueError):
    """The headers are not a valid CloudEvents binary-mode envelope."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The context of one event: who, what, when, and which request caused it."""

    id: str
    type: str
    source: str
    time: datetime
    subject: str | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def new(
        cls,
        *,
        type: str,
        source: str,
        subject: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        id: str | None = None,
        time: datetime | None = None,
    ) -> Envelope:
        """A fresh envelope. With no correlation id the event starts its own chain."""
        event_id = id or str(uuid.uuid4())
        return cls(
            id=event_id,
            type=type,
            source=source,
            time=time or datetime.now(UTC),
            subject=subject,
            correlation_id=correlation_id or event_id,
            causation_id=causation_id,
        )

    def caused(self, *, type: str, source: str, subject: str | None = None) -> Envelope:
        """The envelope of an event this one causes: same correlation, causation = this id."""
        return Envelope.new(
            type=type,
            source=source,
            subject=subject,
            correlation_id=self.correlation_id or self.id,
            causation_id=self.id,
        ).with_trace(self.traceparent, self.tracestate)

    def with_trace(self, traceparent: str | None, tracestate: str | None = None) -> Envelope:
        return replace(self, traceparent=traceparent, tracestate=tracestate)

    def to_headers(self) -> dict[str, str]:
        headers = {
            H_SPECVERSION: SPEC_VERSION,
            H_ID: self.id,
            H_SOURCE: self.source,
            H_TYPE: self.type,
            H_TIME: self.time.isoformat(),
            H_CONTENT_TYPE: CONTENT_TYPE,
            NATS_MSG_ID: self.id,
        }
        optional = {
            H_SUBJECT: self.subject,
            H_CORRELATION: self.correlation_id,
            H_CAUSATION: self.causation_id,
            H_TRACEPARENT: self.traceparent,
            H_TRACESTATE: self.tracestate,
        }
        headers.update({k: v for k, v in optional.items() if v})
        headers.update(self.extra)
        return headers

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | None) -> Envelope:
        """Parse binary-mode headers; raises :class:`EnvelopeError` naming what is wrong."""
        if not headers:
            raise EnvelopeError("message has no headers: not a CloudEvent")
        missing = [name for name in _REQUIRED if not headers.get(name)]
        if missing:
            raise EnvelopeError(f"missing CloudEvents headers: {', '.join(missing)}")
        if headers[H_SPECVERSION] != SPEC_VERSION:
            raise EnvelopeError(f"unsupported ce-specversion {headers[H_SPECVERSION]!r}")
        try:
            time = datetime.fromisoformat(headers[H_TIME])
        except ValueError as exc:
            raise EnvelopeError(f"ce-time is not RFC 3339: {headers[H_TIME]!r}") from exc
        return cls(
            id=headers[H_ID],
            type=headers[H_TYPE],
            source=headers[H_SOURCE],
            time=time,
            subject=headers.get(H_SUBJECT),
            correlation_id=headers.get(H_CORRELATION),
            causation_id=headers.get(H_CAUSATION),
            traceparent=headers.get(H_TRACEPARENT),
            tracestate=headers.get(H_TRACESTATE),
        )
