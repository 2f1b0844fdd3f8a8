"""GroupCommit's batching, failure isolation and stop, with a batch function that records its
batches (the connection is a stand-in: these tests are about the queueing, not the SQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from fog_shared.pg.group_commit import GroupCommit, Stopping
from fog_shared.testing.waiting import wait_until


class StandInPool:
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[str]:
        yield "connection"


class Recorder:
    """Answers each item with its double; holds a batch while ``gate`` is shut; fails a batch
    that holds an item of ``poison``."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.poison: set[int] = set()

    async def run(self, conn: Any, items: Sequence[int]) -> list[int]:
        assert conn == "connection"
        self.batches.append(list(items))
        await self.gate.wait()
        if self.poison & set(items):
            raise ValueError(f"poisoned batch {list(items)}")
        return [item * 2 for item in items]


@contextlib.asynccontextmanager
async def running(recorder: Recorder, max_batch: int = 64) -> AsyncIterator[GroupCommit[int, int]]:
    commits: GroupCommit[int, int] = GroupCommit(lambda: StandInPool(), recorder.run, max_batch=max_batch)  # type: ignore[arg-type, return-value]
    runner = asyncio.ensure_future(commits.run())
    try:
        yield commits
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def _started(recorder: Recorder, count: int) -> bool:
    return len(recorder.batches) >= count


async def test_requests_arriving_during_a_batch_share_the_next_one() -> None:
    recorder = Recorder()
    async with running(recorder) as commits:
        recorder.gate.clear()
        first = asyncio.ensure_future(commits.submit(1))
        await wait_until(lambda: _started(recorder, 1), what="the first batch under way")
        later = [asyncio.ensure_future(commits.submit(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)  # let them queue (no timing: the gate holds the first batch)
        recorder.gate.set()
        assert await first == 2
        assert [await answer for answer in later] == [4, 6, 8]
    assert recorder.batches == [[1], [2, 3, 4]]
    assert (commits.batches, commits.requests) == (2, 4)


async def test_a_batch_holds_at_most_max_batch() -> None:
    recorder = Recorder()
    async with running(recorder, max_batch=2) as commits:
        recorder.gate.clear()
        first = asyncio.ensure_future(commits.submit(0))
        await wait_until(lambda: _started(recorder, 1), what="the first batch under way")
        later = [asyncio.ensure_future(commits.submit(n)) for n in range(1, 6)]
        await asyncio.sleep(0)
        recorder.gate.set()
        await asyncio.gather(first, *later)
    assert recorder.batches == [[0], [1, 2], [3, 4], [5]]


async def test_a_failed_batch_runs_each_request_alone_so_only_the_culprit_fails() -> None:
    recorder = Recorder()
    recorder.poison = {3}
    async with running(recorder) as commits:
        recorder.gate.clear()
        first = asyncio.ensure_future(commits.submit(1))
        await wait_until(lambda: _started(recorder, 1), what="the first batch under way")
        later = [asyncio.ensure_future(commits.submit(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        recorder.gate.set()
        assert await first == 2
        outcomes = await asyncio.gather(*later, return_exceptions=True)
    assert (outcomes[0], outcomes[2]) == (4, 8)
    assert isinstance(outcomes[1], ValueError)
    assert "[3]" in str(outcomes[1])
    assert recorder.batches == [[1], [2, 3, 4], [2], [3], [4]]


async def test_a_stop_finishes_the_batch_under_way_and_refuses_the_queued_rest() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    commits: GroupCommit[int, int] = GroupCommit(lambda: StandInPool(), recorder.run, max_batch=64)  # type: ignore[arg-type, return-value]
    runner = asyncio.ensure_future(commits.run())
    under_way = asyncio.ensure_future(commits.submit(1))
    await wait_until(lambda: _started(recorder, 1), what="the first batch under way")
    queued = asyncio.ensure_future(commits.submit(2))
    await asyncio.sleep(0)
    runner.cancel()
    await asyncio.sleep(0)
    assert not runner.done()  # held by the batch under way: a stop does not cut a commit in half
    recorder.gate.set()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await under_way == 2
    with pytest.raises(Stopping):
        await queued
    with pytest.raises(Stopping):
        await commits.submit(3)
    assert recorder.batches == [[1]]
