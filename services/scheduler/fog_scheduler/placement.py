"""The placement loop: one leading replica places pending jobs in batches.

Each cycle takes a snapshot (the node view, minus what placed jobs hold), reads a batch of due
pending jobs in fair-share order, decides each with :func:`fog_scheduler.domain.place`, and
writes all decisions of the batch (and their ``job.assigned`` events) in one transaction: no
commit per job. Once that commits, the batch's assignments are pushed to the gateways
(:mod:`fog_scheduler.assignment_push`), ahead of their events. A cycle starts when jobs arrive or
change (a NOTIFY, or a submit on this replica), when the node view changes, or every ``idle_s``
at the latest.

Placing at submit: while this replica leads and its last cycle left no due job waiting, a job
submitted here is decided before its insert, which writes it placed (:meth:`PlacementLoop.at_submit`),
so a lone job on an idle cluster waits for no cycle and no second commit. Nothing is overtaken: with
jobs waiting, or a cycle deciding, submits leave their jobs to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from fog_scheduler import domain, service, store
from fog_scheduler.metrics import CYCLE_SECONDS, DECISIONS, PLACEMENTS
from fog_shared.events.base import Event
from fog_shared.events.scheduler import JobAssigned
from fog_shared.pg import outbox
from fog_shared.pg.leader import LeaderLock
from fog_shared.pg.pool import connect

log = logging.getLogger(__name__)
#: specs of pending jobs kept between cycles, at most (a spec is a few hundred bytes)
SPECS_KEPT = 50_000

#: a job no node could ever run is looked at again after this long (nodes may join meanwhile)
UNPLACEABLE_RETRY = timedelta(seconds=5)

#: hands a committed batch's assignments to the gateways: ``{"node_id": ..., "assignment": {...}}`` each
Push = Callable[[list[dict[str, Any]]], Awaitable[None]]


class Prepare(Protocol):
    """Tells a node of a job placed at submit before the insert commits (``assignment_push.PreparationPusher``)."""

    async def prepare(self, node_id: str, assignment: dict[str, Any]) -> None: ...

    async def withdraw(self, node_id: str, job_id: str, attempt: int) -> None: ...


def request_of(spec: dict[str, Any], tried: list[str]) -> domain.Request:
    resources, constraints = spec["resources"], spec["constraints"]
    return domain.Request(
        cpu_cores=resources["cpu_cores"], memory_bytes=resources["memory_bytes"], gpus=resources["gpus"],
        labels=constraints["labels"], region=constraints["region"], arch=constraints["arch"],
        affinities=tuple((a["label"], a["value"], a["weight"]) for a in spec["affinities"]), avoid=frozenset(tried),
        network=spec.get("network", "host"),  # a job submitted before jobs could ask has the node's own
        disk_bytes=resources.get("disk_bytes", 0),  # nor did it state a disk
    )  # fmt: skip


def node_of(row: asyncpg.Record) -> domain.NodeCapacity:
    caps = row["capabilities"]
    return domain.NodeCapacity(
        node_id=row["id"], status=row["status"], cpu_cores=float(caps["cpu_cores"]),
        memory_bytes=int(caps["memory_bytes"]), gpus=len(caps.get("gpus", [])), arch=caps["arch"],
        region=row["region"], labels=row["labels"], reputation=row["reputation"],
        networks=frozenset(caps.get("networks", ("host",))),  # registered before nodes said: their own alone
        disk_bytes=int(caps.get("disk_bytes", 0)),
    )  # fmt: skip


class PlacementLoop:
    def __init__(
        self,
        lock: LeaderLock,
        policy: domain.PlacementPolicy,
        *,
        dsn: str,
        schema: str,
        batch_size: int = 500,
        idle_s: float = 1.0,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        push: Push | None = None,
        place_at_submit: bool = True,
        prepare: Prepare | None = None,
    ) -> None:
        self.lock, self.policy, self.dsn, self.schema = lock, policy, dsn, schema
        self.push, self.place_at_submit, self.prepare = push, place_at_submit, prepare
        #: held from a decision's reads to its commit: a cycle and a submit never decide on the same capacity
        self._deciding = asyncio.Lock()
        self._leading = False
        #: the last cycle found no due job left behind, and nothing arrived since (``wake`` counts arrivals)
        self._drained = False
        #: when the first pending job that was not due yet (a retry in its backoff) falls due, as that cycle saw
        self._next_due: datetime | None = None
        self._arrivals = 0
        self.batch_size, self.idle_s, self.wall = batch_size, idle_s, wall
        self._pool: asyncpg.Pool | None = None
        self._wake = asyncio.Event()
        self._rotation = itertools.count()
        self._explained: set[uuid.UUID] = set()
        #: the nodes' facts (``NodeCapacity.facts``) at the last cycle: while they hold, an explained job stays so
        self._fleet: list[tuple[object, ...]] = []
        self._spec_cache: dict[uuid.UUID, dict[str, Any]] = {}
        #: when each owner last had a job placed (a counter): ties in turn go to whoever waited longest
        self._served: dict[str, int] = {}
        self._serving = itertools.count(1)

    def attach(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @property
    def leading(self) -> bool:
        """Whether this replica holds the lead: the one that places."""
        return self._leading

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the placement loop is not attached to a pool yet")
        return self._pool

    def wake(self) -> None:
        self._arrivals += 1
        self._drained = False
        self._wake.set()

    async def run(self) -> None:
        listener: asyncpg.Connection | None = None
        try:
            while True:
                self._take_or_keep_the_lead(await self._try_to_lead())
                if not self._leading:
                    await asyncio.sleep(self.idle_s)  # a standby: try for the lead again later
                    continue
                listener = await self._listening(listener)
                try:
                    busy = await self.cycle()
                except Exception:
                    log.exception("placement cycle failed")
                    busy = False
                if not busy:
                    await self._idle()
        finally:
            self._leading = False
            if listener is not None:
                await listener.close()
            await self.lock.release()

    async def _try_to_lead(self) -> bool:
        # Whatever goes wrong here must not end the loop: a scheduler that serves but never places again
        # looks alive to everything but its jobs.
        try:
            return await self.lock.try_acquire()
        except Exception:
            log.exception("placement could not ask for the lead; trying again")
            return False

    def _take_or_keep_the_lead(self, leading: bool) -> None:
        # Logged at each change only: an operator sees which replica places, and since when.
        if leading and not self._leading:
            log.info("placing jobs: this replica leads placement")
        elif self._leading and not leading:
            log.warning("no longer placing jobs: the placement lead was lost")
        self._leading = leading

    async def _listening(self, listener: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """A live connection that hears of new work, or None while the database cannot be reached.

        The connection dies with its server (a restart, a failover). Without a new one the loop would
        hear of nothing and place jobs once per ``idle_s`` only: its death wakes the loop, which listens
        again, and the first cycle after finds whatever became pending meanwhile.
        """
        if listener is not None and not listener.is_closed():
            return listener
        fresh: asyncpg.Connection | None = None
        try:
            fresh = await connect(self.dsn, self.schema)
            await fresh.add_listener(f"{self.schema}_pending", lambda *_: self.wake())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if fresh is not None:
                fresh.terminate()
            log.warning("placement cannot listen for new jobs yet: %s", exc)
            return None
        fresh.add_termination_listener(lambda _: self.wake())
        self.wake()  # jobs may have become pending while nobody listened
        return fresh

    async def _idle(self) -> None:
        timeout = self.idle_s
        if self._next_due is not None:  # a retry's backoff ends sooner: decide it then, not up to idle_s later
            timeout = max(0.0, min(timeout, (self._next_due - self.wall()).total_seconds()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=timeout)
        self._wake.clear()

    async def cycle(self) -> bool:
        """Place one batch; True when there may be more to place right away."""
        with CYCLE_SECONDS.time():
            return await self._cycle()

    async def _cycle(self) -> bool:
        async with self._deciding:
            arrivals, now = self._arrivals, self.wall()
            async with self.pool.acquire() as conn:
                jobs = await store.pending_batch(conn, now, self.batch_size)
                nodes = await self._capacity(conn) if jobs else []
                specs = await self._specs(conn, jobs)
            if jobs:  # no jobs, no nodes read: not a change of the nodes
                self._forget_explanations_if_changed(nodes)
            placed, waiting, unplaceable = self._decide([{**job, "spec": specs[job["id"]]} for job in jobs], nodes, now)
            pushed: list[dict[str, Any]] = []
            if jobs:
                async with self.pool.acquire() as conn, conn.transaction():
                    pushed = await self._assign(conn, placed, now)
                    if waiting:
                        await store.defer_many(conn, waiting, None)
                    if unplaceable:
                        await store.defer_many(conn, unplaceable, now + UNPLACEABLE_RETRY)
                PLACEMENTS.labels("cycle").inc(len(pushed))
            # Jobs that wait for capacity are ahead of any new one; unplaceable ones are not due for a while.
            left_behind = bool(waiting) or len(jobs) == self.batch_size
            self._drained = not left_behind and arrivals == self._arrivals
            # Once drained, what falls due next is ahead of any new job. Else jobs wait here anyway (for
            # capacity), and a retry falling due is found by the next cycle, as it always was.
            self._next_due = None
            if self._drained:
                async with self.pool.acquire() as conn:
                    self._next_due = await store.next_due(conn, now)
        await self._push(pushed)
        return len(jobs) == self.batch_size and bool(placed)

    @contextlib.asynccontextmanager
    async def at_submit(self) -> AsyncIterator[PlaceAtSubmit | None]:
        """Around a submit: a ``PlaceAtSubmit`` when its job may be placed as it is inserted, else ``None``.

        The insert must commit inside the block: the decision holds the capacity it read until then.
        Once the block is left without an error, the job's assignment is pushed (or the loop woken).
        """
        if not self._may_place_at_submit():
            yield None
            return
        placing = PlaceAtSubmit(self)
        try:
            async with self._deciding:
                yield placing
        finally:
            if not placing.pushed:
                await placing.withdraw()  # not committed: the node need not wait for it
        if placing.pushed:
            PLACEMENTS.labels("submit").inc(len(placing.pushed))
            await self._push(placing.pushed)
        elif placing.missed:
            self.wake()  # the loop decides it, and records why it waits

    def _may_place_at_submit(self) -> bool:
        """This replica leads, no cycle runs, and no job is due: none waits, and no retry's backoff has ended."""
        if not (self.place_at_submit and self._leading and self._drained) or self._deciding.locked():
            return False
        return self._next_due is None or self.wall() < self._next_due

    def _decide_new(
        self, job: service.NewJob, nodes: list[domain.NodeCapacity], now: datetime
    ) -> service.Placement | None:
        candidate = {"id": job.id, "owner_id": job.owner_id, "spec": job.spec, "priority": job.priority,
                     "tried_nodes": [], "turn": 0}  # fmt: skip
        placed, _, _ = self._decide([candidate], nodes, now)
        if not placed:
            self._explained.discard(job.id)  # not explained here: the loop does it, once
            return None
        _, node_id, explanation = placed[0]
        return service.Placement(node_id, explanation)

    async def _specs(self, conn: asyncpg.Connection, jobs: list[asyncpg.Record]) -> dict[uuid.UUID, dict[str, Any]]:
        """The jobs' specs, read once each: a job waiting for a full cluster is in batch after batch."""
        missing = [job["id"] for job in jobs if job["id"] not in self._spec_cache]
        if missing:
            if len(self._spec_cache) > SPECS_KEPT:  # placed and ended jobs leave theirs: keep it bounded
                self._spec_cache.clear()
                missing = [job["id"] for job in jobs]
            self._spec_cache.update(await store.specs_of(conn, missing))
        # A spec never changes; a job ranked here has one (jobs are never deleted).
        return {job["id"]: self._spec_cache[job["id"]] for job in jobs}

    def _forget_explanations_if_changed(self, nodes: list[domain.NodeCapacity]) -> None:
        """Once the nodes themselves change (one goes down, another comes), every waiting job is explained anew:
        it may now fit nowhere, whatever becomes free, or somewhere new."""
        fleet = [node.facts() for node in nodes]
        if fleet != self._fleet:
            self._fleet = fleet
            self._explained.clear()

    async def _capacity(self, conn: asyncpg.Connection) -> list[domain.NodeCapacity]:
        """The node view minus what placed jobs hold."""
        nodes = []
        for row in await store.capacity(conn):
            node = node_of(row)
            node.take(domain.Request(row["held_cpu"] or 0.0, row["held_memory"] or 0, row["held_gpus"] or 0,
                                     disk_bytes=row["held_disk"] or 0))  # fmt: skip
            nodes.append(node)
        return nodes

    async def _assign(
        self, conn: asyncpg.Connection, placed: list[tuple[uuid.UUID, str, dict[str, Any]]], now: datetime
    ) -> list[dict[str, Any]]:
        """Write these decisions and their ``job.assigned`` events; the assignments to push once committed."""
        if not placed:
            return []
        decided = [(job_id, node, why, str(uuid.uuid4())) for job_id, node, why in placed]
        rows = await store.assign_many(conn, decided, now)
        events: list[Event] = []
        pushed: list[dict[str, Any]] = []
        for row in rows:
            assignment = service.assignment(str(row["id"]), row["attempt"], row["spec"]).model_dump(mode="json")
            events.append(JobAssigned(
                job_id=str(row["id"]), owner_id=row["owner_id"], node_id=row["node_id"],
                attempt=row["attempt"], assignment=assignment, assigned_at=now,
            ))  # fmt: skip
            pushed.append({"node_id": row["node_id"], "assignment": assignment})
        # Each assignment follows from its job's previous event, in the request that submitted it.
        causes = [(row["correlation_id"], row["previous_event_id"]) for row in rows]
        ids = [row["event_id"] for row in rows]
        await outbox.record_many(conn, events, source=service.SOURCE, causes=causes, ids=ids)
        return pushed

    async def _push(self, pushed: list[dict[str, Any]]) -> None:
        if pushed and self.push is not None:  # committed: the nodes may start these now
            await self.push(pushed)

    def _decide(
        self, jobs: list[asyncpg.Record], nodes: list[domain.NodeCapacity], now: datetime
    ) -> tuple[list[tuple[uuid.UUID, str, dict[str, Any]]], list[tuple[uuid.UUID, dict[str, Any]]],
               list[tuple[uuid.UUID, dict[str, Any]]]]:  # fmt: skip
        placed, waiting, unplaceable = [], [], []
        by_id = {node.node_id: node for node in nodes}
        served = self._served
        room = domain.FreeRoom(nodes)
        jobs = sorted(jobs, key=lambda j: (-j["priority"], j["turn"], served.get(j["owner_id"], 0)))  # stable
        for job in jobs:
            request = request_of(job["spec"], job["tried_nodes"])
            if job["id"] in self._explained and not room.may_hold(request):
                continue  # it waits, explained already: under an array, most of each batch, cycle after cycle
            decision = domain.place(request, nodes, self.policy, start=next(self._rotation))
            explanation = {
                "decided_at": now.isoformat(), "summary": decision.summary(len(nodes)),
                "filtered": decision.filtered, "candidates": decision.candidates,
            }  # fmt: skip
            if decision.node_id is not None:
                by_id[decision.node_id].take(request)
                room.taken()
                placed.append((job["id"], decision.node_id, explanation))
                self._spec_cache.pop(job["id"], None)
                served[job["owner_id"]] = next(self._serving)
                self._explained.discard(job["id"])
            elif decision.waits_for_capacity:
                if len(self._explained) > 100_000:  # ended jobs leave no trace here; keep it bounded
                    self._explained.clear()
                if job["id"] not in self._explained:  # once: a full cluster must not rewrite every row
                    self._explained.add(job["id"])
                    waiting.append((job["id"], explanation))
            else:
                unplaceable.append((job["id"], explanation))
        DECISIONS.labels("placed").inc(len(placed))
        DECISIONS.labels("waiting").inc(len(jobs) - len(placed) - len(unplaceable))
        DECISIONS.labels("unplaceable").inc(len(unplaceable))
        return placed, waiting, unplaceable


