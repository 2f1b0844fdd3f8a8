"""``fogctl events history|tail|trace|dlq|rebuild``: the event history, through the gateway's admin routes.

Every command reads through the gateway (so it works against any cluster the saved session
reaches) and needs the ``admin`` role. Reading never changes state or re-runs a handler; only
``dlq redrive`` writes, handing one parked event back to the consumer that parked it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fog_client import EventPage, FogClient, Gap, RebuildReport, StoredEvent, Trace
from fog_client.events import READ_MODELS
from fogctl import account

app = typer.Typer(no_args_is_help=True, help="Events: history, live tail, request traces, dead letters (admin).")
dlq = typer.Typer(no_args_is_help=True, help="Dead letters: events a consumer gave up on.")
app.add_typer(dlq, name="dlq")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

#: how often ``tail`` asks for new events (module level: tests set it to 0)
POLL_S = 1.0
_AGO = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
#: the stream of each kind of aggregate: its history is read there only
AGGREGATE_SUBJECTS = {"job": "fog.evt.scheduler.>", "node": "fog.evt.registry.>", "conversation": "fog.evt.messaging.>"}

JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines: one event (or gap) per line")]
SubjectOption = Annotated[str | None, typer.Option(help="Subject filter, e.g. 'fog.evt.scheduler.>'")]
SinceOption = Annotated[str | None, typer.Option(help="From: 10m, 2h, 1d ago, or an RFC 3339 time")]
UntilOption = Annotated[str | None, typer.Option(help="Up to: 10m, 2h, 1d ago, or an RFC 3339 time")]
JobOption = Annotated[str | None, typer.Option("--job", help="Only this job's events")]
NodeOption = Annotated[str | None, typer.Option("--node", help="Only this node's events")]
ConversationOption = Annotated[str | None, typer.Option("--conversation", help="Only this conversation's events")]
AggregateOption = Annotated[str | None, typer.Option("--aggregate", help="Only events of this aggregate id")]
SeqArgument = Annotated[int, typer.Argument(min=1, help="The entry's sequence in the dead-letter stream")]
CursorOption = Annotated[
    str | None, typer.Option(help="Go on from a page's cursor (STREAM:SEQ,...): also a start by sequence")
]


def parse_moment(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """``10m`` / ``2h`` / ``1d`` / ``30s`` ago, or an RFC 3339 time (UTC when it has no zone)."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    ago = _AGO.match(text.strip())
    if ago:
        return now - timedelta(**{_UNITS[ago.group(2)]: int(ago.group(1))})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: give 10m, 2h, 1d or an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _selection(
    subject: str | None, job: str | None, node: str | None, conversation: str | None, aggregate: str | None
) -> tuple[str | None, str | None]:
    """(subject filter, aggregate id) from the options; one aggregate at most."""
    chosen = [(kind, value) for kind, value in (("job", job), ("node", node), ("conversation", conversation)) if value]
    chosen += [("aggregate", aggregate)] if aggregate else []
    if len(chosen) > 1:
        raise typer.BadParameter("give one of --job, --node, --conversation and --aggregate")
    if not chosen:
        return subject, None
    kind, value = chosen[0]
    return subject or AGGREGATE_SUBJECTS.get(kind), value


@app.command()
def history(
    subject: SubjectOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    job: JobOption = None,
    node: NodeOption = None,
    conversation: ConversationOption = None,
    aggregate: AggregateOption = None,
    cursor: CursorOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Events per page")] = 100,
    every_page: Annotated[bool, typer.Option("--all", help="Follow the pages to the end")] = False,
    as_json: JsonOption = False,
) -> None:
    """Stored events, oldest first: of a subject filter, a time range, or one job, node or conversation."""
    subject, aggregate_id = _selection(subject, job, node, conversation, aggregate)
    start, end = parse_moment(since), parse_moment(until)

    async def run(client: FogClient) -> EventPage:
        page_cursor, shown = cursor, False
        while True:
            page = await client.event_history(
                subject=subject, since=start, until=end, aggregate_id=aggregate_id, cursor=page_cursor, limit=limit
            )
            _print_page(page, as_json, header=not shown)
            shown = True
            if not (every_page and page.more):
                return page
            page_cursor = page.cursor

    last = account.with_saved_session(run)
    if last.more:
        err.print(f"more events: add --cursor {last.cursor} (or --all)", style="yellow", markup=False)


