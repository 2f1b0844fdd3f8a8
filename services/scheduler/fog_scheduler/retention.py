"""Retention: an ended job is deleted, with its output and its explanation, some time after it ended.

A job of no array goes once it has been ended for ``keep_ended_jobs_s``. An array goes as a whole once
its last job has: while it is kept, its summary counts every one of its jobs. Jobs not ended are never
deleted, however old.

Deleting is done in transactions of ``batch`` jobs, rows another transaction holds are skipped (the
next round takes them), so placement and the nodes' reports never wait on a purge. Only the replica
that leads placement purges: the others would only find the same rows.

An idempotency key goes with its job: once the job is deleted, a submit with the same key makes a new
one. Events are not touched; a job's stay in its stream is the stream's retention.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from fog_scheduler import store
from fog_scheduler.metrics import PURGED

log = logging.getLogger(__name__)

#: arrays looked at per read; a round reads again while the last read was full and made progress
ARRAYS_PER_READ = 500


@dataclass(frozen=True, slots=True)
class Purged:
    """What one round deleted."""

    jobs: int = 0
    arrays: int = 0


async def purge(conn: asyncpg.Connection, *, ended_before: datetime, batch: int) -> Purged:
    """Delete what ended before ``ended_before``: lone jobs, then whole arrays, ``batch`` jobs per transaction."""
    lone = await _purge_lone_jobs(conn, ended_before, batch)
    array_jobs, arrays = await _purge_arrays(conn, ended_before, batch)
    return Purged(jobs=lone + array_jobs, arrays=arrays)


async def _purge_lone_jobs(conn: asyncpg.Connection, ended_before: datetime, batch: int) -> int:
    return await _in_batches(conn, lambda: store.delete_lone_jobs_ended_before(conn, ended_before, batch), batch)


async def _purge_arrays(conn: asyncpg.Connection, ended_before: datetime, batch: int) -> tuple[int, int]:
    jobs = arrays = 0
    while True:
        ended = await store.arrays_ended_before(conn, ended_before, ARRAYS_PER_READ)
        gone = 0
        for array_id in ended:
            jobs += await _delete_array_jobs(conn, array_id, batch)
            async with conn.transaction():
                gone += await store.delete_array_if_empty(conn, array_id)
        arrays += gone
        # An array whose rows were held stays, and would be read again: stop when a read made no progress.
        if len(ended) < ARRAYS_PER_READ or not gone:
            return jobs, arrays


async def _delete_array_jobs(conn: asyncpg.Connection, array_id: uuid.UUID, batch: int) -> int:
    return await _in_batches(conn, lambda: store.delete_array_jobs(conn, array_id, batch), batch)


async def _in_batches(conn: asyncpg.Connection, delete: Callable[[], Awaitable[int]], batch: int) -> int:
    """``delete()`` (at most ``batch`` rows), each in a transaction of its own, until it deletes fewer; the count."""
    deleted = 0
    while True:
        async with conn.transaction():
            count = await delete()
        deleted += count
        if count < batch:
            return deleted


class JobRetention:
    """Every ``every_s``, the leading replica deletes what ended more than ``keep_s`` ago."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        leading: Callable[[], bool],
        wall: Callable[[], datetime],
        *,
        keep_s: float,
        every_s: float,
        batch: int,
    ) -> None:
        self._pool, self._leading, self._wall = pool, leading, wall
        self.keep_s, self.every_s, self.batch = keep_s, every_s, batch

    async def round(self) -> Purged | None:
        """One round, or None on a replica that does not lead."""
        if not self._leading():
            return None
        ended_before = self._wall() - timedelta(seconds=self.keep_s)
        async with self._pool().acquire() as conn:
            purged = await purge(conn, ended_before=ended_before, batch=self.batch)
        PURGED.labels("job").inc(purged.jobs)
        PURGED.labels("array").inc(purged.arrays)
        if purged.jobs:
            log.info(
                "ended jobs deleted",
                extra={"jobs": purged.jobs, "arrays": purged.arrays, "ended_before": ended_before.isoformat()},
            )
        return purged

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception:  # the database away, or a fault: the next round tries again, and the log says why
                log.warning("ended jobs could not be deleted this round", exc_info=True)
            await asyncio.sleep(self.every_s)  # a period, not a synchronisation