class PlaceAtSubmit:
    """Decides where one job being submitted goes (see ``PlacementLoop.at_submit``).

    It only reads (the capacity) and decides: the submit inserts the job placed, with its events, in one
    statement, then names the assignment to push once ``at_submit``'s block is left.
    """

    def __init__(self, loop: PlacementLoop) -> None:
        self._loop = loop
        self.pushed: list[dict[str, Any]] = []
        self.missed = False
        self._prepared: tuple[str, str, int] | None = None  # node, job, attempt

    async def decide(self, conn: asyncpg.Connection, job: service.NewJob, now: datetime) -> service.Placement | None:
        nodes = await self._loop._capacity(conn)  # a database error fails the submit, as any of its statements would
        try:
            placement = self._loop._decide_new(job, nodes, now)
        except Exception:  # a bug in a rule must not cost the user their submit: the loop takes the job
            log.exception("placing job %s at its submit failed; the placement loop takes it", job.id)
            placement = None
        self.missed = placement is None
        return placement

    async def preparing(self, node_id: str, assignment: dict[str, Any]) -> None:
        if self._loop.prepare is not None:
            self._prepared = (node_id, assignment["job_id"], assignment["attempt"])
            await self._loop.prepare.prepare(node_id, assignment)

    async def withdraw(self) -> None:
        if self._loop.prepare is not None and self._prepared is not None:
            await self._loop.prepare.withdraw(*self._prepared)

    def assigned(self, node_id: str, assignment: dict[str, Any]) -> None:
        self.pushed = [{"node_id": node_id, "assignment": assignment}]
