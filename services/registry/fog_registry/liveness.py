"""Node liveness: heartbeats in memory, status changes to Postgres, one leading replica.

Every registry replica receives every heartbeat batch and keeps the latest beat per node in
memory (``live``: what queries merge into their answers). One replica *leads* (a session
advisory lock on its own connection): it runs the state machine of :mod:`fog_registry.domain`,
persists each announced status change with its event, and writes the latest heartbeats of all
nodes in one statement per ``flush_s``. Commands (drain, deregister) may be answered by any
replica; they change the table, and the leader mirrors such changes every tick (``changed_at``).

When a replica takes the lead (at start, or after the leader died), it allows the nodes
``restart_grace_s`` before suspecting anyone: heartbeats sent while no registry listened are
not the nodes' fault. Likewise, a gateway that stalls (its batches stop, then arrive in a burst)
or a registry too busy to read them for a moment does not make nodes suspect: the silence of
each batch *source* is taken off its nodes' silence (``domain.excused_silence``). A leader that
hears no gateway at all (NATS is down, or the only gateway) is deaf (``domain.deaf``): it suspects
nobody meanwhile, and gives every node the restart grace again once it hears.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from fog_registry import domain, service, store
from fog_registry.metrics import show_liveness
from fog_shared.commands.registry import HeartbeatBatch
from fog_shared.pg.leader import LeaderLock

log = logging.getLogger(__name__)

#: commands commit a little after they stamp ``changed_at``: look back this far when mirroring
SYNC_SLACK = timedelta(seconds=5)


class LivenessMonitor:
    def __init__(
        self,
        lock: LeaderLock,
        policy: domain.LivenessPolicy,
        *,
        tick_s: float = 1.0,
        flush_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.lock, self.policy, self.tick_s = lock, policy, tick_s
        self._pool: asyncpg.Pool | None = None
        self.flush_s = flush_s if flush_s is not None else policy.interval_s
        self.clock, self.wall = clock, wall
        #: the latest beat per node, on every replica: seen_at (wall), usage, running_jobs
        self.live: dict[str, dict[str, Any]] = {}
        self.nodes: dict[str, domain.NodeLiveness] = {}
        #: when (monotonic) the latest batch of each gateway was handled
        self.sources: dict[str, float] = {}
        #: when (monotonic) the latest batch from any gateway was handled; None before the first
        self.heard_at: float | None = None
        self._deaf = False
        self.leading = False
        self.grace_until = 0.0
        self._pending: dict[str, tuple[datetime, dict[str, float], int, str | None]] = {}
        #: status changes decided but not written (their transaction failed): written with the next
        #: ones, since the nodes' state in memory has already moved on past them
        self._unwritten: list[domain.Transition] = []
        #: heartbeat batches and the tick both write node rows: one writer at a time, or their
        #: transactions can lock rows in opposite orders and deadlock
        self._writing = asyncio.Lock()
        self._synced_at = datetime.min.replace(tzinfo=UTC)
        self._next_flush = 0.0

    def attach(self, pool: asyncpg.Pool) -> None:
        """The service's pool, once it runs."""
        self._pool = pool

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the liveness monitor is not attached to a pool yet")
        return self._pool

    # -- heartbeats (every replica) --------------------------------------------------------
    async def on_batch(self, batch: HeartbeatBatch) -> None:
        now, wall = self.clock(), self.wall()
        self.heard_at = now
        if batch.source is not None:
            self.sources[batch.source] = now
        for beat in batch.heartbeats:
            usage = beat.usage.model_dump()
            self.live[beat.node_id] = {
                "seen_at": wall, "usage": usage, "running_jobs": beat.running_jobs, "agent": beat.agent
            }  # fmt: skip
        for node_id in batch.departed:
            self.live.pop(node_id, None)
        if not self.leading:
            return
        await self._adopt([b.node_id for b in batch.heartbeats if b.node_id not in self.nodes])
        transitions = []
        for beat in batch.heartbeats:
            node = self.nodes.get(beat.node_id)
            if node is None:
                continue  # deregistered, or never registered: nothing to keep alive
            usage = beat.usage.model_dump()
            self._pending[beat.node_id] = (wall, usage, beat.running_jobs, beat.agent)
            node.source, node.agent = batch.source, beat.agent
            moved = domain.on_heartbeat(
                node, now=now, seq=beat.seq, running_jobs=beat.running_jobs, usage=usage, policy=self.policy
            )
            transitions.append(moved)
        transitions += [domain.on_departure(self.nodes[n]) for n in batch.departed if n in self.nodes]
        await self._persist([t for t in transitions if t is not None])

    # -- the leader's loop -------------------------------------------------------------------
    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.step()
                except Exception:
                    log.exception("liveness step failed")
                await asyncio.sleep(self.tick_s)  # the tick period, not synchronisation
        finally:
            await self.lock.release()

    async def step(self) -> None:
        """One tick: keep or take the lead; mirror commands; suspect the silent; write beats."""
        try:
            await self._step()
        finally:
            show_liveness(self.nodes.values(), leading=self.leading, deaf=self._deaf)

    async def _step(self) -> None:
        if not self.leading:
            if not await self.lock.try_acquire():
                return
            await self._take_over()
        elif not await self.lock.still_held():
            log.warning("lost the liveness lead")
            self.leading = False
            return
        await self._mirror_commands()
        now = self.clock()
        self._grace_while_deaf(now)
        grace, policy, excuses = self.grace_until, self.policy, self._excuses(now)
        moved = [
            domain.on_tick(node, now=now, grace_until=grace, policy=policy, excused_s=excuses.get(node.source, 0.0))
            for node in self.nodes.values()
        ]
        await self._persist([t for t in moved if t is not None])
        if now >= self._next_flush:
            await self.flush()

    def _grace_while_deaf(self, now: float) -> None:
        """While no gateway is heard, and for ``restart_grace_s`` after, nobody is suspected: the nodes'
        beats were lost on their way here. A leader that never heard any gateway is not deaf: with no
        gateway, nodes cannot be heard at all, and those that are gone must go down in time."""
        if self.heard_at is None:
            return
        deaf = domain.deaf(now - self.heard_at, self.policy)
        if deaf:
            self.grace_until = max(self.grace_until, now + self.policy.restart_grace_s)
        if deaf != self._deaf:
            quiet_s = now - self.heard_at
            if deaf:
                log.warning("no gateway heard for %.1fs: no node is suspected until they are heard again", quiet_s)
            else:
                log.info("gateways heard again: nodes are suspected again after the grace period")
            self._deaf = deaf

    def _excuses(self, now: float) -> dict[str | None, float]:
        """The silence each gateway explains; gateways silent past any node's down time are
        forgotten (gateways that restarted come back under a new name)."""
        forget_after = self.policy.down_after_s + self.policy.interval_s
        for source in [s for s, at in self.sources.items() if now - at > forget_after]:
            del self.sources[source]
        return {source: domain.excused_silence(now - at, self.policy) for source, at in self.sources.items()}

    async def _take_over(self) -> None:
        now = self.clock()
        async with self.pool.acquire() as conn:
            flags = await store.live_flags(conn)
        self.nodes = {f.id: self._liveness(f, now) for f in flags}
        self.grace_until = now + self.policy.restart_grace_s
        self._unwritten = []  # the table's word replaces whatever an earlier lead left unwritten
        self._synced_at = self.wall() - SYNC_SLACK
        self._next_flush = now + self.flush_s
        self.leading = True
        log.info("leading liveness", extra={"nodes": len(self.nodes)})

    def _liveness(self, flags: store.NodeFlags, now: float) -> domain.NodeLiveness:
        # A node announced alive gets the benefit of the doubt until the grace period ends.
        seen = now if flags.status != domain.DOWN or flags.id in self.live else None
        return domain.NodeLiveness(flags.id, flags.status, draining=flags.draining, last_seen=seen)

    async def _adopt(self, node_ids: Sequence[str]) -> None:
        """Nodes registered since we took the lead (possibly by another replica)."""
        if not node_ids:
            return
        async with self.pool.acquire() as conn:
            for flags in await store.live_flags(conn, node_ids):
                self.nodes[flags.id] = domain.NodeLiveness(flags.id, flags.status, draining=flags.draining)

    async def _mirror_commands(self) -> None:
        since, self._synced_at = self._synced_at, self.wall() - SYNC_SLACK
        async with self.pool.acquire() as conn:
            changed = await store.changed_since(conn, since)
        for flags, gone in changed:
            if gone:
                self.nodes.pop(flags.id, None)
                self._pending.pop(flags.id, None)
                continue
            node = self.nodes.get(flags.id)
            if node is None:
                self.nodes[flags.id] = domain.NodeLiveness(flags.id, flags.status, draining=flags.draining)
            else:
                node.draining, node.announced = flags.draining, flags.status

    async def _persist(self, transitions: list[domain.Transition]) -> None:
        """Write status changes with their events, in one transaction; if it fails, the next call
        writes them first (the nodes in memory are already past them: deciding again would not
        announce them)."""
        transitions, self._unwritten = self._unwritten + transitions, []
        if not transitions:
            return
        # Row locks in id order, as every other writer of node rows takes them: no deadlock.
        # The sort is stable, so two changes of one node keep their order.
        ordered = sorted(transitions, key=lambda t: t.node_id)
        wall, stale = self.wall(), []
        try:
            async with self._writing, self.pool.acquire() as conn, conn.transaction():
                for transition in ordered:
                    if not await service.record_transition(conn, transition, now=wall):
                        stale.append(transition.node_id)
        except Exception:
            self._unwritten = transitions
            raise
        if stale:  # a command changed these first: take the table's word for them
            async with self.pool.acquire() as conn:
                for flags in await store.live_flags(conn, stale):
                    self.nodes[flags.id] = domain.NodeLiveness(
                        flags.id, flags.status, draining=flags.draining, last_seen=self.nodes[flags.id].last_seen
                    )

    async def flush(self) -> None:
        """Write the latest heartbeat of every node heard since the last flush, in one statement."""
        self._next_flush = self.clock() + self.flush_s
        beats, self._pending = self._pending, {}
        if not beats:
            return
        async with self._writing, self.pool.acquire() as conn:
            await store.write_heartbeats(conn, [(node_id, *beat) for node_id, beat in sorted(beats.items())])
