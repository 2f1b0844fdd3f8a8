"""Keeping Python's cyclic garbage collector from pausing the gateway for seconds.

A gateway holding 10,000 node WebSockets has millions of long-lived objects (connections,
sessions, tasks, protocol state). Every full collection traverses all of them: 2.5–2.8 s at
10,000 connections on the reference machine, during which no heartbeat is relayed and nodes
look silent (docs/performance.md). :class:`HeapFreezer` moves what has survived so far into
the collector's permanent generation every ``every_s`` (``gc.freeze``), so full collections
only traverse what is new since.

The price: a reference cycle that was frozen while alive and dies later (a closed connection,
say) is not reclaimed while frozen. So when the frozen heap has grown by ``reclaim_growth``
since the last reclaim — from new connections, or from such garbage — everything is unfrozen,
collected once, and frozen again. Memory stays within that factor of what is alive, and the
one long pause happens only after that much growth or churn, not every few seconds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Collector:
    """The parts of :mod:`gc` the freezer uses (replaced in unit tests)."""

    freeze: Callable[[], None] = gc.freeze
    unfreeze: Callable[[], None] = gc.unfreeze
    collect: Callable[[], int] = gc.collect
    frozen: Callable[[], int] = gc.get_freeze_count


class HeapFreezer:
    def __init__(
        self,
        *,
        every_s: float = 10.0,
        reclaim_growth: float = 0.5,
        reclaim_floor: int = 200_000,
        collector: Collector | None = None,
    ) -> None:
        self.every_s, self.reclaim_growth, self.reclaim_floor = every_s, reclaim_growth, reclaim_floor
        self.gc = collector or Collector()
        #: the frozen heap right after the last reclaim
        self.baseline = 0
        self.reclaims = 0

    async def run(self) -> None:
        try:
            while True:
                self.step()
                await asyncio.sleep(self.every_s)  # the freezing period
        finally:
            self.gc.unfreeze()  # a process that goes on without the gateway (a test run) gets its GC back

    def step(self) -> None:
        """Freeze what survived since the last step, or reclaim first once the heap has grown."""
        frozen = self.gc.frozen()
        if frozen > max(self.reclaim_floor, self.baseline * (1 + self.reclaim_growth)):
            self.reclaim()
        else:
            self.gc.freeze()

    def reclaim(self) -> None:
        before = self.gc.frozen()
        started = time.perf_counter()
        self.gc.unfreeze()
        unreachable = self.gc.collect()
        self.gc.freeze()
        self.baseline, self.reclaims = self.gc.frozen(), self.reclaims + 1
        log.info(
            "heap reclaimed",
            extra={
                "frozen_before": before,
                "frozen_after": self.baseline,
                "unreachable": unreachable,
                "pause_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
