"""Scheduler use cases: submit, see, cancel; the agents' reports; lost work; the node view.

Each takes the connection it works in; state changes and the events they cause commit together
(through the outbox). Refusals are :class:`SchedulerError` with a stable code.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

import asyncpg

from fog_scheduler import domain, store
from fog_shared.commands import scheduler as contract
from fog_shared.commands.auth import Principal
from fog_shared.commands.common import Refusal
from fog_shared.envelope import Envelope
from fog_shared.events.base import Event
from fog_shared.events.scheduler import (
    JobAssigned,
    JobCancelled,
    JobCompleted,
    JobFailed,
    JobLost,
    JobStarted,
    JobSubmitted,
)
from fog_shared.paging import InvalidCursor, decode_cursor, encode_cursor
from fog_shared.pg import outbox
from fog_shared.telemetry import correlation_id

log = logging.getLogger(__name__)
T = TypeVar("T")
SOURCE = "fog/scheduler"
#: the ids of arrays up to this size come back from the submit
ARRAY_IDS_SHOWN = 1000
CANCELLED_BY_OWNER = "cancelled by its owner"


class SchedulerError(Refusal):
    """A refusal of the scheduler service (a stable ``code`` and a detail for people)."""


def view(row: Mapping[str, Any]) -> contract.JobView:
    values = dict(row)
    values["id"] = str(values["id"])
    values["array_id"] = str(values["array_id"]) if values["array_id"] else None
    return contract.JobView(**values)


def _job_uuid(job_id: str) -> uuid.UUID:
    parsed = _maybe_uuid(job_id)
    if parsed is None:
        raise SchedulerError("not_found", "no such job")
    return parsed


def _maybe_uuid(job_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None


# -- submitting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewJob:
    """A job about to be inserted, as placement at submit sees it."""

    id: uuid.UUID
    owner_id: str
    spec: dict[str, Any]
    priority: int


@dataclass(frozen=True)
class Placement:
    """Where placement at submit puts a new job, and why (its explanation)."""

    node_id: str
    explanation: dict[str, Any]


class PlaceNew(Protocol):
    """Placement at submit, as a submit uses it (``PlacementLoop.at_submit``)."""

    async def decide(self, conn: asyncpg.Connection, job: NewJob, now: datetime) -> Placement | None:
        """Where the job goes, or ``None`` to leave it pending; reads, never writes."""

    async def preparing(self, node_id: str, assignment: dict[str, Any]) -> None:
        """The job is about to be written assigned: its node may get ready while the insert commits."""

    def assigned(self, node_id: str, assignment: dict[str, Any]) -> None:
        """The job was written assigned: its assignment is to be pushed once the transaction commits."""


async def submit(
    conn: asyncpg.Connection,
    command: contract.SubmitCommand,
    *,
    now: datetime,
    place: PlaceNew | None = None,
    waiting_max: int = domain.WAITING_MAX,
) -> dict[str, Any]:
    """One job; a repeated idempotency key returns the job it made the first time. An owner with
    ``waiting_max`` jobs waiting already is refused (``too_many_waiting``).

    With ``place``, the job may be inserted placed already (see ``PlacementLoop.at_submit``). The job and
    its events are one statement (``outbox.record_with``), after the capacity read when placing: a lone
    job's way to running starts with these two round trips.
    """
    if command.spec.after or command.spec.after_any:  # placed by the placement loop once they are done
        key = command.spec.idempotency_key
        first = None if key is None else await store.job_by_key(conn, command.owner_id, key)
        if first is not None:  # answered as before, though what it waits for may have failed since
            return {"job": view(first), "created": False}

        async def waiting() -> dict[str, Any]:
            async with conn.transaction():
                waits = await _unmet_dependencies(conn, command.owner_id, command.spec, dependants=1)
                return await _submit(conn, command, now=now, place=None, waiting_max=waiting_max, waits=waits)

        return await _retrying_deadlocks(waiting)
    return await _submit(conn, command, now=now, place=place, waiting_max=waiting_max, waits=[])


#: how many times a submit of jobs after others is tried when Postgres ends it to break a deadlock
DEADLOCK_TRIES = 3


async def _retrying_deadlocks(attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt`` (a whole transaction), tried again when Postgres chose it to end a deadlock.

    A submit locks the jobs it is to run after in id order; the placement loop writes the pending ones it places
    in one statement, in an order of its own: a submit after two jobs being placed that moment may deadlock with
    it. Postgres then ends one of the two (the loop's cycle runs again) and the submit, undone, is tried anew."""
    for tried in range(1, DEADLOCK_TRIES + 1):
        try:
            return await attempt()
        except asyncpg.DeadlockDetectedError:
            if tried == DEADLOCK_TRIES:
                raise
            log.info("a submit after other jobs met a deadlock (try %d of %d): trying again", tried, DEADLOCK_TRIES)
    raise AssertionError("unreachable")


