"""Rebuilding a read model from the event history, to compare it with the live one.

A service rebuilds a table that one of its consumers maintains: it replays that consumer's
events, from the start of the stream up to what the live consumer has acknowledged, through its
own projection (the part of the handler that writes the read model, with side effects left out)
into a scratch copy of the table, then compares the two row by row. The replay reads history
like every other tool here (ephemeral consumer, no acks); the scratch copy is a temporary table
inside a transaction that is rolled back, so nothing live changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from pydantic import BaseModel, Field, ValidationError

from fog_shared.bus.topology import ConsumerSpec, StreamSpec
from fog_shared.envelope import Envelope
from fog_shared.events import CATALOGUE, Event
from fog_shared.replay.history import Query, history, subject_matches
from fog_shared.replay.records import EventRecord, Gap

#: applies one event to the scratch read model
Projection = Callable[[Event, Envelope], Awaitable[None]]


class RowDifference(BaseModel):
    key: str
    #: ``missing_live`` (only the rebuild has it), ``missing_rebuilt`` (only live has it) or ``changed``
    kind: str
    #: column → [live value, rebuilt value], for ``changed``
    columns: dict[str, list[Any]] = Field(default_factory=dict)


class RebuildReport(BaseModel):
    service: str
    read_model: str
    consumer: str
    #: the stream sequence replayed up to: what the live consumer had acknowledged
    replayed_to_seq: int
    events_replayed: int
    #: events the projection could not decode (the live consumer dead-lettered them too)
    events_skipped: int
    rows_live: int
    rows_rebuilt: int
    differences: list[RowDifference]
    gaps: list[Gap]

    @property
    def consistent(self) -> bool:
        return not self.differences and not self.gaps


@dataclass(slots=True)
class Replayed:
    upto_seq: int
    applied: int = 0
    skipped: int = 0
    gaps: list[Gap] = field(default_factory=list)


async def replay(js: JetStreamContext, spec: ConsumerSpec, project: Projection, *, page_size: int = 1000) -> Replayed:
    """Feed ``project`` every event the live consumer ``spec`` has acknowledged, in stream order."""
    info = await js.consumer_info(spec.stream, spec.durable)
    upto = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
    done = Replayed(upto_seq=upto)
    held = tuple((await js.stream_info(spec.stream)).config.subjects or ())
    stream = StreamSpec(name=spec.stream, subjects=held)
    subject = spec.filter_subjects[0] if len(spec.filter_subjects) == 1 else held[0]
    cursor: dict[str, int] = {}
    while upto > 0:
        page = await history(js, Query(subject=subject, cursor=cursor, limit=page_size), (stream,))
        done.gaps.extend(page.gaps if not cursor else [])
        for record in page.items:
            if record.seq > upto:
                return done
            if _meant_for(spec, record):
                await _apply(project, record, done)
        if not page.more or not page.items:
            return done
        cursor = {spec.stream: page.items[-1].seq + 1}
    return done


def _meant_for(spec: ConsumerSpec, record: EventRecord) -> bool:
    """Whether the live consumer handled this message: its subjects, and no re-drive for another."""
    if not any(subject_matches(record.subject, wanted) for wanted in spec.filter_subjects):
        return False
    return record.redrive_for in (None, spec.durable)


async def _apply(project: Projection, record: EventRecord, done: Replayed) -> None:
    decoded = _decode(record)
    if decoded is None:
        done.skipped += 1
        return
    await project(*decoded)
    done.applied += 1


def _decode(record: EventRecord) -> tuple[Event, Envelope] | None:
    """The event and its envelope, as the live consumer decoded them; None for what it could not."""
    if not (record.id and record.type and record.source and record.time) or record.type not in CATALOGUE:
        return None
    envelope = Envelope(
        id=record.id, type=record.type, source=record.source, time=record.time, subject=record.aggregate_id,
        correlation_id=record.correlation_id, causation_id=record.causation_id,
    )  # fmt: skip
    try:
        return CATALOGUE.get(record.type).model_validate(record.data), envelope
    except ValidationError:
        return None


def diff_rows(live: Mapping[str, Mapping[str, Any]], rebuilt: Mapping[str, Mapping[str, Any]]) -> list[RowDifference]:
    """Pure: the rows (by key) and columns in which two versions of a table differ."""
    differences = []
    for key in sorted(live.keys() | rebuilt.keys()):
        if key not in live:
            differences.append(RowDifference(key=key, kind="missing_live"))
        elif key not in rebuilt:
            differences.append(RowDifference(key=key, kind="missing_rebuilt"))
        else:
            changed = {
                column: [live[key][column], rebuilt[key].get(column)]
                for column in live[key]
                if live[key][column] != rebuilt[key].get(column)
            }
            if changed:
                differences.append(RowDifference(key=key, kind="changed", columns=changed))
    return differences
