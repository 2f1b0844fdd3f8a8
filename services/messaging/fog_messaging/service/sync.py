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
    """Each query's :func:`sync`, in order; a refused query refuses only itself.

    The common case (callers a few entries behind) is one statement for all of them, one
    snapshot: their positions, each entry once. A caller with more than a page to catch up, past
    retention or with a token from the future gets the single sync, in a snapshot of its own
    (each part's ``next`` is from the snapshot its entries came from)."""
    parts: list[contract.SyncPart | MessagingError | None] = [None] * len(queries)
    readers: list[tuple[int, str, int]] = []  # (index, member, since)
    for index, query in enumerate(queries):
        try:
            readers.append((index, member_of(query.by), domain.parse_sync_token(query.since)))
        except MessagingError as refused:
            parts[index] = refused
        except Rejected as rejected:
            parts[index] = refusal(rejected)
    page = max(1, min(min(q.limit for q in queries), catch_up_max))
    caught = await store.catch_up(conn, [(me, since) for _, me, since in readers], page + 1)
    entries: dict[int, contract.SyncEntry] = {}
    wanted: set[int] = set()
    for (index, _, since), positions in zip(readers, caught.positions, strict=True):
        # all of what it missed, within retention and fewer than a page: not limited
        if caught.pruned_through <= since <= caught.head and len(positions) <= page:
            parts[index] = contract.SyncPart(
                positions=positions, next=domain.sync_token(caught.head), limited=False, more=False
            )
            wanted.update(positions)
    entries.update((row["position"], sync_entry(row)) for row in caught.entries if row["position"] in wanted)
    for index, _, _ in readers:
        if parts[index] is not None:
            continue
        # far behind, past retention or ahead of the head: the single sync, in a snapshot of its own
        try:
            reply = await sync(conn, queries[index], catch_up_max=catch_up_max)
        except MessagingError as refused:
            parts[index] = refused
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
