"""The scheduler's Prometheus metrics: the queue, and what placement makes of it.

Labels are statuses, paths and results, never ids. Only the leading replica places, so the queue
gauges are its view; every other replica shows zeros, and a sum (or max) over replicas is the
leader's figure whichever replica leads. ``fog_scheduler_leading`` tells the two apart: summed over
replicas it is 1, and 0 when nobody places (the queue gauges then say nothing).

Jobs' outcomes are counted where every service's events are:
``fog_outbox_published_total{service="scheduler", type="scheduler.job.completed.v1"}`` and the like.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from fog_scheduler import store

log = logging.getLogger(__name__)

#: ``cycle``: by the placement loop, in batches; ``submit``: as the job was inserted (a lone job on an idle cluster)
PLACEMENTS = Counter("fog_scheduler_placements_total", "Jobs placed on a node, by where it was decided", ["path"])
#: ``placed``; ``waiting``: every fitting node is full for now; ``unplaceable``: no node could run it as it is
DECISIONS = Counter(
    "fog_scheduler_placement_decisions_total",
    "Placement decisions, by result (a job that waits is decided again)",
    ["result"],
)
CYCLE_SECONDS = Histogram(
    "fog_scheduler_placement_cycle_seconds",
    "One placement cycle: read a batch and the capacity, decide, write, push",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOBS = Gauge(
    "fog_scheduler_jobs", "Jobs not ended yet, by status (the leading replica's count; 0 elsewhere)", ["status"]
)
AFTER_OTHERS = Gauge(
    "fog_scheduler_jobs_waiting_for_jobs",
    "Pending jobs that wait for other jobs to succeed or end (their spec's after, after_any), which placement does"
    " not look at until then (the leading replica's count; 0 elsewhere)",
)
OLDEST_PENDING_S = Gauge(
    "fog_scheduler_oldest_pending_job_age_seconds",
    "Since when the oldest pending job was submitted (retries included, jobs waiting for other jobs not;"
    " the leading replica's view, 0 elsewhere)",
)
LEADING = Gauge(
    "fog_scheduler_leading", "1 on the replica that places jobs, 0 on the others (a sum of 0: nobody places)"
)
#: ``job``: ended jobs deleted after their retention (with their output); ``array``: arrays deleted as a whole
PURGED = Counter("fog_scheduler_purged_total", "What retention deleted, by kind (jobs, arrays)", ["kind"])
LIVE_STATUSES = ("pending", "assigned", "running")


def show_queue(counts: dict[str, int], oldest_pending_age_s: float, *, leading: bool) -> None:
    LEADING.set(1 if leading else 0)
    for status in LIVE_STATUSES:
        JOBS.labels(status).set(counts.get(status, 0))
    AFTER_OTHERS.set(counts.get("after_others", 0))
    OLDEST_PENDING_S.set(oldest_pending_age_s)


class QueueGauges:
    """Every ``every_s``, the leading replica counts the jobs not ended yet; the others show zeros."""

    def __init__(
        self,
        pool: Callable[[], asyncpg.Pool],
        leading: Callable[[], bool],
        wall: Callable[[], datetime],
        every_s: float,
    ) -> None:
        self._pool, self._leading, self._wall, self.every_s = pool, leading, wall, every_s

    async def refresh(self) -> None:
        if not self._leading():
            show_queue({}, 0.0, leading=False)
            return
        now = self._wall()
        async with self._pool().acquire() as conn:
            counts, oldest = await store.queue(conn)
        show_queue(counts, 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds()), leading=True)

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except (OSError, asyncpg.PostgresError):  # the database is away: readiness says so; try again later
                log.warning("the queue gauges could not be refreshed", exc_info=True)
            await asyncio.sleep(self.every_s)
