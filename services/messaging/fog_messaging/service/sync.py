"""Sync: everything new for the caller across conversations, in timeline order."""

from __future__ import annotations

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected
from fog_messaging.service.common import (
    member_of,
    refusal,
)
from fog_messaging.views import sync_entry
from fog_shared.commands import messaging as contract

# -- sync -------------------------------------------------------------------------------------


async def sync(conn: asyncpg.Connection, query: contract.SyncQuery, *, catch_up_max: int) -> contract.SyncReply:
    """Everything new for the caller across conversations, in timeline order, and the next token."""
    me = member_of(query.by)
    try:
        since = domain.parse_sync_token(query.since)
        # One snapshot: the head and the entries agree, so the next token skips nothing.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head, pruned_through = await store.timeline_bounds(conn)
            missed = await store.missed(conn, me, since, catch_up_max + 1)
            window = domain.sync_window(since, head, pruned_through, missed, catch_up_max)
            start = window.start
            if start is None:
                start = await store.position_before_latest(conn, me, query.limit)
            rows = await store.read_timeline(conn, me, start, query.limit + 1)
    except Rejected as rejected:
        raise refusal(rejected) from None
    more, rows = len(rows) > query.limit, rows[: query.limit]
    next_position = rows[-1]["position"] if more else head
    gap = contract.Gap(since=domain.sync_token(since), until=domain.sync_token(start)) if window.limited else None
    return contract.SyncReply(
        entries=[sync_entry(r) for r in rows], next=domain.sync_token(next_position), limited=window.limited,
        gap=gap, more=more,
    )  # fmt: skip