async def _submit(
    conn: asyncpg.Connection,
    command: contract.SubmitCommand,
    *,
    now: datetime,
    place: PlaceNew | None,
    waiting_max: int,
    waits: Sequence[tuple[uuid.UUID, str]],
) -> dict[str, Any]:
    spec, owner = command.spec, command.owner_id
    event_id = str(uuid.uuid4())
    correlation = _request(event_id)
    new = NewJob(uuid.uuid4(), owner, spec.model_dump(mode="json"), spec.priority)
    placement = None if place is None else await place.decide(conn, new, now)
    made = _events_of(new, placement, event_id, correlation, now)
    if place is not None and placement is not None:
        await place.preparing(placement.node_id, made.assignment)
    row = (new.id, owner, spec.name, None, None, new.spec, spec.priority, spec.idempotency_key, now, correlation,
           made.ids[-1])  # fmt: skip
    placed = None if placement is None else (placement.node_id, placement.explanation)
    change, args = store.insert_job(row, placed, waiting_max=waiting_max, waiting_for=len(waits))
    inserted = await outbox.record_with(
        conn, change, args, made.events, source=SOURCE, causes=made.causes, ids=made.ids
    )
    if inserted and waits:
        await store.insert_dependencies(conn, [new.id], waits)
    if not inserted:  # a used key (a concurrent first use waits for its commit), or too many waiting
        first = None if spec.idempotency_key is None else await store.job_by_key(conn, owner, spec.idempotency_key)
        if first is not None:
            return {"job": view(first), "created": False}
        waiting = await store.waiting_of(conn, owner, waiting_max)
        if spec.idempotency_key is None or not domain.may_queue(waiting, 1, waiting_max):
            raise _too_many_waiting(waiting, waiting_max)  # without a key, the cap is all that refuses an insert
        raise SchedulerError("deleted", "the job this idempotency key names is gone; submit again")
    if place is not None and placement is not None:
        place.assigned(placement.node_id, made.assignment)
    return {"job": view(inserted[0]), "created": True}


@dataclass(frozen=True)
class _NewJobEvents:
    events: Sequence[Event]
    ids: Sequence[str]
    causes: Sequence[tuple[str | None, str | None]]
    assignment: dict[str, Any]  # empty when not placed


def _events_of(
    job: NewJob, placement: Placement | None, submitted_id: str, correlation: str, now: datetime
) -> _NewJobEvents:
    """``job.submitted``, and ``job.assigned`` after it when placed at its submit (caused by it)."""
    submitted = JobSubmitted(
        job_id=str(job.id), owner_id=job.owner_id, array_id=None, priority=job.priority, submitted_at=now,
        after=job.spec.get("after", []), after_any=job.spec.get("after_any", []),
    )  # fmt: skip
    if placement is None:
        return _NewJobEvents([submitted], [submitted_id], [(correlation, None)], {})
    assigned = assignment(str(job.id), 1, job.spec).model_dump(mode="json")
    placed = JobAssigned(
        job_id=str(job.id), owner_id=job.owner_id, node_id=placement.node_id, attempt=1, assignment=assigned,
        assigned_at=now,
    )  # fmt: skip
    ids, causes = [submitted_id, str(uuid.uuid4())], [(correlation, None), (correlation, submitted_id)]
    return _NewJobEvents([submitted, placed], ids, causes, assigned)


async def submit_array(
    conn: asyncpg.Connection,
    command: contract.SubmitArrayCommand,
    *,
    now: datetime,
    waiting_max: int = domain.WAITING_MAX,
) -> contract.ArrayView:
    """N jobs from one spec in one transaction (COPY); each sees its index in ``FOG_ARRAY_INDEX``. Refused
    (``too_many_waiting``) when the owner would then have more than ``waiting_max`` jobs waiting."""
    if command.request.spec.after or command.request.spec.after_any:
        return await _retrying_deadlocks(lambda: _submit_array(conn, command, now=now, waiting_max=waiting_max))
    return await _submit_array(conn, command, now=now, waiting_max=waiting_max)


