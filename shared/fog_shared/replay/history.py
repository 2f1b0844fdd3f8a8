"""Reading the event history without changing anything.

Each read is an ordered, ephemeral JetStream consumer (no durable, no acks: the server forgets it
when it is unsubscribed) starting at a time or a sequence, on one stream at a time; the events of
several streams are merged by the time JetStream stored them. A page ends at ``limit`` events or
at the end of each stream as it was when the read began, and its cursor says where to go on.

Retention drops old events. When the requested start is older than what a stream still holds,
the page says so with a :class:`Gap` instead of silently starting later.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StreamState
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from fog_shared.bus.topology import EVENT_STREAMS, StreamSpec
from fog_shared.replay.records import EventRecord, Gap, record_of, subjects_overlap

ALL_EVENTS = "fog.evt.>"
#: an ephemeral consumer left behind by a crashed reader goes away after this long
INACTIVE_THRESHOLD_S = 10.0
#: longest wait for the next message of a consumer the server says still has some
STALL_TIMEOUT_S = 10.0


class CursorError(ValueError):
    """A cursor that is not ``STREAM:SEQ[,STREAM:SEQ...]``."""


@dataclass(frozen=True, slots=True)
class Query:
    """Which events: a subject filter, a time range or a cursor, and optionally one aggregate or request."""

    subject: str = ALL_EVENTS
    since: datetime | None = None
    until: datetime | None = None
    #: the next sequence to read per stream (from a previous page); wins over ``since``
    cursor: dict[str, int] = field(default_factory=dict)
    aggregate_id: str | None = None
    correlation_id: str | None = None
    limit: int = 100

    def matches(self, record: EventRecord) -> bool:
        if not subject_matches(record.subject, self.subject):
            return False
        if self.aggregate_id is not None and record.aggregate_id != self.aggregate_id:
            return False
        return self.correlation_id is None or record.correlation_id == self.correlation_id


class Page(BaseModel):
    items: list[EventRecord]
    gaps: list[Gap]
    #: where the next page starts; give it back to read on (also once ``more`` is false: new events)
    cursor: str
    #: whether events already stored were left for the next page
    more: bool


def subject_matches(subject: str, pattern: str) -> bool:
    """Whether a literal subject matches a pattern with ``*`` and ``>``."""
    tokens, wanted = subject.split("."), pattern.split(".")
    for index, want in enumerate(wanted):
        if want == ">":
            return len(tokens) > index
        if index >= len(tokens) or (want != "*" and want != tokens[index]):
            return False
    return len(tokens) == len(wanted)


def parse_cursor(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    cursor = {}
    for part in text.split(","):
        stream, _, seq = part.partition(":")
        if not stream or not seq.isdigit() or int(seq) < 1:
            raise CursorError(f"not a cursor this API gave out: {text!r}")
        cursor[stream] = int(seq)
    return cursor


def format_cursor(cursor: dict[str, int]) -> str:
    return ",".join(f"{stream}:{seq}" for stream, seq in sorted(cursor.items()))


def streams_for(subject: str, streams: Sequence[StreamSpec] = EVENT_STREAMS) -> list[StreamSpec]:
    """The streams that can hold events matching ``subject``."""
    return [spec for spec in streams if any(subjects_overlap(subject, held) for held in spec.subjects)]


async def history(js: JetStreamContext, query: Query, streams: Sequence[StreamSpec] = EVENT_STREAMS) -> Page:
    """One page of the events ``query`` selects, oldest first, across every stream that holds them."""
    scans, gaps = [], []
    for spec in streams_for(query.subject, streams):
        try:
            state = (await js.stream_info(spec.name)).state
        except NotFoundError:
            continue  # not provisioned (yet): it holds nothing
        start = _Start.of(query, spec.name)
        first_at = await _first_retained_at(js, spec.name, state) if state.first_seq > 1 else None
        gap = start.gap(spec.name, state, first_at)
        if gap is not None:
            gaps.append(gap)
        scans.append(await _scan(js, spec, query, start, state))
    merged = sorted((r for scan in scans for r in scan.records), key=lambda r: (r.stored_at, r.stream, r.seq))
    items = merged[: query.limit]
    cursor = {scan.stream: scan.next_seq_after(items) for scan in scans}
    more = len(merged) > query.limit or any(not scan.exhausted for scan in scans)
    return Page(items=items, gaps=gaps, cursor=format_cursor(cursor), more=more)


@dataclass(frozen=True, slots=True)
class _Start:
    seq: int | None = None
    time: datetime | None = None

    @classmethod
    def of(cls, query: Query, stream: str) -> _Start:
        if stream in query.cursor:
            return cls(seq=query.cursor[stream])
        return cls(time=query.since)

    def gap(self, stream: str, state: StreamState, first_at: datetime | None) -> Gap | None:
        """A gap when events this start asks for may have been dropped by retention."""
        first = state.first_seq
        if first <= 1:
            return None  # nothing was ever dropped
        if self.seq is not None:
            dropped = self.seq < first
        elif self.time is not None:
            dropped = first_at is None or self.time < first_at
        else:
            dropped = True
        if not dropped:
            return None
        since = f"before {first_at.isoformat()} " if first_at else ""
        detail = f"{stream} no longer holds events {since}(sequences below {first}): retention or a purge dropped them"
        return Gap(stream=stream, first_retained_seq=first, first_retained_at=first_at, detail=detail)

    def consumer_config(self) -> ConsumerConfig:
        if self.seq is not None:
            return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.seq)
        if self.time is not None:
            return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=self.time)
        return ConsumerConfig(deliver_policy=DeliverPolicy.ALL)


async def _first_retained_at(js: JetStreamContext, stream: str, state: StreamState) -> datetime | None:
    """When the oldest message the stream still holds was stored (None if it vanished meanwhile)."""
    try:
        return (await js.get_msg(stream, seq=state.first_seq)).time
    except NotFoundError:
        return None


@dataclass(slots=True)
class _Scan:
    stream: str
    records: list[EventRecord]
    #: the sequence after the last message looked at
    next_seq: int
    #: the stream was read to its end (or past ``until``) within the page
    exhausted: bool

    def next_seq_after(self, page: list[EventRecord]) -> int:
        """Where this stream goes on once ``page`` (merged across streams) is shown."""
        shown = [r.seq for r in page if r.stream == self.stream]
        if len(shown) == len(self.records):
            return self.next_seq
        return (max(shown) + 1) if shown else self.records[0].seq


async def _scan(js: JetStreamContext, spec: StreamSpec, query: Query, start: _Start, state: StreamState) -> _Scan:
    last = state.last_seq
    begin = max(start.seq or state.first_seq, 1)
    if state.messages == 0 or begin > last:
        return _Scan(spec.name, [], max(begin, last + 1), exhausted=True)
    records: list[EventRecord] = []
    next_seq, exhausted = begin, False

    def take(record: EventRecord) -> bool:
        """Keep a matching record; False once the page is full or the range is over."""
        nonlocal next_seq, exhausted
        if query.until is not None and record.stored_at > query.until:
            exhausted = True
            return False
        next_seq = record.seq + 1
        if query.matches(record):
            records.append(record)
        if record.seq >= last:
            exhausted = True
        return not exhausted and len(records) < query.limit

    exhausted = await _read(js, spec.name, _filter_for(query.subject, spec), start.consumer_config(), take) or exhausted
    if exhausted:
        next_seq = max(next_seq, last + 1) if query.until is None else next_seq
    return _Scan(spec.name, records, next_seq, exhausted)


def _filter_for(subject: str, spec: StreamSpec) -> str:
    """The query's subject when it lies inside the stream's (the server filters), else the stream's."""
    for held in spec.subjects:
        prefix = held.removesuffix(">")
        if held.endswith(">") and subject.startswith(prefix):
            return subject
    return spec.subjects[0]


