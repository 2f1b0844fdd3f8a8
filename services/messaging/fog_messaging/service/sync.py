"""Sync: everything new for the caller across conversations, in timeline order; for one caller,
or for many callers at once from one snapshot (a gateway's woken live streams)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected
from fog_messaging.service.common import MessagingError, member_of, refusal
from fog_messaging.views import sync_entry
from fog_shared.commands import messaging as contract


async def sync(conn: asyncpg.Connection, query: contract.SyncQuery, *, catch_up_max: int) -> contract.SyncReply:
    """Everything new for the caller across conversations, in timeline order, and the next token."""
    me = member_of(query.by)
    try:
        since = domain.parse_sync_token(query.since)
        # One snapshot: the head and the entries agree, so the next token skips nothing.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head, pruned_through = await store.timeline_bounds(conn)
            return await _sync_in_snapshot(conn, me, since, query.limit, head, pruned_through, catch_up_max)
    except Rejected as rejected:
        raise refusal(rejected) from None


@dataclass(frozen=True, slots=True)
class SyncedMany:
    """What :func:`sync_many` found: each entry once, by position, and each query's part."""

    entries: dict[int, contract.SyncEntry]
    parts: list[contract.SyncPart | MessagingError]


async def sync_many(
    conn: asyncpg.Connection, queries: Sequence[contract.SyncQuery], *, catch_up_max: int
) -> SyncedMany:
    """Each query's :func:`sync`, all from one snapshot, in order; a refused query refuses only itself.

    The common case (callers a few entries behind) is two statements for all of them: their
    positions, then each entry once. A caller with more than a page to catch up, or past
    retention, gets the single sync's full treatment."""
    parts: list[contract.SyncPart | MessagingError | None] = [None] * len(queries)
    readers: list[tuple[int, str, int]] = []  # (index, member, since)
    for index, query in enumerate(queries):
        try:
            readers.append((index, member_of(query.by), domain.parse_sync_token(query.since)))
        except MessagingError as refused:
            parts[index] = refused
        except Rejected as rejected:
            parts[index] = refusal(rejected)
    entries: dict[int, contract.SyncEntry] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        head, pruned_through = await store.timeline_bounds(conn)
        page = max(1, min(min(q.limit for q in queries), catch_up_max))
        cheap = [(i, me, since) for i, me, since in readers if pruned_through <= since <= head]
        found = await store.timeline_positions(conn, [(me, since) for _, me, since in cheap], page + 1)
        holders: dict[int, str] = {}  # a member whose timeline holds the position
        for (index, me, _), positions in zip(cheap, found, strict=True):
            if len(positions) <= page:  # all of what it missed, fewer than catch_up_max: not limited
                parts[index] = contract.SyncPart(
                    positions=positions, next=domain.sync_token(head), limited=False, more=False
                )
                holders.update((position, me) for position in positions if position not in holders)
        if holders:
            for row in await store.timeline_entries(conn, [(me, position) for position, me in holders.items()]):
                entries[row["position"]] = sync_entry(row)
        for index, me, since in readers:
            if parts[index] is None:
                try:
                    reply = await _sync_in_snapshot(
                        conn, me, since, queries[index].limit, head, pruned_through, catch_up_max
                    )
                except Rejected as rejected:
                    parts[index] = refusal(rejected)
                    continue
                entries.update((entry.position, entry) for entry in reply.entries)
                parts[index] = contract.SyncPart(
                    positions=[entry.position for entry in reply.entries], next=reply.next, limited=reply.limited,
                    gap=reply.gap, more=reply.more,
                )  # fmt: skip
    answered = [part for part in parts if part is not None]
    assert len(answered) == len(queries)  # every query was answered or refused above
    return SyncedMany(entries, answered)


async def _sync_in_snapshot(
    conn: asyncpg.Connection, me: str, since: int, limit: int, head: int, pruned_through: int, catch_up_max: int
) -> contract.SyncReply:
    missed = await store.missed(conn, me, since, catch_up_max + 1)
    window = domain.sync_window(since, head, pruned_through, missed, catch_up_max)
    start = window.start
    if start is None:
        start = await store.position_before_latest(conn, me, limit)
    rows = await store.read_timeline(conn, me, start, limit + 1)
    more, rows = len(rows) > limit, rows[:limit]
    gap = contract.Gap(since=domain.sync_token(since), until=domain.sync_token(start)) if window.limited else None
    return _reply(rows, head, more=more, gap=gap)


def _reply(
    rows: Sequence[asyncpg.Record], head: int, *, more: bool, gap: contract.Gap | None = None
) -> contract.SyncReply:
    next_position = rows[-1]["position"] if more else head
    return contract.SyncReply(
        entries=[sync_entry(r) for r in rows], next=domain.sync_token(next_position), limited=gap is not None,
        gap=gap, more=more,
    )  # fmt: skip