@app.command()
def tail(
    subject: SubjectOption = None,
    since: SinceOption = None,
    job: JobOption = None,
    node: NodeOption = None,
    conversation: ConversationOption = None,
    aggregate: AggregateOption = None,
    count: Annotated[int | None, typer.Option(min=1, help="Stop after this many events")] = None,
    as_json: JsonOption = False,
) -> None:
    """Events as they are stored (from now, or from --since), until Ctrl-C or --count."""
    subject, aggregate_id = _selection(subject, job, node, conversation, aggregate)
    start = parse_moment(since) or datetime.now(UTC)

    async def run(client: FogClient) -> None:
        cursor, seen = None, 0
        while True:
            page = await client.event_history(
                subject=subject, since=None if cursor else start, aggregate_id=aggregate_id, cursor=cursor,
                limit=min(1000, count - seen) if count else 1000,
            )  # fmt: skip
            _print_page(page, as_json, header=False, gaps=cursor is None)
            seen, cursor = seen + len(page.items), page.cursor
            if count is not None and seen >= count:
                return
            if not page.more:
                await asyncio.sleep(POLL_S)  # polling the history: works through any proxy, misses nothing

    try:
        account.with_saved_session(run)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def trace(
    correlation_id: Annotated[str, typer.Argument(help="The request id (X-Request-ID) of the call")],
    since: Annotated[str | None, typer.Option(help="Look back to: 10m, 2h, 1d, or a time (default 1d)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The whole trace as one JSON document")] = False,
) -> None:
    """Everything one request caused, on every stream, as a tree by causation with timings."""
    start = parse_moment(since)
    found = account.with_saved_session(lambda client: client.event_trace(correlation_id, since=start))
    if as_json:
        typer.echo(found.model_dump_json())
        return
    _print_trace(found)
    if not found.steps:
        err.print("no events carry this correlation id (try an earlier --since)", style="yellow", markup=False)
        raise typer.Exit(1)


@dlq.command("list")
def dlq_list(
    consumer: Annotated[str | None, typer.Option(help="Only this consumer's dead letters")] = None,
    cursor: CursorOption = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: JsonOption = False,
) -> None:
    """Parked events with their consumer, reason and error, oldest first."""
    page = account.with_saved_session(lambda c: c.dead_letters(consumer=consumer, cursor=cursor, limit=limit))
    if as_json:
        for event in page.items:
            typer.echo(event.model_dump_json())
        return
    rows = []
    for event in page.items:
        letter = event.dead_letter
        consumer, reason = (letter.consumer, letter.reason) if letter else ("-", "-")
        error = _first_line(letter.error if letter else "")
        rows.append((str(event.seq), _when(event.stored_at), consumer, reason, _kind(event), error))
    table = _table(("seq", "parked at", "consumer", "reason", "type"), ("error",), rows)
    out.print(table)
    if page.more:
        err.print(f"more: add --cursor {page.cursor}", style="yellow", markup=False)


@dlq.command("show")
def dlq_show(
    seq: Annotated[int, typer.Argument(min=1, help="The entry's sequence")], as_json: JsonOption = False
) -> None:
    """One dead letter: the event as it was, and the whole error."""
    event = account.with_saved_session(lambda client: client.dead_letter(seq))
    if as_json:
        typer.echo(event.model_dump_json())
        return
    letter = event.dead_letter
    rows = {
        "seq": str(event.seq), "parked at": _when(event.stored_at), "consumer": letter.consumer if letter else "-",
        "reason": letter.reason if letter else "-", "deliveries": str(letter.deliveries if letter else "-"),
        "from": f"{letter.stream}:{letter.stream_seq} {letter.subject}" if letter else "-",
        "type": event.type or "-", "id": event.id or "-", "aggregate": event.aggregate_id or "-",
        "correlation": event.correlation_id or "-", "trace": event.trace_id or "-",
    }  # fmt: skip
    for label, value in rows.items():
        typer.echo(f"{label:<12} {value}")
    typer.echo(f"error\n{letter.error if letter else '-'}")
    typer.echo(f"data\n{json.dumps(event.data, indent=2)}")


