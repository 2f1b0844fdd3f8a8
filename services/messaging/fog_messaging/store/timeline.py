"""Each member's timeline: the changes sync reads, in position order."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from fog_shared.recorder import ContextRecorder


@dataclass(frozen=True, slots=True)
class Appended:
    """A timeline position taken in this context, and the members whose timelines got the entry."""

    position: int
    audience: Sequence[str]


_appended = ContextRecorder[Appended]("timeline_appended")


def recording_appends() -> contextlib.AbstractContextManager[list[Appended]]:
    """What :func:`append_timeline` and :func:`append_timelines` add in this context, in position
    order: once the transaction has committed, the timeline push sends exactly that."""
    return _appended.recording()


async def append_timeline(
    conn: asyncpg.Connection,
    audience: Sequence[str],
    conversation_id: uuid.UUID,
    kind: str,
    *,
    now: datetime,
    msg_seq: int | None = None,
    payload: dict[str, Any] | None = None,
) -> int:
    """Give the change the next timeline position and put it in each audience member's timeline.

    Call it last in the transaction: the head row stays locked until commit, which is what keeps
    positions visible in order."""
    position: int = await conn.fetchval("UPDATE timeline_head SET position = position + 1 RETURNING position")
    await conn.executemany(
        "INSERT INTO timeline (member_id, position, conversation_id, kind, msg_seq, payload, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(member, position, conversation_id, kind, msg_seq, payload, now) for member in audience],
    )
    _appended.note([Appended(position, audience)])
    return position


async def append_timelines(
    conn: asyncpg.Connection,
    changes: Sequence[tuple[Sequence[str], uuid.UUID, int | None]],
    kind: str,
    *,
    now: datetime,
) -> list[int]:
    """:func:`append_timeline` for several changes of one kind without payload, each an
    (audience, conversation, msg_seq): consecutive positions in their order, the head and the
    entries in one statement. Call it last in the transaction, as :func:`append_timeline`."""
    if not changes:
        return []
    members, nth, conversations, seqs = [], [], [], []
    for index, (audience, conversation_id, msg_seq) in enumerate(changes):
        for member in audience:
            members.append(member)
            nth.append(index)
            conversations.append(conversation_id)
            seqs.append(msg_seq)
    # the changes take positions head+1 .. head+n: the n-th's is the new head - n + 1 + its index
    last: int = await conn.fetchval(
        "WITH head AS (UPDATE timeline_head SET position = position + $7 RETURNING position),"
        " entries AS ("
        "   INSERT INTO timeline (member_id, position, conversation_id, kind, msg_seq, created_at)"
        "   SELECT e.member_id, head.position - $7 + 1 + e.nth, e.conversation_id, $4, e.msg_seq, $6"
        "   FROM head, unnest($1::text[], $2::int[], $3::uuid[], $5::bigint[])"
        "              AS e(member_id, nth, conversation_id, msg_seq))"
        " SELECT position FROM head",
        members,
        nth,
        conversations,
        kind,
        seqs,
        now,
        len(changes),
    )
    positions = list(range(last - len(changes) + 1, last + 1))
    _appended.note(Appended(position, audience) for position, (audience, _, _) in zip(positions, changes, strict=True))
    return positions


async def timeline_bounds(conn: asyncpg.Connection) -> tuple[int, int]:
    """(newest position, positions up to which retention may have dropped entries)."""
    row = await conn.fetchrow("SELECT position, pruned_through FROM timeline_head")
    assert row is not None
    return int(row["position"]), int(row["pruned_through"])


_ENTRY_COLUMNS = (
    "t.position, t.conversation_id, t.kind, t.payload, t.created_at, m.id AS message_id, m.seq, m.sender_id, m.text,"
    " m.client_msg_id, m.reply_to_seq, m.device_id, m.clock, m.concurrent_with, m.sent_at, m.edited_at, m.deleted_at"
)


#: the message a timeline entry ``t`` names, as ``m`` (none for changes that are not messages)
_MESSAGE_OF_ENTRY = "LEFT JOIN messages m ON m.conversation_id = t.conversation_id AND m.seq = t.msg_seq"


async def read_timeline(conn: asyncpg.Connection, member_id: str, after: int, limit: int) -> list[asyncpg.Record]:
    """The member's entries after position ``after``, with the messages they name as they are now."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_ENTRY_COLUMNS}"
        f" FROM timeline t {_MESSAGE_OF_ENTRY}"
        " WHERE t.member_id = $1 AND t.position > $2 ORDER BY t.position LIMIT $3",
        member_id,
        after,
        limit,
    )
    return rows


