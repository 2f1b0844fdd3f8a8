"""Rebuilding a read model from the event history, to compare it with the live one.

A service rebuilds a table that one of its consumers maintains: it replays that consumer's
events, from the start of the stream up to what the live consumer has acknowledged, through its
own projection (the part of the handler that writes the read model, with side effects left out)
into a scratch copy of the table, then compares the two row by row. The replay reads history
like every other tool here (ephemeral consumer, no acks); the scratch copy is a temporary table
inside a transaction that is rolled back, so nothing live changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg
from nats.js import JetStreamContext
from pydantic import BaseModel, Field, ValidationError

from fog_shared.bus.topology import ConsumerSpec, StreamSpec
from fog_shared.commands.common import RebuildQuery, Refusal
from fog_shared.envelope import Envelope
from fog_shared.events import CATALOGUE, Event
from fog_shared.replay.history import Query, history, subject_matches
from fog_shared.replay.records import EventRecord, Gap

if TYPE_CHECKING:
    from fog_shared.runtime import ServiceRuntime

#: applies one event to the scratch read model
Projection = Callable[[Event, Envelope], Awaitable[None]]
#: applies one event to a read model's table on a connection (its unqualified name: the scratch copy in a rebuild)
TableProjection = Callable[[asyncpg.Connection, Event, Envelope], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ReadModel:
    """A table that one consumer maintains from events alone, and how to compare two versions of it."""

    #: the service that owns it, and its name in the reports (``fogctl events rebuild SERVICE --read-model NAME``)
    service: str
    name: str
    #: the table in the service's schema, its key column, and the columns compared (not ``updated_at`` and the
    #: like: they record when a row was written, not what it says)
    table: str
    key: str
    columns: tuple[str, ...]
    consumer: ConsumerSpec
    #: the part of the live handler that writes the table, with side effects left out
    project: TableProjection


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


def read_model_named(models: Sequence[ReadModel], name: str | None) -> ReadModel:
    """The read model asked for, the first of ``models`` when ``name`` is None; refused (404) when unknown."""
    for model in models:
        if name is None or model.name == name:
            return model
    known = ", ".join(model.name for model in models)
    raise Refusal("not_found", f"no read model {name!r} to rebuild here; there are: {known}")


async def answer_rebuild(runtime: ServiceRuntime, models: Sequence[ReadModel], query: RebuildQuery) -> dict[str, Any]:
    """A service's answer to a :class:`RebuildQuery`: the report of the read model it names, rebuilt."""

    async def run(conn: asyncpg.Connection) -> RebuildReport:
        model = read_model_named(models, query.read_model)
        return await rebuild_table(conn, runtime.js, model, runtime.settings.db_schema)

    return await runtime.answer(run)


async def rebuild_table(conn: asyncpg.Connection, js: JetStreamContext, model: ReadModel, schema: str) -> RebuildReport:
    """Replay ``model``'s consumer into a scratch copy of its table, inside a transaction rolled back at the end
    (nothing live is written), and compare the copy with the live table."""
    live_table = f'"{schema}".{model.table}'
    scratch = conn.transaction()
    await scratch.start()
    try:
        # pg_temp comes first in the search path: the projection's unqualified table name is the scratch copy.
        await conn.execute(f"CREATE TEMP TABLE {model.table} (LIKE {live_table} INCLUDING ALL) ON COMMIT DROP")
        await conn.execute(f'SET LOCAL search_path = pg_temp, "{schema}"')

        async def project(event: Event, envelope: Envelope) -> None:
            await model.project(conn, event, envelope)

        replayed = await replay(js, model.consumer, project)
        rebuilt = await _rows(conn, model, f"pg_temp.{model.table}")
        live = await _rows(conn, model, live_table)
    finally:
        await scratch.rollback()
    return RebuildReport(
        service=model.service, read_model=model.name, consumer=model.consumer.durable,
        replayed_to_seq=replayed.upto_seq, events_replayed=replayed.applied, events_skipped=replayed.skipped,
        rows_live=len(live), rows_rebuilt=len(rebuilt), differences=diff_rows(live, rebuilt), gaps=replayed.gaps,
    )  # fmt: skip


async def _rows(conn: asyncpg.Connection, model: ReadModel, table: str) -> dict[str, dict[str, Any]]:
    rows = await conn.fetch(f"SELECT {model.key}, {', '.join(model.columns)} FROM {table}")
    return {str(row[model.key]): {column: row[column] for column in model.columns} for row in rows}