async def _submit_array(
    conn: asyncpg.Connection, command: contract.SubmitArrayCommand, *, now: datetime, waiting_max: int
) -> contract.ArrayView:
    spec, count, owner = command.request.spec, command.request.count, command.owner_id
    array_id = uuid.uuid4()
    async with conn.transaction():
        if spec.idempotency_key is not None:
            await _serialise_key(conn, owner, spec.idempotency_key)
            existing = await store.array_by_key(conn, owner, spec.idempotency_key)
            if existing is not None:
                return await _array_view(conn, existing["id"], existing["count"])
        await _check_waiting(conn, owner, count, waiting_max)
        waits = await _unmet_dependencies(conn, owner, spec, dependants=count) if spec.after or spec.after_any else []
        base = spec.model_dump(mode="json")
        spec_bytes = len(json.dumps(base))
        if not domain.array_specs_fit(spec_bytes, count):
            raise SchedulerError(
                "too_large", f"{count} jobs of {spec_bytes} bytes of spec each would take more than "
                f"{domain.ARRAY_SPECS_MAX_BYTES} bytes: give them smaller files or arguments, or submit fewer at once",
            )  # fmt: skip
        await store.insert_array(conn, array_id, owner, count, spec.idempotency_key, now)
        base["idempotency_key"] = None  # the key names the array; the jobs need none of their own
        rows, events, event_ids = [], list[Event](), [str(uuid.uuid4()) for _ in range(count)]
        request = _request(str(array_id))  # one request: all the array's chains share its correlation id
        for index in range(count):
            job_id, job_spec = uuid.uuid4(), {**base, "env": {**base["env"], "FOG_ARRAY_INDEX": str(index)}}
            rows.append((job_id, owner, spec.name, array_id, index, job_spec, spec.priority, None, now, request,
                         event_ids[index]))  # fmt: skip
            events.append(JobSubmitted(job_id=str(job_id), owner_id=owner, array_id=str(array_id),
                                       priority=spec.priority, submitted_at=now, after=spec.after,
                                       after_any=spec.after_any))  # fmt: skip
        await store.insert_jobs(conn, rows, waiting_for=len(waits))
        if waits:
            await store.insert_dependencies(conn, [row[0] for row in rows], waits)
        await outbox.record_many(conn, events, source=SOURCE, causes=[(request, None)] * count, ids=event_ids)
    return contract.ArrayView(
        array_id=str(array_id), count=count, job_ids=[str(r[0]) for r in rows] if count <= ARRAY_IDS_SHOWN else None
    )


async def _unmet_dependencies(
    conn: asyncpg.Connection, owner: str, spec: contract.JobSpec, *, dependants: int
) -> list[tuple[uuid.UUID, str]]:
    """Of the jobs ``spec.after`` and ``spec.after_any`` name (jobs, or every job of an array) for ``dependants`` new
    jobs, those not done yet (not succeeded; not ended), with what is needed of each (``success``, ``end``), locked
    until the new jobs and their dependencies are written: none of them ends unseen between. Refused
    (``invalid_dependency``) when one names nothing of the owner's, or a job ``after`` names that ended without
    succeeding (the new job would never run); ``too_large`` past ``domain.DEPENDENCY_PAIRS_MAX``."""
    succeed = {uuid.UUID(entry) for entry in spec.after}
    named = [*succeed, *(uuid.UUID(entry) for entry in spec.after_any)]
    rows, found = await store.lock_dependencies(conn, owner, named)
    for entry in named:
        if entry not in found:  # someone else's job looks like none, as everywhere
            raise SchedulerError("invalid_dependency", f"after: no job or array of yours has the id {entry}")
    unmet = []
    for row in rows:  # named by itself or by its array; in after, if by either there
        needs = "success" if row["id"] in succeed or row["array_id"] in succeed else "end"
        if needs == "success" and row["status"] in contract.ENDED and row["status"] != "succeeded":
            raise SchedulerError(
                "invalid_dependency", f"after: job {row['id']} ended {row['status']}; a job after it would never run"
            )
        if not domain.dependency_met(needs, row["status"]):
            unmet.append((row["id"], needs))
    if not domain.dependencies_fit(len(unmet), dependants):
        raise SchedulerError(
            "too_large", f"{dependants} jobs each waiting for {len(unmet)} jobs make more than "
            f"{domain.DEPENDENCY_PAIRS_MAX:,} dependencies: wait for fewer jobs, or submit fewer at once",
        )  # fmt: skip
    return unmet


async def _check_waiting(conn: asyncpg.Connection, owner: str, adding: int, waiting_max: int) -> None:
    """Refuse ``adding`` more jobs to an owner who would then have more than ``waiting_max`` waiting: one owner's
    queue is ranked by every placement cycle, so without a bound it slows everyone's placements."""
    waiting = await store.waiting_of(conn, owner, waiting_max)
    if not domain.may_queue(waiting, adding, waiting_max):
        raise _too_many_waiting(waiting, waiting_max)


def _too_many_waiting(waiting: int, waiting_max: int) -> SchedulerError:
    return SchedulerError(
        "too_many_waiting",
        f"you have {waiting:,} jobs waiting for a node; at most {waiting_max:,} may wait: let some run, or cancel"
        " some, then submit again",
    )


async def _serialise_key(conn: asyncpg.Connection, owner: str, key: str) -> None:
    # Two concurrent submits with one key: the second waits, then finds the first one's job.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{owner}/{key}")