async def entries_at(conn: asyncpg.Connection, reads: Sequence[tuple[str, int]]) -> list[asyncpg.Record]:
    """For each (member, position): that entry of the member's timeline as :func:`read_timeline`
    gives it, in position order; one that is not there (pruned already) is left out."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {_ENTRY_COLUMNS}"
        " FROM unnest($1::text[], $2::bigint[]) AS r(member_id, position)"
        " JOIN timeline t ON t.member_id = r.member_id AND t.position = r.position"
        f" {_MESSAGE_OF_ENTRY}"
        " ORDER BY t.position",
        [member for member, _ in reads],
        [position for _, position in reads],
    )
    return rows


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What :func:`catch_up` read, all from one snapshot."""

    head: int
    pruned_through: int
    #: per read, in order: the positions found, ascending
    positions: list[list[int]]
    #: each position found, once, as :func:`read_timeline` gives it
    entries: list[asyncpg.Record]


async def catch_up(conn: asyncpg.Connection, reads: Sequence[tuple[str, int]], limit: int) -> CatchUp:
    """For each (member, after) of ``reads``: the positions of up to ``limit`` of the member's
    entries after ``after``; each entry found once; and the timeline's bounds.

    One statement, so one snapshot without a transaction: a live stream's wake-up costs one
    round trip to Postgres however many members it serves. Each position comes once, with the
    reads that found it (one member's copy stands for everyone's: a change's entry is the same
    in every timeline)."""
    rows = await conn.fetch(
        "WITH q AS (SELECT * FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS q(member_id, after, i)),"
        " found AS ("
        "   SELECT f.position, array_agg(q.i) AS readers, min(q.member_id) AS holder"
        "   FROM q CROSS JOIN LATERAL (SELECT position FROM timeline t WHERE t.member_id = q.member_id"
        "                              AND t.position > q.after ORDER BY t.position LIMIT $3) f"
        "   GROUP BY f.position)"
        f" SELECT h.position AS head, h.pruned_through, f.readers, {_ENTRY_COLUMNS}"
        " FROM timeline_head h"
        " LEFT JOIN found f ON true"
        " LEFT JOIN timeline t ON t.member_id = f.holder AND t.position = f.position"
        f" {_MESSAGE_OF_ENTRY}"
        " ORDER BY t.position",
        [member for member, _ in reads],
        [after for _, after in reads],
        limit,
    )
    positions: list[list[int]] = [[] for _ in reads]
    entries = [row for row in rows if row["readers"] is not None]
    for row in entries:  # in position order, so each read's positions come ascending
        for reader in row["readers"]:
            positions[reader - 1].append(row["position"])
    return CatchUp(int(rows[0]["head"]), int(rows[0]["pruned_through"]), positions, entries)


async def missed(conn: asyncpg.Connection, member_id: str, after: int, at_most: int) -> int:
    """How many entries the member has after ``after``, counting no further than ``at_most``."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM timeline WHERE member_id = $1 AND position > $2 LIMIT $3) s",
            member_id,
            after,
            at_most,
        )
    )


async def position_before_latest(conn: asyncpg.Connection, member_id: str, latest: int) -> int:
    """The position after which only the member's ``latest`` newest entries remain."""
    found = await conn.fetchval(
        "SELECT position FROM timeline WHERE member_id = $1 ORDER BY position DESC OFFSET $2 LIMIT 1",
        member_id,
        latest,
    )
    return int(found or 0)


async def prune_timeline(conn: asyncpg.Connection, older_than: datetime) -> int:
    """Drop timeline entries older than the retention window; syncs from before them get ``limited``."""
    async with conn.transaction():
        pruned = await conn.fetchval(
            "WITH gone AS (DELETE FROM timeline WHERE created_at < $1 RETURNING position)"
            " SELECT max(position) FROM gone",
            older_than,
        )
        if pruned is None:
            return 0
        await conn.execute("UPDATE timeline_head SET pruned_through = greatest(pruned_through, $1)", pruned)
    return int(pruned)
