"""Group commit: requests that arrive while one transaction commits share the next one.

A request that changes state waits for its commit (an fsync), and a hot row (a counter every
request takes) stays locked until then, so one transaction per request tops out near one
request per commit time, however many arrive at once. :class:`GroupCommit` queues them and
runs whatever has queued as one batch, on one connection, one batch at a time: under load a
batch holds everything that arrived during the previous commit, and alone a request waits for
nobody.

The batch function answers every request of its batch, a refusal being an answer like any other
(each request in a savepoint of its own, typically). If the batch fails as a whole (a deadlock,
a bug one request triggers), each of its requests runs again alone, so a failure is only that
request's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg

log = logging.getLogger(__name__)

In = TypeVar("In")
Out = TypeVar("Out")
BatchFunction = Callable[[asyncpg.Connection, Sequence[In]], Awaitable[Sequence[Out]]]


class Stopping(RuntimeError):
    """The service is stopping: the request was not run (ask again, another replica answers)."""


@dataclass(slots=True)
class _Queued(Generic[In, Out]):
    item: In
    answer: asyncio.Future[Out]


class GroupCommit(Generic[In, Out]):
    def __init__(self, pool: Callable[[], asyncpg.Pool], run_batch: BatchFunction[In, Out], *, max_batch: int) -> None:
        self._pool, self._run_batch, self.max_batch = pool, run_batch, max_batch
        self._queue: asyncio.Queue[_Queued[In, Out]] = asyncio.Queue()
        self._stopped = False
        #: batches run and the requests they held, for tests and metrics
        self.batches = 0
        self.requests = 0

    async def submit(self, item: In) -> Out:
        """Run ``item`` in the next batch and return its answer (or raise what it raised alone)."""
        if self._stopped:
            raise Stopping("the service is stopping")
        answer: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Queued(item, answer))
        return await answer

    async def run(self) -> None:
        """Run batches until cancelled; then finish the batch under way and refuse the queued rest."""
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                running = asyncio.ensure_future(self._answer(batch))
                try:
                    await asyncio.shield(running)  # a stop does not cut a commit in half
                except asyncio.CancelledError:
                    with contextlib.suppress(Exception):
                        await running
                    raise
        finally:
            self._stopped = True
            while not self._queue.empty():
                queued = self._queue.get_nowait()
                if not queued.answer.done():
                    queued.answer.set_exception(Stopping("the service is stopping"))

    async def _answer(self, batch: list[_Queued[In, Out]]) -> None:
        self.batches, self.requests = self.batches + 1, self.requests + len(batch)
        try:
            async with self._pool().acquire() as conn:
                outcomes = await self._run_batch(conn, [queued.item for queued in batch])
        except Exception as error:
            if len(batch) == 1:
                if not batch[0].answer.done():
                    batch[0].answer.set_exception(error)
                return
            log.warning("a batch of %d failed; running each alone", len(batch), exc_info=True)
            for queued in batch:
                await self._answer([queued])
            return
        for queued, outcome in zip(batch, outcomes, strict=True):
            if not queued.answer.done():  # its request may have given up
                queued.answer.set_result(outcome)
