"""SQL of the scheduler. Every function runs on a connection (and transaction) the caller owns.

jsonb values go in and come out as Python objects (the pool's codec, ``fog_shared.pg.pool``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

VIEW_COLUMNS = (
    "id, owner_id, name, array_id, array_index, spec, status, attempt, node_id, exit_code, duration_s, cpu_s,"
    " max_rss_bytes, error, not_before, submitted_at, started_at, finished_at, waiting_for"
)
PLACED = ("assigned", "running")


def insert_job(
    row: tuple[Any, ...], placed: tuple[str, dict[str, Any]] | None, *, waiting_max: int, waiting_for: int = 0
) -> tuple[str, list[Any]]:
    """The statement (and its arguments) that inserts one job, with the columns of :func:`insert_jobs`:
    ``pending``, or ``assigned`` to ``placed`` (node, explanation) when placement decided it at its submit.

    It returns the job's view, or nothing when the owner used its idempotency key before (the first
    job stands) or already has ``waiting_max`` jobs waiting. Run it with ``outbox.record_with``: the job
    and its events in one round trip. ``waiting_for``: how many of the jobs it is to run after are not done yet.
    """
    node_id, explain = placed if placed is not None else (None, None)
    status = "pending" if placed is None else "assigned"
    sql = (
        "INSERT INTO jobs (id, owner_id, name, array_id, array_index, spec, priority, idempotency_key, submitted_at,"
        " correlation_id, last_event_id, status, node_id, explain, assigned_at, waiting_for)"
        " SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
        " CASE WHEN $13::text IS NULL THEN NULL ELSE $9::timestamptz END, $16"
        f" WHERE ({_WAITING.format(owner='$2', limit='$15')}) < $15"
        " ON CONFLICT (owner_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
        f" RETURNING {VIEW_COLUMNS}"
    )
    return sql, [*row, status, node_id, explain, waiting_max, waiting_for]


#: how many of an owner's jobs wait, counted up to a limit (an index range of that many entries at most)
_WAITING = "SELECT count(*) FROM (SELECT FROM jobs WHERE owner_id = {owner} AND status = 'pending' LIMIT {limit}) w"


async def waiting_of(conn: asyncpg.Connection, owner_id: str, limit: int) -> int:
    """How many of the owner's jobs wait for a node, counting up to ``limit``."""
    return int(await conn.fetchval(_WAITING.format(owner="$1", limit="$2"), owner_id, limit))


async def insert_jobs(conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]], *, waiting_for: int = 0) -> None:
    """(id, owner_id, name, array_id, array_index, spec, priority, idempotency_key, submitted_at,
    correlation_id, submitted event id), each waiting for ``waiting_for`` jobs to succeed or end."""
    await conn.copy_records_to_table(
        "jobs",
        records=[(*row[:8], "pending", *row[8:], waiting_for) for row in rows],
        columns=["id", "owner_id", "name", "array_id", "array_index", "spec", "priority", "idempotency_key",
                 "status", "submitted_at", "correlation_id", "last_event_id", "waiting_for"],
    )  # fmt: skip


async def advance_chains(
    conn: asyncpg.Connection, latest: dict[uuid.UUID, str]
) -> dict[uuid.UUID, tuple[str | None, str | None]]:
    """Make each job's new latest event the one ``latest`` maps it to; for each job, (its
    correlation id, the event the new one follows from)."""
    rows = await conn.fetch(
        "UPDATE jobs SET last_event_id = r.event_id FROM unnest($1::uuid[], $2::text[]) AS r(id, event_id)"
        " JOIN jobs AS before ON before.id = r.id WHERE jobs.id = r.id"
        " RETURNING jobs.id, jobs.correlation_id, before.last_event_id",
        list(latest), list(latest.values()),
    )  # fmt: skip
    return {row["id"]: (row["correlation_id"], row["last_event_id"]) for row in rows}