async def _array_view(conn: asyncpg.Connection, array_id: uuid.UUID, count: int) -> contract.ArrayView:
    ids = await store.array_job_ids(conn, array_id) if count <= ARRAY_IDS_SHOWN else None
    return contract.ArrayView(array_id=str(array_id), count=count, job_ids=ids)


# -- reading ---------------------------------------------------------------------------------


async def owned_job(conn: asyncpg.Connection, query: contract.JobQuery, *, for_update: bool = False) -> Any:
    row = await store.job(conn, _job_uuid(query.job_id), for_update=for_update)
    if row is None or not _may_see(query.by, row["owner_id"]):
        raise SchedulerError("not_found", "no such job")  # someone else's job looks like none
    return row


async def jobs_by_ids(conn: asyncpg.Connection, query: contract.JobsQuery) -> contract.JobViews:
    """The asker's jobs among these, in the order asked, as many as ``JOBS_REPLY_BYTES`` of specs allow;
    someone else's, and ids of no job, are left out as if they did not exist."""
    asked = [job_id for job_id in map(_maybe_uuid, query.job_ids) if job_id is not None]
    rows = {row["id"]: row for row in await store.jobs(conn, asked)}
    items, left_out, size = list[contract.JobView](), list[str](), 0
    for job_id in asked:
        row = rows.get(job_id)
        if row is None or not _may_see(query.by, row["owner_id"]):
            continue
        size += row["spec_bytes"]
        if items and size > contract.JOBS_REPLY_BYTES:
            left_out.append(str(job_id))
            continue
        items.append(view(_without_size(row)))
    return contract.JobViews(items=items, left_out=left_out)


def _may_see(by: Principal, owner_id: str) -> bool:
    return by.kind in ("user", "api_key") and (by.user_id == owner_id or "admin" in by.roles)


async def list_jobs(conn: asyncpg.Connection, query: contract.ListJobsQuery) -> contract.JobPage:
    if query.by.kind not in ("user", "api_key") or query.by.user_id is None:
        return contract.JobPage(items=[], next_cursor=None)
    array_id = _job_uuid(query.array_id) if query.array_id else None
    rows = await store.list_jobs(
        conn, owner_id=query.by.user_id, status=query.status, array_id=array_id, after=_decode_cursor(query.cursor),
        limit=query.limit + 1, newest_first=query.order == "newest", name=query.name,
    )  # fmt: skip
    page = _fitting(rows[: query.limit])  # a spec may carry a 1 MiB argv, or 512 KiB of files
    more = len(page) < len(rows)
    cursor = encode_cursor(page[-1]["submitted_at"], page[-1]["id"]) if more else None
    return contract.JobPage(items=[view(_without_size(r)) for r in page], next_cursor=cursor)


def _fitting(rows: Sequence[asyncpg.Record]) -> Sequence[asyncpg.Record]:
    """As many of ``rows`` (at least one) as ``JOBS_REPLY_BYTES`` of specs allow: a reply stays well under NATS'
    payload, and the next page starts after the last one given."""
    size = 0
    for count, row in enumerate(rows):
        size += row["spec_bytes"]
        if count and size > contract.JOBS_REPLY_BYTES:
            return rows[:count]
    return rows


def _without_size(row: asyncpg.Record) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "spec_bytes"}