@dlq.command("redrive")
def dlq_redrive(seq: SeqArgument) -> None:
    """Send a dead letter back to the consumer that parked it (after the fix); the entry goes."""
    done = account.with_saved_session(lambda client: client.redrive_dead_letter(seq))
    typer.echo(
        f"re-drove dead letter {done.dead_letter_seq} to {done.consumer}: {done.stream}:{done.seq} {done.subject}"
    )


def _print_page(page: EventPage, as_json: bool, *, header: bool, gaps: bool = True) -> None:
    for gap in page.gaps if gaps else []:
        _print_gap(gap, as_json)
    if as_json:
        for event in page.items:
            typer.echo(event.model_dump_json())
        return
    if not page.items and not header:
        return
    rows = [
        (_when(e.stored_at), f"{e.stream}:{e.seq}", _type(e), e.aggregate_id or "-", e.correlation_id or "-", gist(e))
        for e in page.items
    ]
    table = _table(("stored at", "stream:seq", "type"), ("aggregate", "correlation", "facts"), rows)
    out.print(table)


def _table(whole: tuple[str, ...], shrinking: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Table:
    """Columns in ``whole`` always show in full; those in ``shrinking`` give way when the terminal is narrow."""
    table = Table(box=None)
    for index, column in enumerate(whole):
        table.add_column(column, no_wrap=True, min_width=max([len(column)] + [len(row[index]) for row in rows]))
    for column in shrinking:
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # events' text is data, never markup
    return table


def _print_gap(gap: Gap, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"gap": gap.model_dump(mode="json")}))
    else:
        err.print(f"GAP: {escape(gap.detail)}", style="bold yellow")


def _print_trace(found: Trace) -> None:
    trace_ids = ", ".join(found.trace_ids) or "none"
    out.print(
        f"request {escape(found.correlation_id)} (gateway X-Request-ID)  otel trace {trace_ids}  "
        f"{len(found.steps)} events in {found.duration_ms:.0f} ms",
        highlight=False,
    )
    for gap in found.gaps:
        _print_gap(gap, as_json=False)
    for step in found.steps:
        event = step.event
        after = f" (+{step.after_cause_ms:.0f} ms)" if step.after_cause_ms is not None else ""
        if step.after_cause_ms is None and event.causation_id:
            after = f" (caused by event {event.causation_id}, outside this request)"
        line = (
            f"{step.offset_ms:>9.0f} ms  {'  ' * step.depth}{'└─ ' if step.depth else ''}{_type(event)}  "
            f"{event.aggregate_id or '-'}  {event.source or '-'}  {event.stream}:{event.seq}{after}"
        )
        if facts := gist(event):
            line += f"  {facts}"
        out.print(escape(line), highlight=False)


#: a gist's longest text value, and the longest gist (the rest is in ``--json``)
GIST_VALUE_CHARS, GIST_CHARS = 120, 400
#: a list longer than this is shown by its length alone
GIST_LIST_ITEMS = 4
#: uuids (node, owner, job ids) are told apart by their first eight characters in a gist
#: text shown without quotes in a gist: one word of names, paths and addresses
_BARE = re.compile(r"[\w.:/@+-]+")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def gist(event: StoredEvent) -> str:
    """The event's facts on one line: its data's values but the aggregate's id, the times (the table has
    them) and what is empty, ids cut to eight characters, nested values as ``…``. ``node_id=0cba2c5c
    attempt=2 exit_code=3 reason='attempt 2 of 3 failed: exit code 3; tried again in 2 s'``."""
    if not isinstance(event.data, dict):
        return ""
    changes, compared = _changes(event.data)
    facts = [
        f"{key}={_gist_value(value)}"
        for key, value in event.data.items()
        if value not in (None, [], {})
        and value != event.aggregate_id
        and not key.endswith("_at")
        and key not in compared
    ]  # an empty list or object says as little as an absent value (a job.submitted's after=[] on every job)
    line = " ".join(changes + facts)
    return line if len(line) <= GIST_CHARS else line[: GIST_CHARS - 1] + "…"