async def job_by_key(conn: asyncpg.Connection, owner_id: str, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {VIEW_COLUMNS} FROM jobs WHERE owner_id = $1 AND idempotency_key = $2", owner_id, key
    )
    return row


async def insert_array(
    conn: asyncpg.Connection, array_id: uuid.UUID, owner_id: str, count: int, key: str | None, now: datetime
) -> bool:
    """False when the owner already submitted an array with this idempotency key."""
    inserted = await conn.fetchval(
        "INSERT INTO job_arrays (id, owner_id, count, idempotency_key, submitted_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT DO NOTHING RETURNING true",
        array_id, owner_id, count, key, now,
    )  # fmt: skip
    return bool(inserted)


async def array_by_key(conn: asyncpg.Connection, owner_id: str, key: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, count FROM job_arrays WHERE owner_id = $1 AND idempotency_key = $2", owner_id, key
    )
    return row


async def array_job_ids(conn: asyncpg.Connection, array_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch("SELECT id FROM jobs WHERE array_id = $1 ORDER BY array_index", array_id)
    return [str(r["id"]) for r in rows]


async def array(conn: asyncpg.Connection, array_id: uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, owner_id, count, submitted_at FROM job_arrays WHERE id = $1", array_id
    )
    return row


async def array_statuses(conn: asyncpg.Connection, array_id: uuid.UUID) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS jobs FROM jobs WHERE array_id = $1 GROUP BY status", array_id)
    return {row["status"]: row["jobs"] for row in rows}


async def lock_unended_of_array(
    conn: asyncpg.Connection, array_id: uuid.UUID, ended: Iterable[str], *, after_index: int, limit: int
) -> list[asyncpg.Record]:
    """Up to ``limit`` jobs of the array past ``after_index`` whose status is not in ``ended``, in index
    order, locked. A job another transaction holds (a placement, a node's reports) is skipped, not waited
    for: a caller that must have every one passes again."""
    return list(
        await conn.fetch(
            "SELECT id, owner_id, status, node_id, attempt, array_index, correlation_id, last_event_id FROM jobs"
            " WHERE array_id = $1 AND array_index > $2 AND NOT (status = ANY($3::text[]))"
            " ORDER BY array_index LIMIT $4 FOR UPDATE SKIP LOCKED",
            array_id, after_index, list(ended), limit,
        )
    )  # fmt: skip


async def job(conn: asyncpg.Connection, job_id: uuid.UUID, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(f"SELECT {VIEW_COLUMNS} FROM jobs WHERE id = $1{lock}", job_id)
    return row


async def jobs(conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    """These jobs' views, each with ``spec_bytes``: the size of its spec as JSON text."""
    sql = f"SELECT {VIEW_COLUMNS}, octet_length(spec::text) AS spec_bytes FROM jobs WHERE id = ANY($1::uuid[])"
    return list(await conn.fetch(sql, list(job_ids)))


async def job_detail(conn: asyncpg.Connection, job_id: uuid.UUID, columns: str) -> asyncpg.Record | None:
    sql = f"SELECT owner_id, status, {columns} FROM jobs WHERE id = $1"
    row: asyncpg.Record | None = await conn.fetchrow(sql, job_id)
    return row


async def list_jobs(
    conn: asyncpg.Connection,
    *,
    owner_id: str,
    status: str | None,
    array_id: uuid.UUID | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
    newest_first: bool = False,
    name: str | None = None,
) -> list[asyncpg.Record]:
    """A page of the owner's jobs in the order they were submitted (or the reverse), after the cursor's job; each
    with ``spec_bytes``, the size of its spec as JSON text."""
    clauses, args = ["owner_id = $1"], list[Any]([owner_id])

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if status is not None:
        clauses.append(f"status = {arg(status)}")
    if array_id is not None:
        clauses.append(f"array_id = {arg(array_id)}")
    if name is not None:
        clauses.append(f"name = {arg(name)}")  # along jobs_owner_name
    if after is not None:
        beyond = "<" if newest_first else ">"
        clauses.append(f"(submitted_at, id) {beyond} ({arg(after[0])}, {arg(after[1])})")
    order = "submitted_at DESC, id DESC" if newest_first else "submitted_at, id"  # either way along jobs_owner
    sql = (
        f"SELECT {VIEW_COLUMNS}, octet_length(spec::text) AS spec_bytes FROM jobs WHERE {' AND '.join(clauses)}"
        f" ORDER BY {order} LIMIT {arg(limit)}"
    )
    return list(await conn.fetch(sql, *args))


async def pending_batch(conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Pending jobs due now: higher priority first; within a priority the owners take turns.

    An owner's turn counts what they already have placed: an owner with ten jobs running waits
    behind one with none, however early the first one's 100,000-job array came in.
    """
    # Turns are ranked over narrow rows, and the chosen jobs come without their specs: the placement loop reads
    # each spec once (``specs_of``) and keeps it while its job waits. With 10,000 pending, carrying every spec
    # through the sort took half again as long; and under an array, most of a batch waits for a full cluster,
    # cycle after cycle, where decoding its specs again was wasted.
    return list(
        await conn.fetch(
            "WITH placed AS ("
            "  SELECT owner_id, count(*) AS n FROM jobs WHERE status IN ('assigned', 'running') GROUP BY owner_id"
            "), due AS ("
            "  SELECT j.id, j.priority, j.submitted_at,"
            "         row_number() OVER (PARTITION BY j.owner_id, j.priority ORDER BY j.submitted_at, j.id)"
            "           + coalesce(p.n, 0) AS turn"
            "  FROM jobs j LEFT JOIN placed p ON p.owner_id = j.owner_id"
            "  WHERE j.status = 'pending' AND j.waiting_for = 0 AND (j.not_before IS NULL OR j.not_before <= $1)"
            "), chosen AS (SELECT * FROM due ORDER BY priority DESC, turn, submitted_at, id LIMIT $2)"
            " SELECT j.id, j.owner_id, j.attempt, j.tried_nodes, c.priority, c.turn"
            " FROM chosen c JOIN jobs j ON j.id = c.id ORDER BY c.priority DESC, c.turn, c.submitted_at, c.id",
            now,
            limit,
        )
    )


async def specs_of(conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The specs of these jobs."""
    rows = await conn.fetch("SELECT id, spec FROM jobs WHERE id = ANY($1::uuid[])", list(job_ids))
    return {row["id"]: row["spec"] for row in rows}


async def queue(conn: asyncpg.Connection) -> tuple[dict[str, int], datetime | None]:
    """How many jobs are pending (``after_others``: of them, those waiting for other jobs), assigned and running, and
    when the oldest pending one that waits for no other job was submitted (one waiting behind a long job is not
    late).

    Each half reads its partial index once (``jobs_pending``, ``jobs_placed``), never the ended jobs.
    """
    row = await conn.fetchrow(
        "WITH pending AS (SELECT count(*) AS n, min(submitted_at) FILTER (WHERE waiting_for = 0) AS oldest,"
        "  count(*) FILTER (WHERE waiting_for > 0) AS after_others FROM jobs WHERE status = 'pending'),"
        " placed AS (SELECT count(*) FILTER (WHERE status = 'assigned') AS assigned,"
        "  count(*) FILTER (WHERE status = 'running') AS running FROM jobs WHERE status IN ('assigned', 'running'))"
        " SELECT pending.n AS pending, pending.oldest AS oldest_pending, pending.after_others, placed.assigned,"
        " placed.running"
        " FROM pending, placed"
    )
    assert row is not None
    counts = {status: int(row[status]) for status in ("pending", "assigned", "running", "after_others")}
    return counts, row["oldest_pending"]


async def next_due(conn: asyncpg.Connection, now: datetime) -> datetime | None:
    """When the first pending job that is not due at ``now`` falls due (a retry's backoff, an unplaceable one's
    next look), if any."""
    due: datetime | None = await conn.fetchval(
        "SELECT min(not_before) FROM jobs WHERE status = 'pending' AND not_before > $1", now
    )
    return due


async def assign_many(
    conn: asyncpg.Connection, placements: Sequence[tuple[uuid.UUID, str, dict[str, Any], str]], now: datetime
) -> list[asyncpg.Record]:
    """Place these pending jobs in one statement; returns the ones that were still pending.

    Each placement's last item is the id of its ``job.assigned`` event, which becomes the job's
    latest; each row returned carries the job's correlation id and the event it follows from.
    """
    rows = await conn.fetch(
        "UPDATE jobs SET status = 'assigned', node_id = p.node_id, explain = p.explain, assigned_at = $4,"
        " not_before = NULL, last_event_id = p.event_id"
        " FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $5::text[]) AS p(id, node_id, explain, event_id)"
        " JOIN jobs AS before ON before.id = p.id"
        " WHERE jobs.id = p.id AND jobs.status = 'pending'"
        " RETURNING jobs.id, jobs.owner_id, jobs.node_id, jobs.attempt, jobs.spec, jobs.correlation_id,"
        " jobs.last_event_id AS event_id, before.last_event_id AS previous_event_id",
        [p[0] for p in placements], [p[1] for p in placements], [p[2] for p in placements], now,
        [p[3] for p in placements],
    )  # fmt: skip
    return list(rows)


async def defer_many(
    conn: asyncpg.Connection, deferred: Sequence[tuple[uuid.UUID, dict[str, Any]]], not_before: datetime | None
) -> None:
    """Record why these jobs fit nowhere; with ``not_before``, look at them again only then."""
    await conn.execute(
        "UPDATE jobs SET explain = d.explain, not_before = coalesce($3, jobs.not_before)"
        " FROM unnest($1::uuid[], $2::jsonb[]) AS d(id, explain) WHERE jobs.id = d.id AND jobs.status = 'pending'",
        [d[0] for d in deferred], [d[1] for d in deferred], not_before,
    )  # fmt: skip


async def lock_jobs(conn: asyncpg.Connection, job_ids: set[uuid.UUID]) -> None:
    """Row locks in id order, so that two transactions over overlapping jobs cannot deadlock."""
    await conn.execute("SELECT 1 FROM jobs WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE", sorted(job_ids))


async def mark_started(
    conn: asyncpg.Connection, attempts: Sequence[tuple[uuid.UUID, int]], node_id: str, now: datetime
) -> list[asyncpg.Record]:
    """Assigned attempts of this node now running; the ones that moved on are left alone."""
    return list(
        await conn.fetch(
            "UPDATE jobs SET status = 'running', started_at = $4"
            " FROM unnest($1::uuid[], $2::int[]) AS r(id, attempt)"
            " WHERE jobs.id = r.id AND jobs.attempt = r.attempt AND jobs.node_id = $3 AND jobs.status = 'assigned'"
            " RETURNING jobs.id, jobs.owner_id, jobs.attempt",
            [a[0] for a in attempts], [a[1] for a in attempts], node_id, now,
        )
    )  # fmt: skip


async def placed_attempts(conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT id, owner_id, status, attempt, node_id, spec, tried_nodes FROM jobs WHERE id = ANY($1::uuid[])",
        list(job_ids),
    )
    return {row["id"]: row for row in rows}


@dataclass(frozen=True, slots=True)
class Ending:
    """A final outcome to write."""

    job_id: uuid.UUID
    status: str
    exit_code: int | None
    duration_s: float | None
    output: str | None
    truncated: bool
    error: str | None
    cpu_s: float | None = None
    max_rss_bytes: int | None = None


async def finish(conn: asyncpg.Connection, endings: Sequence[Ending], *, now: datetime) -> None:
    if not endings:
        return
    await conn.execute(
        "UPDATE jobs SET status = r.status, exit_code = r.exit_code, duration_s = r.duration_s,"
        " output = coalesce(r.output, jobs.output), output_truncated = r.truncated, error = r.error,"
        " cpu_s = r.cpu_s, max_rss_bytes = r.max_rss_bytes, finished_at = $10"
        " FROM unnest($1::uuid[], $2::text[], $3::int[], $4::float8[], $5::text[], $6::bool[], $7::text[],"
        " $8::float8[], $9::int8[])"
        " AS r(id, status, exit_code, duration_s, output, truncated, error, cpu_s, max_rss_bytes) WHERE jobs.id = r.id",
        [e.job_id for e in endings], [e.status for e in endings], [e.exit_code for e in endings],
        [e.duration_s for e in endings], [e.output for e in endings], [e.truncated for e in endings],
        [e.error for e in endings], [e.cpu_s for e in endings], [e.max_rss_bytes for e in endings], now,
    )  # fmt: skip


async def cancel_many(
    conn: asyncpg.Connection, cancels: Sequence[tuple[uuid.UUID, str, str]], *, now: datetime
) -> None:
    """These jobs (locked, not ended) cancelled, each with its ``job.cancelled`` event's id as its latest
    event and its error (why), in one statement: unlike :func:`finish` then :func:`advance_chains`, one new row
    version each and no join of the table with itself (which turns into a scan of the whole table for a thousand
    jobs)."""
    await conn.execute(
        "UPDATE jobs SET status = 'cancelled', exit_code = NULL, duration_s = NULL, output_truncated = false,"
        " error = r.error, finished_at = $4, last_event_id = r.event_id"
        " FROM unnest($1::uuid[], $2::text[], $3::text[]) AS r(id, event_id, error) WHERE jobs.id = r.id",
        [c[0] for c in cancels], [c[1] for c in cancels], [c[2] for c in cancels], now,
    )  # fmt: skip


async def output_stored(conn: asyncpg.Connection, job_id: uuid.UUID, attempt: int) -> int:
    """How many characters of the attempt's output so far are kept."""
    stored = await conn.fetchval(
        "SELECT coalesce(max(from_char + length(text)), 0) FROM job_output_so_far WHERE job_id = $1 AND attempt = $2",
        job_id, attempt,
    )  # fmt: skip
    return int(stored)


async def add_output(conn: asyncpg.Connection, job_id: uuid.UUID, attempt: int, from_char: int, text: str) -> None:
    await conn.execute(
        "INSERT INTO job_output_so_far (job_id, attempt, from_char, text) VALUES ($1, $2, $3, $4)",
        job_id, attempt, from_char, text,
    )  # fmt: skip


async def output_so_far(conn: asyncpg.Connection, job_id: uuid.UUID, attempt: int) -> str:
    text = await conn.fetchval(
        "SELECT string_agg(text, '' ORDER BY from_char) FROM job_output_so_far WHERE job_id = $1 AND attempt = $2",
        job_id, attempt,
    )  # fmt: skip
    return str(text or "")


async def forget_output_so_far(conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> None:
    """The jobs ended: their whole output is in ``jobs.output`` now."""
    await conn.execute("DELETE FROM job_output_so_far WHERE job_id = ANY($1::uuid[])", list(job_ids))


async def keep_output(
    conn: asyncpg.Connection, job_id: uuid.UUID, output: str, truncated: bool, exit_code: int | None
) -> None:
    """A cancelled job's last words, when its node reports them after the cancel."""
    await conn.execute(
        "UPDATE jobs SET output = $2, output_truncated = $3, exit_code = coalesce(exit_code, $4) WHERE id = $1",
        job_id, output, truncated, exit_code,
    )  # fmt: skip


async def keep_files(
    conn: asyncpg.Connection, job_id: uuid.UUID, attempt: int, files: Sequence[tuple[str, bytes, int, bool]]
) -> None:
    """What an attempt gave back of its outputs (path, data, size, truncated), in place of the attempt's before."""
    await conn.execute("DELETE FROM job_files WHERE job_id = $1", job_id)
    if files:
        await conn.executemany(
            "INSERT INTO job_files (job_id, path, attempt, size, truncated, data) VALUES ($1, $2, $3, $4, $5, $6)",
            [(job_id, path, attempt, size, truncated, data) for path, data, size, truncated in files],
        )


async def job_files(conn: asyncpg.Connection, job_id: uuid.UUID) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT path, attempt, size, truncated FROM job_files WHERE job_id = $1", job_id))


async def job_file(conn: asyncpg.Connection, job_id: uuid.UUID, path: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT path, attempt, size, truncated, data FROM job_files WHERE job_id = $1 AND path = $2", job_id, path
    )
    return row


async def requeue(
    conn: asyncpg.Connection, job_id: uuid.UUID, *, tried_node: str | None, not_before: datetime | None,
    error: str | None,
) -> None:  # fmt: skip
    """Back to pending for its next attempt, preferring a node it has not tried."""
    await conn.execute(
        "UPDATE jobs SET status = 'pending', attempt = attempt + 1, node_id = NULL, not_before = $3, error = $4,"
        " tried_nodes = CASE WHEN $2::text IS NULL THEN tried_nodes ELSE array_append(tried_nodes, $2) END,"
        " started_at = NULL, assigned_at = NULL WHERE id = $1",
        job_id, tried_node, not_before, error,
    )  # fmt: skip


async def placed_on(conn: asyncpg.Connection, node_id: str) -> list[asyncpg.Record]:
    """A node's placed jobs, locked in id order as report batches lock them (see :func:`lock_jobs`)."""
    return list(
        await conn.fetch(
            "SELECT id, owner_id, status, attempt, node_id, spec, tried_nodes FROM jobs"
            " WHERE node_id = $1 AND status IN ('assigned', 'running') ORDER BY id FOR UPDATE",
            node_id,
        )
    )


# -- the scheduler's view of the nodes (from registry events) -----------------------------------


async def upsert_node(
    conn: asyncpg.Connection, node_id: str, *, status: str, capabilities: dict[str, Any], labels: dict[str, str],
    region: str | None, now: datetime,
) -> None:  # fmt: skip
    await conn.execute(
        "INSERT INTO nodes (id, status, capabilities, labels, region, updated_at) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (id) DO UPDATE SET capabilities = $3, labels = $4, region = $5, updated_at = $6",
        node_id, status, capabilities, labels, region, now,
    )  # fmt: skip


async def set_node_status(conn: asyncpg.Connection, node_id: str, status: str, now: datetime) -> None:
    await conn.execute("UPDATE nodes SET status = $2, updated_at = $3 WHERE id = $1", node_id, status, now)


async def set_node_labels(conn: asyncpg.Connection, node_id: str, labels: dict[str, str], now: datetime) -> None:
    await conn.execute("UPDATE nodes SET labels = $2, updated_at = $3 WHERE id = $1", node_id, labels, now)


async def set_node_capabilities(
    conn: asyncpg.Connection, node_id: str, capabilities: dict[str, Any], now: datetime
) -> None:
    await conn.execute("UPDATE nodes SET capabilities = $2, updated_at = $3 WHERE id = $1", node_id, capabilities, now)


async def set_node_reputation(conn: asyncpg.Connection, node_id: str, reputation: float, now: datetime) -> None:
    await conn.execute("UPDATE nodes SET reputation = $2, updated_at = $3 WHERE id = $1", node_id, reputation, now)


async def delete_node(conn: asyncpg.Connection, node_id: str) -> None:
    await conn.execute("DELETE FROM nodes WHERE id = $1", node_id)


async def capacity(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Each node of the view with what placed jobs hold on it (``held_*``, null when nothing), in one round trip."""
    return list(
        await conn.fetch(
            "SELECT n.id, n.status, n.capabilities, n.labels, n.region, n.reputation,"
            " h.cpu AS held_cpu, h.memory AS held_memory, h.gpus AS held_gpus, h.disk AS held_disk"
            " FROM nodes AS n LEFT JOIN ("
            "  SELECT node_id, sum((spec->'resources'->>'cpu_cores')::float8) AS cpu,"
            "  sum((spec->'resources'->>'memory_bytes')::bigint)::bigint AS memory,"
            "  sum((spec->'resources'->>'gpus')::int)::int AS gpus,"
            "  sum(coalesce((spec->'resources'->>'disk_bytes')::bigint, 0))::bigint AS disk"
            "  FROM jobs WHERE status IN ('assigned', 'running') GROUP BY node_id"
            " ) AS h ON h.node_id = n.id ORDER BY n.id"
        )
    )


async def nodes_changed_since(conn: asyncpg.Connection, since: datetime) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM nodes WHERE updated_at >= $1)", since))


# -- retention: ended jobs deleted ---------------------------------------------------------------

#: spelled out, not a parameter, so that the partial index ``jobs_ended_alone`` applies
_ENDED_SQL = "('succeeded', 'failed', 'timed_out', 'cancelled')"


async def delete_lone_jobs_ended_before(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Up to ``limit`` jobs of no array that ended before ``before``, deleted, oldest first; their count.
    A row another transaction holds is skipped (the next round takes it)."""
    status = await conn.execute(
        "DELETE FROM jobs WHERE id IN ("
        f" SELECT id FROM jobs WHERE array_id IS NULL AND status IN {_ENDED_SQL} AND finished_at < $1"
        " ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        before, limit,
    )  # fmt: skip
    return int(status.split()[-1])


async def arrays_ended_before(conn: asyncpg.Connection, before: datetime, limit: int) -> list[uuid.UUID]:
    """Up to ``limit`` arrays, oldest first, every job of which ended before ``before``."""
    rows = await conn.fetch(
        "SELECT a.id FROM job_arrays AS a WHERE a.submitted_at < $1 AND NOT EXISTS ("
        "  SELECT FROM jobs AS j WHERE j.array_id = a.id"
        f" AND (j.status NOT IN {_ENDED_SQL} OR j.finished_at IS NULL OR j.finished_at >= $1))"
        " ORDER BY a.submitted_at LIMIT $2",
        before, limit,
    )  # fmt: skip
    return [row["id"] for row in rows]


async def delete_array_jobs(conn: asyncpg.Connection, array_id: uuid.UUID, limit: int) -> int:
    """Up to ``limit`` of the array's jobs deleted; their count."""
    status = await conn.execute(
        "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE array_id = $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        array_id, limit,
    )  # fmt: skip
    return int(status.split()[-1])


async def delete_array_if_empty(conn: asyncpg.Connection, array_id: uuid.UUID) -> bool:
    """The array's own row deleted once none of its jobs is left; whether it was."""
    status = await conn.execute(
        "DELETE FROM job_arrays WHERE id = $1 AND NOT EXISTS (SELECT FROM jobs WHERE array_id = $1)", array_id
    )
    return bool(status.split()[-1] == "1")


# -- jobs run after others ---------------------------------------------------------------------------------------


async def lock_dependencies(
    conn: asyncpg.Connection, owner_id: str, ids: Sequence[uuid.UUID]
) -> tuple[list[asyncpg.Record], set[uuid.UUID]]:
    """The owner's jobs that ``ids`` name, by themselves or as their array, locked against their ending until this
    transaction commits (in id order, as every locker of several jobs takes them); and which of ``ids`` named
    one of them (the rest name nothing of this owner's)."""
    rows = await conn.fetch(
        "SELECT id, array_id, status FROM jobs WHERE owner_id = $1 AND (id = ANY($2::uuid[]) OR array_id = ANY($2))"
        " ORDER BY id FOR SHARE",
        owner_id, list(ids),
    )  # fmt: skip
    named = {row["id"] for row in rows} | {row["array_id"] for row in rows if row["array_id"] is not None}
    return list(rows), named & set(ids)


async def insert_dependencies(
    conn: asyncpg.Connection, dependants: Sequence[uuid.UUID], dependencies: Sequence[tuple[uuid.UUID, str]]
) -> None:
    """Each of ``dependants`` waits for each of ``dependencies``: (job, what it needs of it: ``success`` or ``end``)."""
    await conn.execute(
        "INSERT INTO job_dependencies (dependency, dependant, needs)"
        " SELECT d.id, j, d.needs FROM unnest($1::uuid[], $2::text[]) AS d(id, needs), unnest($3::uuid[]) AS j",
        [job_id for job_id, _ in dependencies], [needs for _, needs in dependencies], list(dependants),
    )  # fmt: skip


async def release_dependants(
    conn: asyncpg.Connection, succeeded: Sequence[uuid.UUID], ended_otherwise: Sequence[uuid.UUID]
) -> None:
    """These jobs ended: each of their pending dependants that they satisfy (any end satisfies ``after_any``, a
    success alone ``after``) waits for one fewer.

    The dependants are locked in id order first: two nodes' reports that release the same jobs (an array waiting
    for an array) would otherwise update them in orders of their own, and deadlock."""
    await conn.execute(
        "WITH d AS (SELECT dependant, count(*) AS n FROM job_dependencies"
        "           WHERE dependency = ANY($1::uuid[]) OR (dependency = ANY($2::uuid[]) AND needs = 'end')"
        "           GROUP BY dependant),"
        " locked AS (SELECT j.id, d.n FROM jobs j JOIN d ON j.id = d.dependant WHERE j.status = 'pending'"
        "            ORDER BY j.id FOR UPDATE OF j)"
        " UPDATE jobs SET waiting_for = jobs.waiting_for - locked.n FROM locked WHERE jobs.id = locked.id",
        list(succeeded), list(ended_otherwise),
    )  # fmt: skip


async def lock_stranded_dependants(conn: asyncpg.Connection, ended: Sequence[uuid.UUID]) -> list[asyncpg.Record]:
    """The pending dependants of these jobs, which ended without succeeding, that needed them to succeed, locked in
    id order: each with the first of those jobs (``blocker``), and what cancelling it needs."""
    rows = await conn.fetch(
        "SELECT j.id, j.owner_id, j.status, j.node_id, j.attempt, j.correlation_id, j.last_event_id, d.blocker"
        " FROM (SELECT dependant, min(dependency::text) AS blocker FROM job_dependencies"
        "       WHERE dependency = ANY($1::uuid[]) AND needs = 'success' GROUP BY dependant) AS d"
        " JOIN jobs j ON j.id = d.dependant WHERE j.status = 'pending' ORDER BY j.id FOR UPDATE OF j",
        list(ended),
    )
    return list(rows)


async def waited_for(conn: asyncpg.Connection, dependant: uuid.UUID, limit: int) -> list[asyncpg.Record]:
    """The jobs ``dependant`` still waits for (to succeed, or to end), in the order they were submitted."""
    rows = await conn.fetch(
        "SELECT j.id, j.status, d.needs FROM job_dependencies d JOIN jobs j ON j.id = d.dependency"
        " WHERE d.dependant = $1"
        f"   AND CASE d.needs WHEN 'end' THEN j.status NOT IN {_ENDED_SQL} ELSE j.status <> 'succeeded' END"
        " ORDER BY j.submitted_at, j.id LIMIT $2",
        dependant, limit,
    )  # fmt: skip
    return list(rows)
