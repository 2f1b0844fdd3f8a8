"""The causal tree of one request: every event carrying its correlation id, on every stream.

The gateway's request id is the correlation id of everything the request causes; an event's
causation id names the event it follows from. The tree is built from those two ids alone, so it
crosses services and streams; events whose cause is not among them are roots.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from nats.js import JetStreamContext
from pydantic import BaseModel

from fog_shared.bus.topology import DEAD_LETTER_STREAM, EVENT_STREAMS, StreamSpec
from fog_shared.replay.history import Query, history
from fog_shared.replay.records import EventRecord, Gap

#: a request's events are looked for this far back unless told otherwise
DEFAULT_LOOKBACK = timedelta(hours=24)
#: events read per page while collecting a trace
_PAGE = 1000


class TraceStep(BaseModel):
    event: EventRecord
    #: distance from a root of the tree (0 for a root)
    depth: int
    #: milliseconds since the first event of the request
    offset_ms: float
    #: milliseconds since the event it follows from (None for a root)
    after_cause_ms: float | None


class Trace(BaseModel):
    correlation_id: str
    #: OpenTelemetry trace ids the events carry (one when the request's context crossed every hop)
    trace_ids: list[str]
    started_at: datetime | None
    duration_ms: float
    #: depth-first, children in time order: print it as an indented tree
    steps: list[TraceStep]
    gaps: list[Gap]


async def trace(
    js: JetStreamContext,
    correlation_id: str,
    *,
    since: datetime,
    until: datetime | None = None,
    streams: Sequence[StreamSpec] = (*EVENT_STREAMS, DEAD_LETTER_STREAM),
) -> Trace:
    """Collect the request's events (dead letters included) and order them as a tree."""
    found: list[EventRecord] = []
    gaps: list[Gap] = []
    for spec in streams:
        query = Query(subject=spec.subjects[0], since=since, until=until, correlation_id=correlation_id, limit=_PAGE)
        while True:
            page = await history(js, query, (spec,))
            found.extend(page.items)
            gaps.extend(g for g in page.gaps if g not in gaps)
            if not page.more:
                break
            query = Query(
                subject=query.subject, until=until, correlation_id=correlation_id, limit=_PAGE,
                cursor={spec.name: int(page.cursor.partition(":")[2])},
            )  # fmt: skip
    return build_trace(correlation_id, found, gaps)


def build_trace(correlation_id: str, events: Sequence[EventRecord], gaps: Sequence[Gap] = ()) -> Trace:
    """Pure: arrange the events of one request by causation, with timings."""
    ordered = sorted(events, key=_moment)
    by_id = {e.id: e for e in ordered if e.id}
    children: dict[str | None, list[EventRecord]] = {}
    for event in ordered:
        cause = event.causation_id if event.causation_id in by_id and event.causation_id != event.id else None
        children.setdefault(cause, []).append(event)
    start = _moment(ordered[0]) if ordered else None
    steps: list[TraceStep] = []
    visited: set[int] = set()

    def visit(event: EventRecord, depth: int, cause: EventRecord | None) -> None:
        if id(event) in visited:  # a causation cycle must not loop
            return
        visited.add(id(event))
        steps.append(
            TraceStep(
                event=event,
                depth=depth,
                offset_ms=_ms(_moment(event) - start) if start else 0.0,
                after_cause_ms=_ms(_moment(event) - _moment(cause)) if cause else None,
            )
        )
        for child in children.get(event.id, []) if event.id else []:
            visit(child, depth + 1, event)

    for root in children.get(None, []):
        visit(root, 0, None)
    for event in ordered:  # only a causation cycle leaves any unvisited
        visit(event, 0, None)
    trace_ids = sorted({e.trace_id for e in ordered if e.trace_id})
    duration = _ms(_moment(ordered[-1]) - start) if start else 0.0
    return Trace(
        correlation_id=correlation_id, trace_ids=trace_ids, started_at=start, duration_ms=duration, steps=steps,
        gaps=list(gaps),
    )  # fmt: skip


def _moment(event: EventRecord) -> datetime:
    """When the producer says it happened; when it was stored if it says nothing."""
    return event.time or event.stored_at


def _ms(delta: timedelta) -> float:
    return round(delta.total_seconds() * 1000, 3)