def _decode_cursor(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except InvalidCursor as exc:
        raise SchedulerError("invalid_cursor", str(exc)) from None


async def job_output(conn: asyncpg.Connection, query: contract.OutputQuery) -> contract.JobOutput:
    """From ``query.offset``: the whole output of an ended job; of one placed, what its current attempt has
    printed so far; of one waiting for a retry, the output kept of the attempt before.

    The job and its output are read in one snapshot: a job that ended between two separate reads was
    answered as running with nothing printed (its pieces gone with its end), and a follower went back to
    character 0 and was given the whole output again.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _job_output(conn, query)


async def _job_output(conn: asyncpg.Connection, query: contract.OutputQuery) -> contract.JobOutput:
    job = await owned_job(conn, contract.JobQuery(job_id=query.job_id, by=query.by))
    ended, attempt = job["status"] in contract.ENDED, job["attempt"]
    if job["status"] in store.PLACED or (job["status"] == "pending" and attempt == 1):
        text = await store.output_so_far(conn, job["id"], attempt)
        return contract.JobOutput(output=text[query.offset :], truncated=False, exit_code=None, length=len(text),
                                  ended=False, attempt=attempt)  # fmt: skip
    row = await store.job_detail(conn, job["id"], "output, output_truncated, exit_code")
    assert row is not None
    text = row["output"] or ""
    return contract.JobOutput(output=text[query.offset :], truncated=row["output_truncated"],
                              exit_code=row["exit_code"], length=len(text), ended=ended,
                              attempt=attempt if ended else attempt - 1)  # fmt: skip


async def job_files(conn: asyncpg.Connection, query: contract.JobFileQuery) -> contract.JobFiles:
    """What the job gave back of its outputs: as the last attempt that ended left them."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        job = await owned_job(conn, contract.JobQuery(job_id=query.job_id, by=query.by))
        kept = {row["path"]: row for row in await store.job_files(conn, job["id"])}
    ended = job["status"] in contract.ENDED
    asked = job["spec"].get("outputs", [])
    items = [_file_info(kept[path]) for path in asked if path in kept]
    missing = [path for path in asked if path not in kept] if ended else []
    return contract.JobFiles(items=items, missing=missing, ended=ended)


async def job_file(conn: asyncpg.Connection, query: contract.JobFileQuery) -> contract.JobFile:
    job = await owned_job(conn, contract.JobQuery(job_id=query.job_id, by=query.by))
    row = None if query.path is None else await store.job_file(conn, job["id"], query.path)
    if row is None:
        raise SchedulerError("not_found", f"the job gave back no file {query.path!r}")
    return contract.JobFile(**_file_info(row).model_dump(), data=base64.b64encode(row["data"]).decode())


def _file_info(row: asyncpg.Record) -> contract.JobFileInfo:
    return contract.JobFileInfo(path=row["path"], size=row["size"], truncated=row["truncated"], attempt=row["attempt"])


async def explain(conn: asyncpg.Connection, query: contract.JobQuery) -> contract.Explanation:
    """The placement decision recorded for the job; for one still waiting for other jobs, those."""
    job = await owned_job(conn, query)
    row = await store.job_detail(conn, job["id"], "explain")
    recorded, summary, waited = (row["explain"] if row else None) or {}, None, list[contract.Waited]()
    if job["status"] == "pending" and job["waiting_for"] > 0:
        waited = [contract.Waited(job_id=str(r["id"]), status=r["status"], needs=r["needs"])
                  for r in await store.waited_for(conn, job["id"], contract.WAITED_SHOWN)]  # fmt: skip
        summary = domain.waiting_summary(job["waiting_for"], [(w.job_id, w.needs, w.status) for w in waited])
    return contract.Explanation(
        job_id=query.job_id, status=job["status"], decided_at=recorded.get("decided_at"),
        summary=summary or recorded.get("summary"), filtered=recorded.get("filtered", {}),
        candidates=recorded.get("candidates", []), waiting_for=waited,
        waiting_count=job["waiting_for"] if waited else 0,
    )  # fmt: skip


# -- cancelling ------------------------------------------------------------------------------


async def cancel(conn: asyncpg.Connection, query: contract.JobQuery, *, now: datetime) -> contract.JobView:
    """Cancelled at once; a placed job's node is told to kill it (``job.cancelled``)."""
    async with conn.transaction():
        job = await owned_job(conn, query, for_update=True)
        if job["status"] in contract.ENDED:
            return view(job)
        chain = await store.job_detail(conn, job["id"], "correlation_id, last_event_id")
        assert chain is not None
        await _cancel_locked(conn, [{**job, **chain}], now)
        updated = await store.job(conn, job["id"])
    assert updated is not None
    return view(updated)


async def _cancel_locked(
    conn: asyncpg.Connection, jobs: Sequence[Mapping[str, Any]], now: datetime, reasons: Mapping[Any, str] = {}
) -> None:
    """Cancel these jobs, locked and not ended, with one statement for all and one ``job.cancelled``
    each, which follows from the job's latest event: a placed job's node is told by it to kill the job.
    Why, by job id, where it was not its owner's asking (``reasons``). Their dependants are cancelled too."""
    if not jobs:
        return
    ids = [str(uuid.uuid4()) for _ in jobs]
    why = [reasons.get(job["id"], CANCELLED_BY_OWNER) for job in jobs]
    cancels = [(job["id"], event_id, error) for job, event_id, error in zip(jobs, ids, why, strict=True)]
    await store.cancel_many(conn, cancels, now=now)
    await store.forget_output_so_far(conn, [job["id"] for job in jobs])
    events = [
        JobCancelled(job_id=str(job["id"]), owner_id=job["owner_id"], attempt=job["attempt"], cancelled_at=now,
                     node_id=job["node_id"] if job["status"] in store.PLACED else None, reason=reasons.get(job["id"]))
        for job in jobs
    ]  # fmt: skip
    causes = [(job["correlation_id"], job["last_event_id"]) for job in jobs]
    await outbox.record_many(conn, events, source=SOURCE, causes=causes, ids=ids)
    await _after_endings(conn, [(job["id"], "cancelled") for job in jobs], now)


# -- jobs run after others -------------------------------------------------------------------


async def _after_endings(conn: asyncpg.Connection, ended: Sequence[tuple[uuid.UUID, str]], now: datetime) -> None:
    """What these jobs' endings (id, final status) mean for the jobs waiting for them: one that succeeded lets
    them wait for one fewer (placed once they wait for none), as any end does those that waited for its end; one
    that did not succeed cancels those that needed it to, and theirs in turn."""
    if not ended:  # a batch of reports that ended nothing (starts, output): no round trip
        return
    succeeded = [job_id for job_id, status in ended if status == "succeeded"]
    status_of = {job_id: status for job_id, status in ended if status != "succeeded"}
    await store.release_dependants(conn, succeeded, list(status_of))
    if not status_of:
        return
    stranded = await store.lock_stranded_dependants(conn, list(status_of))
    reasons = {
        job["id"]: domain.stranded_reason(job["blocker"], status_of[uuid.UUID(job["blocker"])]) for job in stranded
    }
    await _cancel_locked(conn, stranded, now, reasons)


# -- arrays ----------------------------------------------------------------------------------

#: jobs cancelled per transaction when a whole array is: 100,000 jobs are not one transaction
CANCEL_BATCH = 1000
#: how long cancelling an array waits, after its first pass, for jobs other transactions held; then it
#: answers as things stand
CANCEL_PATIENCE_S = 10.0
_PASS_PAUSE_S = 0.01  # what another transaction holds is released within milliseconds


async def array_summary(conn: asyncpg.Connection, query: contract.ArrayQuery) -> contract.ArraySummary:
    return await _summary(conn, await _owned_array(conn, query))


async def cancel_array(conn: asyncpg.Connection, query: contract.ArrayQuery, *, now: datetime) -> contract.ArraySummary:
    """Every job of the array that has not ended is cancelled, as :func:`cancel` cancels one, in
    transactions of ``CANCEL_BATCH`` jobs.

    A job another transaction holds at that moment (its placement, or a report of its node, being
    written) is skipped, and taken by the next pass over the array: this never waits for the hot
    path's row locks, so it cannot deadlock with them. Asked again, it cancels whatever is left, and
    changes nothing that has ended.
    """
    array = await _owned_array(conn, query)
    await _cancel_pass(conn, array["id"], now)
    deadline = time.monotonic() + CANCEL_PATIENCE_S  # for what the first pass skipped, however long it took
    while (summary := await _summary(conn, array)).ended < summary.count and time.monotonic() < deadline:
        await asyncio.sleep(_PASS_PAUSE_S)
        await _cancel_pass(conn, array["id"], now)
    return summary


async def _cancel_pass(conn: asyncpg.Connection, array_id: uuid.UUID, now: datetime) -> None:
    after = -1
    while True:
        async with conn.transaction():
            jobs = await store.lock_unended_of_array(conn, array_id, contract.ENDED, after_index=after,
                                                     limit=CANCEL_BATCH)  # fmt: skip
            await _cancel_locked(conn, jobs, now)
        if len(jobs) < CANCEL_BATCH:
            return
        after = jobs[-1]["array_index"]


async def _owned_array(conn: asyncpg.Connection, query: contract.ArrayQuery) -> asyncpg.Record:
    array_id = _maybe_uuid(query.array_id)
    row = None if array_id is None else await store.array(conn, array_id)
    if row is None or not _may_see(query.by, row["owner_id"]):
        raise SchedulerError("not_found", "no such array")  # someone else's array looks like none
    return row


async def _summary(conn: asyncpg.Connection, array: asyncpg.Record) -> contract.ArraySummary:
    statuses = await store.array_statuses(conn, array["id"])
    ended = sum(jobs for status, jobs in statuses.items() if status in contract.ENDED)
    return contract.ArraySummary.model_validate(
        {"array_id": str(array["id"]), "count": array["count"], "submitted_at": array["submitted_at"],
         "statuses": statuses, "ended": ended}
    )  # fmt: skip


# -- what agents report ----------------------------------------------------------------------


async def record_reports(conn: asyncpg.Connection, command: contract.ReportsCommand, *, now: datetime) -> None:
    """A node's reports, in one transaction with one statement per kind of change (a job array's
    reports arrive by the thousand). Reports of stale attempts (the job moved on) change nothing,
    and a report sent again (the agent resends what was not acked) changes nothing twice."""
    node_id, events = command.node_id, list[Event]()
    started: dict[tuple[uuid.UUID, int], contract.Started] = {}
    finished: dict[tuple[uuid.UUID, int], contract.Finished] = {}
    printed: list[tuple[uuid.UUID, contract.OutputSoFar]] = []
    for report in command.reports:
        job_id = _maybe_uuid(report.job_id)
        if job_id is None:
            continue  # no such job: nothing to change, and nothing to hold the node's other reports up
        if isinstance(report, contract.OutputSoFar):
            printed.append((job_id, report))
            continue
        reports: dict[Any, Any] = started if isinstance(report, contract.Started) else finished
        reports.setdefault((job_id, report.attempt), report)  # the first of a resent report counts
    async with conn.transaction():
        await store.lock_jobs(conn, {job_id for job_id, _ in [*started, *finished]} | {job for job, _ in printed})
        if started:
            for row in await store.mark_started(conn, list(started), node_id, now):
                events.append(JobStarted(job_id=str(row["id"]), owner_id=row["owner_id"], node_id=node_id,
                                         attempt=row["attempt"], started_at=now))  # fmt: skip
        if finished:
            jobs = await store.placed_attempts(conn, [job_id for job_id, _ in finished])
            endings: list[store.Ending] = []
            for (job_id, attempt), done in finished.items():
                job = jobs.get(job_id)
                if job is not None and job["attempt"] == attempt and job["node_id"] == node_id:
                    events += await _finished(conn, job, node_id, done, now, endings)
            await store.finish(conn, endings, now=now)
            await _after_endings(conn, [(ending.job_id, ending.status) for ending in endings], now)
            if endings:
                await store.forget_output_so_far(conn, [ending.job_id for ending in endings])
        if printed:
            await _keep_output_so_far(conn, printed, node_id)
        await record_for_jobs(conn, events)


async def _keep_output_so_far(
    conn: asyncpg.Connection, printed: Sequence[tuple[uuid.UUID, contract.OutputSoFar]], node_id: str
) -> None:
    """What running attempts printed, each piece kept once: a resent piece adds only what is new, and a
    piece of an attempt that has ended or moved on is dropped (its whole output comes with its end)."""
    jobs = await store.placed_attempts(conn, list({job_id for job_id, _ in printed}))
    for job_id, piece in printed:
        job = jobs.get(job_id)
        if (
            job is None
            or job["status"] not in store.PLACED
            or (job["node_id"], job["attempt"]) != (node_id, piece.attempt)
        ):
            continue
        stored = await store.output_stored(conn, job_id, piece.attempt)
        new = domain.unseen_output(stored, piece.offset, piece.data)
        if new:
            await store.add_output(conn, job_id, piece.attempt, stored, new)


async def _finished(
    conn: asyncpg.Connection,
    job: asyncpg.Record,
    node_id: str,
    report: contract.Finished,
    now: datetime,
    endings: list[store.Ending],
) -> list[Event]:
    """The events of one finished attempt; its ending, if final, goes to ``endings`` (written in
    one statement for the batch), the rarer retries and cancellations are written here."""
    job_id, owner, spec = job["id"], job["owner_id"], job["spec"]
    if job["status"] == "cancelled":
        await store.keep_output(conn, job_id, report.output, report.output_truncated, report.exit_code)
        await _keep_files(conn, job, report)
        return []
    if job["status"] not in store.PLACED:
        return []
    await _keep_files(conn, job, report)
    if report.outcome == "failed" and domain.after_failure(job["attempt"], spec["max_attempts"]) == "retry":
        delay = domain.retry_delay_s(spec["retry_backoff_s"], job["attempt"])
        await store.requeue(conn, job_id, tried_node=node_id, not_before=now + timedelta(seconds=delay),
                            error=report.error or f"exit code {report.exit_code}")  # fmt: skip
        await store.keep_output(conn, job_id, report.output, report.output_truncated, report.exit_code)
        return [_attempt_failed(job, node_id, report, now, retry_in_s=delay)]
    endings.append(store.Ending(job_id, report.outcome, report.exit_code, report.duration_s, report.output,
                                report.output_truncated, report.error, report.cpu_s, report.max_rss_bytes))  # fmt: skip
    if report.outcome == "succeeded":
        return [JobCompleted(job_id=str(job_id), node_id=node_id, exit_code=report.exit_code or 0, completed_at=now,
                             owner_id=owner, duration_s=report.duration_s, cpu_s=report.cpu_s)]  # fmt: skip
    if report.outcome == "cancelled":
        return [JobCancelled(job_id=str(job_id), owner_id=owner, node_id=node_id, attempt=report.attempt,
                             cancelled_at=now)]  # fmt: skip
    return [_attempt_failed(job, node_id, report, now, retry_in_s=None)]


async def _keep_files(conn: asyncpg.Connection, job: asyncpg.Record, report: contract.Finished) -> None:
    """The files the attempt gave back, of those its job asked for; nothing is written for a job that asked none
    (most: a report's batch stays one statement per kind of change for them)."""
    asked = set(job["spec"].get("outputs", ()))
    if not asked:
        return
    files = [(f.path, base64.b64decode(f.data), f.size, f.truncated) for f in report.files if f.path in asked]
    await store.keep_files(conn, job["id"], report.attempt, files)


def _attempt_failed(
    job: asyncpg.Record, node_id: str, report: contract.Finished, now: datetime, *, retry_in_s: float | None
) -> JobFailed:
    attempt, max_attempts = job["attempt"], job["spec"]["max_attempts"]
    reason = domain.failure_reason(
        attempt=attempt, max_attempts=max_attempts, timed_out=report.outcome == "timed_out",
        exit_code=report.exit_code, error=report.error, retry_in_s=retry_in_s,
    )  # fmt: skip
    return JobFailed(
        job_id=str(job["id"]), node_id=node_id, reason=reason, node_fault=False, failed_at=now,
        owner_id=job["owner_id"], attempt=attempt, exit_code=report.exit_code, retried=retry_in_s is not None,
        duration_s=report.duration_s, cpu_s=report.cpu_s,
    )  # fmt: skip


async def node_assignments(conn: asyncpg.Connection, node_id: str) -> contract.NodeAssignments:
    """What the node should be running: sent again when its agent (re)connects."""
    rows = await conn.fetch(
        "SELECT id, attempt, spec FROM jobs WHERE node_id = $1 AND status IN ('assigned', 'running')", node_id
    )
    return contract.NodeAssignments(assignments=[assignment(str(r["id"]), r["attempt"], r["spec"]) for r in rows])


def assignment(job_id: str, attempt: int, spec: dict[str, Any]) -> contract.Assignment:
    return contract.Assignment(
        job_id=job_id, attempt=attempt, command=spec["command"], env=spec["env"], timeout_s=spec["timeout_s"],
        resources=contract.Resources(**spec["resources"]), network=spec.get("network", "host"),
        files=spec.get("files", {}), outputs=spec.get("outputs", []),
    )  # fmt: skip


# -- nodes, as the registry announces them ---------------------------------------------------


async def node_went_down(
    conn: asyncpg.Connection, node_id: str, *, now: datetime, caused_by: Envelope | None = None
) -> None:
    """Its placed jobs are lost: back to pending (another node preferred) while attempts remain."""
    for job in await store.placed_on(conn, node_id):
        owner, attempt = job["owner_id"], job["attempt"]
        lost = JobLost(job_id=str(job["id"]), owner_id=owner, node_id=node_id, attempt=attempt, lost_at=now)
        await record_for_job(conn, job["id"], lost, caused_by=caused_by)
        if domain.after_failure(attempt, job["spec"]["max_attempts"]) == "retry":
            await store.requeue(conn, job["id"], tried_node=node_id, not_before=None, error=f"lost on {node_id}")
        else:
            ending = store.Ending(job["id"], "failed", None, None, None, False, f"lost on {node_id}; no attempts left")
            await store.finish(conn, [ending], now=now)
            await _after_endings(conn, [(job["id"], "failed")], now)
            event = JobFailed(job_id=str(job["id"]), node_id=node_id, reason=f"attempt {attempt} lost on its node; "
                              "no attempts left", node_fault=True, failed_at=now, owner_id=owner, attempt=attempt,
                              retried=False)  # fmt: skip
            await record_for_job(conn, job["id"], event)


# -- each job's causal chain -----------------------------------------------------------------


def _request(fallback: str) -> str:
    """The correlation id of the request being served (the gateway's request id)."""
    return correlation_id() or fallback


async def record_for_jobs(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    """:func:`record_for_job` for many events of many jobs (in order; a job may have several),
    with one statement for the chains and one for the outbox."""
    if not events:
        return
    ids = [str(uuid.uuid4()) for _ in events]
    latest = {uuid.UUID(event.aggregate_id): event_id for event, event_id in zip(events, ids, strict=True)}
    chains = await store.advance_chains(conn, latest)
    causes: list[tuple[str | None, str | None]] = []
    for event, event_id in zip(events, ids, strict=True):
        job_id = uuid.UUID(event.aggregate_id)
        correlation, previous = chains.get(job_id, (None, None))
        causes.append((correlation, previous))
        chains[job_id] = (correlation, event_id)  # the job's next event in this batch follows this one
    await outbox.record_many(conn, events, source=SOURCE, causes=causes, ids=ids)


async def record_for_job(
    conn: asyncpg.Connection, job_id: uuid.UUID, event: Event, *, caused_by: Envelope | None = None
) -> Envelope:
    """Record a job's event in the chain of the request that submitted it.

    It follows from the job's previous event, or from ``caused_by`` (another service's event, such
    as a node going down), so that a trace of the submit request reaches the job's last event.
    """
    event_id = str(uuid.uuid4())
    chains = await store.advance_chains(conn, {job_id: event_id})
    correlation, previous = chains.get(job_id, (None, None))
    cause = caused_by.id if caused_by is not None else previous
    return await outbox.record(
        conn, event, source=SOURCE, correlation_id=correlation, causation_id=cause, event_id=event_id
    )