def _changes(data: dict[str, object]) -> tuple[list[str], set[str]]:
    """What changed between an object and its ``previous_`` one (a node's labels or capabilities), entry by entry:
    ``labels.gpu=null→a100 capabilities.disk_bytes=1073741824→8589934592``; and the keys so compared."""
    changes: list[str] = []
    compared: set[str] = set()
    for key, now in data.items():
        before = data.get(f"previous_{key}")
        if isinstance(now, dict) and isinstance(before, dict):
            compared |= {key, f"previous_{key}"}
            changes += [
                f"{key}.{entry}={_gist_value(before.get(entry))}→{_gist_value(now.get(entry))}"
                for entry in sorted(now.keys() | before.keys())
                if now.get(entry) != before.get(entry)
            ]
    return changes, compared


def _gist_value(value: object) -> str:
    if isinstance(value, dict):
        return "{…}"
    if isinstance(value, list):
        if len(value) > GIST_LIST_ITEMS or any(isinstance(item, dict | list) for item in value):
            return f"[{len(value)} items]"
        return "[" + ",".join(_gist_value(item) for item in value) + "]"
    if isinstance(value, bool) or not isinstance(value, str):
        return json.dumps(value)
    if _UUID.match(value):
        return value[:8]
    text = value if len(value) <= GIST_VALUE_CHARS else value[: GIST_VALUE_CHARS - 1] + "…"
    return text if _BARE.fullmatch(text) else repr(text)


def _kind(event: StoredEvent) -> str:
    kind = event.type or event.subject
    return f"{kind} (re-driven)" if event.redrive_of else kind


def _type(event: StoredEvent) -> str:
    kind = event.type or event.subject
    if event.dead_letter is not None:
        return f"DEAD LETTER ({event.dead_letter.consumer}: {event.dead_letter.reason}) {kind}"
    return f"{kind} (re-driven)" if event.redrive_of else kind


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 100 else line[:99] + "…"


@app.command()
def rebuild(
    service: Annotated[
        str,
        typer.Argument(
            help="scheduler (its node view, from registry events) or messaging (its users and node owners, from "
            "auth events)"
        ),
    ],
    read_model: Annotated[
        str | None, typer.Option("--read-model", help="Only this one (nodes; users, node_owners); else each")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Each report as a JSON document on a line")] = False,
) -> None:
    """Replay a service's events into scratch copies of its read models and diff them against the live ones.

    Exits 1 when one differs (or history is missing), like diff(1). Nothing live is written.
    """
    names = [read_model] if read_model else list(READ_MODELS.get(service, (None,)))

    async def rebuild_each(client: FogClient) -> list[RebuildReport]:
        return [await client.rebuild_read_model(service, name) for name in names]

    reports = account.with_saved_session(rebuild_each)
    for report in reports:
        if as_json:
            typer.echo(report.model_dump_json())
        else:
            _print_rebuild(report)
    if any(report.differences or report.gaps for report in reports):
        raise typer.Exit(1)


def _print_rebuild(report: RebuildReport) -> None:
    typer.echo(
        f"{report.service} {report.read_model}: replayed {report.events_replayed} events of {report.consumer} "
        f"(up to seq {report.replayed_to_seq}; {report.events_skipped} undecodable skipped); "
        f"{report.rows_live} rows live, {report.rows_rebuilt} rebuilt"
    )
    for gap in report.gaps:
        _print_gap(gap, as_json=False)
    if not report.differences:
        typer.echo("no differences")
        return
    for difference in report.differences:
        if difference.kind != "changed":
            typer.echo(f"{difference.key}: {difference.kind.replace('_', ' ')}")
        for column, (live, rebuilt) in difference.columns.items():
            typer.echo(f"{difference.key}: {column}: live {live!r}, rebuilt {rebuilt!r}")