async def _read(
    js: JetStreamContext, stream: str, subject: str, config: ConsumerConfig, take: Callable[[EventRecord], bool]
) -> bool:
    """Feed ``take`` in stream order until it says stop; True when the consumer ran dry first."""
    subscription = await js.subscribe(
        subject, stream=stream, ordered_consumer=True, config=config, inactive_threshold=INACTIVE_THRESHOLD_S
    )
    try:
        created = await subscription.consumer_info()
        if not created.num_pending and not (created.delivered and created.delivered.consumer_seq):
            return True  # nothing to read: do not wait for what will not come
        stalled_since = time.monotonic()
        while True:
            try:
                msg = await subscription.next_msg(timeout=0.5)
            except (TimeoutError, NatsTimeoutError):
                info = await subscription.consumer_info()
                if not info.num_pending:
                    return True
                if time.monotonic() - stalled_since > STALL_TIMEOUT_S:
                    raise TimeoutError(f"{stream}: the server stopped delivering history") from None
                continue
            stalled_since = time.monotonic()
            if not take(record_of(msg)) or not msg.metadata.num_pending:
                return not msg.metadata.num_pending
    finally:
        await asyncio.shield(_close(js, stream, subscription))


async def _close(js: JetStreamContext, stream: str, subscription: JetStreamContext.PushSubscription) -> None:
    """Unsubscribe and delete the ephemeral consumer now, rather than when the server times it out."""
    try:
        name = (await subscription.consumer_info()).name
    except (NotFoundError, TimeoutError, NatsTimeoutError):
        name = None
    await subscription.unsubscribe()
    if name:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, name)
