"""Replies of the admin event routes: stored events, pages of history, traces, dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from fog_client.models import _Reply


class DeadLetter(_Reply):
    consumer: str
    reason: str
    error: str
    stream: str | None = None
    stream_seq: int | None = None
    subject: str | None = None
    deliveries: int | None = None


class StoredEvent(_Reply):
    """One stored event: where it is, its CloudEvents context and its body."""

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
    data: Any = None
    dead_letter: DeadLetter | None = None
    redrive_of: str | None = None
    redrive_for: str | None = None


class Gap(_Reply):
    """Events the stream no longer holds (retention): the history before them is incomplete."""

    stream: str
    first_retained_seq: int
    first_retained_at: datetime | None = None
    detail: str


class EventPage(_Reply):
    items: list[StoredEvent]
    gaps: list[Gap]
    cursor: str
    more: bool


class TraceStep(_Reply):
    event: StoredEvent
    depth: int
    offset_ms: float
    after_cause_ms: float | None = None


class Trace(_Reply):
    correlation_id: str
    trace_ids: list[str]
    started_at: datetime | None = None
    duration_ms: float
    steps: list[TraceStep]
    gaps: list[Gap]


class Redriven(_Reply):
    dead_letter_seq: int
    consumer: str
    stream: str
    subject: str
    seq: int


class RowDifference(_Reply):
    key: str
    #: ``missing_live``, ``missing_rebuilt`` or ``changed``
    kind: str
    #: column → [live value, rebuilt value]
    columns: dict[str, list[Any]] = Field(default_factory=dict)


#: the read models each service rebuilds from events (``rebuild_read_model``), its default first
READ_MODELS: dict[str, tuple[str, ...]] = {"scheduler": ("nodes",), "messaging": ("users", "node_owners")}


class RebuildReport(_Reply):
    """A read model rebuilt from the events in a scratch copy, compared with the live one."""

    service: str
    read_model: str
    consumer: str
    replayed_to_seq: int
    events_replayed: int
    events_skipped: int
    rows_live: int
    rows_rebuilt: int
    differences: list[RowDifference]
    gaps: list[Gap]
