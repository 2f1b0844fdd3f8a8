"""SQL of the registry. Every function runs on a connection (and transaction) the caller owns.

jsonb values go in and come out as Python objects (the pool's codec, ``fog_shared.pg.pool``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

COLUMNS = (
    "id, owner_id, name, capabilities, labels, region, location, status, status_changed_at, draining,"
    " last_heartbeat_at, usage, running_jobs, reputation, registered_at, agent,"
    " attempts_succeeded, attempts_failed, attempts_lost, run_s, cpu_s"
)
#: the columns of a node's contribution (``contract.Contribution``'s fields)
CONTRIBUTION = ("attempts_succeeded", "attempts_failed", "attempts_lost", "run_s", "cpu_s")


@dataclass(frozen=True, slots=True)
class NodeFlags:
    """What the liveness leader mirrors from the table."""

    id: str
    status: str
    draining: bool


async def insert_node(
    conn: asyncpg.Connection,
    *,
    node_id: str,
    owner_id: str,
    name: str,
    capabilities: dict[str, Any],
    labels: dict[str, str],
    region: str | None,
    location: dict[str, float] | None,
    status: str,
    now: datetime,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO nodes (id, owner_id, name, capabilities, labels, region, location, status,"
        " status_changed_at, rep_updated_at, registered_at, changed_at)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9, $9) RETURNING {COLUMNS}",
        node_id, owner_id, name, capabilities, labels, region, location, status, now,
    )  # fmt: skip
    return row


async def node(conn: asyncpg.Connection, node_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM nodes WHERE id = $1 AND deregistered_at IS NULL{lock}", node_id
    )
    return row


async def list_nodes(
    conn: asyncpg.Connection,
    *,
    owner_id: str | None,
    status: str | None,
    labels: dict[str, str],
    min_cpu_cores: int | None,
    min_memory_bytes: int | None,
    limit: int,
) -> list[asyncpg.Record]:
    clauses, args = ["deregistered_at IS NULL"], list[Any]()

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if owner_id is not None:
        clauses.append(f"owner_id = {arg(owner_id)}")
    if status is not None:
        clauses.append(f"status = {arg(status)}")
    if labels:
        clauses.append(f"labels @> {arg(labels)}::jsonb")
    if min_cpu_cores is not None:
        clauses.append(f"(capabilities->>'cpu_cores')::bigint >= {arg(min_cpu_cores)}")
    if min_memory_bytes is not None:
        clauses.append(f"(capabilities->>'memory_bytes')::bigint >= {arg(min_memory_bytes)}")
    sql = f"SELECT {COLUMNS} FROM nodes WHERE {' AND '.join(clauses)} ORDER BY registered_at, id LIMIT {arg(limit)}"
    return list(await conn.fetch(sql, *args))


async def set_status(
    conn: asyncpg.Connection, node_id: str, *, previous: str, status: str, now: datetime, bump: bool = False
) -> bool:
    """Only from ``previous``: a concurrent drain or deregistration wins over a liveness move."""
    changed = ", changed_at = $4" if bump else ""
    updated = await conn.fetchval(
        f"UPDATE nodes SET status = $3, status_changed_at = $4{changed}"
        " WHERE id = $1 AND status = $2 AND deregistered_at IS NULL RETURNING true",
        node_id, previous, status, now,
    )  # fmt: skip
    return bool(updated)


async def set_labels(conn: asyncpg.Connection, node_id: str, labels: dict[str, str], now: datetime) -> None:
    await conn.execute("UPDATE nodes SET labels = $2, changed_at = $3 WHERE id = $1", node_id, labels, now)


async def set_capabilities(conn: asyncpg.Connection, node_id: str, capabilities: dict[str, Any], now: datetime) -> None:
    await conn.execute("UPDATE nodes SET capabilities = $2, changed_at = $3 WHERE id = $1", node_id, capabilities, now)


async def set_draining(conn: asyncpg.Connection, node_id: str, now: datetime, *, draining: bool) -> None:
    await conn.execute("UPDATE nodes SET draining = $3, changed_at = $2 WHERE id = $1", node_id, now, draining)


async def deregister(conn: asyncpg.Connection, node_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE nodes SET status = 'deregistered', status_changed_at = $2, deregistered_at = $2, changed_at = $2"
        " WHERE id = $1",
        node_id,
        now,
    )


async def changed_since(conn: asyncpg.Connection, since: datetime) -> list[tuple[NodeFlags, bool]]:
    """Nodes changed by commands since ``since``: their flags, and whether they are deregistered."""
    rows = await conn.fetch(
        "SELECT id, status, draining, deregistered_at IS NOT NULL AS gone FROM nodes WHERE changed_at >= $1", since
    )
    return [(NodeFlags(r["id"], r["status"], r["draining"]), r["gone"]) for r in rows]


async def live_flags(conn: asyncpg.Connection, node_ids: Sequence[str] | None = None) -> list[NodeFlags]:
    if node_ids is None:
        rows = await conn.fetch("SELECT id, status, draining FROM nodes WHERE deregistered_at IS NULL")
    else:
        rows = await conn.fetch(
            "SELECT id, status, draining FROM nodes WHERE deregistered_at IS NULL AND id = ANY($1::text[])",
            list(node_ids),
        )
    return [NodeFlags(r["id"], r["status"], r["draining"]) for r in rows]


async def write_heartbeats(
    conn: asyncpg.Connection, beats: Sequence[tuple[str, datetime, dict[str, float], int, str | None]]
) -> None:
    """One statement for a whole batch (heartbeats are never a transaction each), after the rows are
    locked in id order. The update alone locks them in whatever order its plan meets them (a hash
    join: the table's), and deadlocks with a reputation batch that holds one and waits for another."""
    if not beats:
        return
    ids = [b[0] for b in beats]
    async with conn.transaction():
        await conn.execute("SELECT FROM nodes WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE", ids)
        await conn.execute(
            "UPDATE nodes SET last_heartbeat_at = b.seen_at, usage = b.usage, running_jobs = b.running_jobs,"
            " agent = b.agent FROM unnest($1::text[], $2::timestamptz[], $3::jsonb[], $4::int[], $5::text[])"
            " AS b(id, seen_at, usage, running_jobs, agent) WHERE nodes.id = b.id",
            ids, [b[1] for b in beats], [b[2] for b in beats], [b[3] for b in beats], [b[4] for b in beats],
        )  # fmt: skip


async def reputation(conn: asyncpg.Connection, node_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT reputation, rep_successes, rep_failures, rep_updated_at FROM nodes WHERE id = $1 FOR UPDATE",
        node_id,
    )
    return row


async def set_reputation(
    conn: asyncpg.Connection, node_id: str, *, score: float | None, successes: float, failures: float, now: datetime
) -> None:
    await conn.execute(
        "UPDATE nodes SET reputation = coalesce($2, reputation), rep_successes = $3, rep_failures = $4,"
        " rep_updated_at = $5 WHERE id = $1",
        node_id, score, successes, failures, now,
    )  # fmt: skip


async def add_contribution(
    conn: asyncpg.Connection, node_id: str, *, succeeded: int, failed: int, lost: int, run_s: float, cpu_s: float
) -> None:
    await conn.execute(
        "UPDATE nodes SET attempts_succeeded = attempts_succeeded + $2, attempts_failed = attempts_failed + $3,"
        " attempts_lost = attempts_lost + $4, run_s = run_s + $5, cpu_s = cpu_s + $6 WHERE id = $1",
        node_id,
        succeeded,
        failed,
        lost,
        run_s,
        cpu_s,
    )
