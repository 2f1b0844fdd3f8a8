"""Trimming the outbox and the inbox, so neither grows without bound.

Published outbox rows are kept a while for debugging, then deleted. Inbox rows must outlive
every way an event can come back: redelivery and re-publishing both happen only while the event
is still in its stream, so keeping them longer than the streams' retention is enough.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

log = logging.getLogger(__name__)


async def trim(conn: asyncpg.Connection, *, outbox_keep_s: float, inbox_keep_s: float) -> tuple[int, int]:
    """Delete published outbox rows and inbox rows past their keep time; returns the counts."""
    outbox = await conn.execute(
        "DELETE FROM outbox WHERE published_at < now() - make_interval(secs => $1)", outbox_keep_s
    )
    inbox = await conn.execute("DELETE FROM inbox WHERE handled_at < now() - make_interval(secs => $1)", inbox_keep_s)
    return int(outbox.split()[-1]), int(inbox.split()[-1])


async def run_housekeeping(pool: asyncpg.Pool, *, every_s: float, outbox_keep_s: float, inbox_keep_s: float) -> None:
    """Trim now and then until cancelled; a failed round is logged and tried again next time."""
    while True:
        try:
            async with pool.acquire() as conn:
                removed = await trim(conn, outbox_keep_s=outbox_keep_s, inbox_keep_s=inbox_keep_s)
            log.info("outbox and inbox trimmed", extra={"outbox_rows": removed[0], "inbox_rows": removed[1]})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("housekeeping failed", exc_info=True)
        await asyncio.sleep(every_s)
