"""The scheduler gate: while the scheduler does not answer, one node session asks again, and the rest wait for it."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from fog_gateway import scheduler_gate
from fog_gateway.problems import Problem
from fog_gateway.scheduler_gate import Retries, SchedulerGate
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.testing.waiting import wait_until

SESSIONS = 200


class Scheduler:
    """Away until told otherwise; counts who asked while it was away."""

    def __init__(self) -> None:
        self.away = True
        self.unanswered: list[int] = []

    async def ask(self, session: int) -> str:
        await asyncio.sleep(0)  # a call takes a turn of the loop, as a real one does
        if self.away:
            self.unanswered.append(session)
            raise ServiceUnavailable("fog.qry.scheduler.node_assignments.v1", "no responders")
        return f"answer for {session}"


@pytest.fixture(autouse=True)
def short_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler_gate, "RETRY_S", 0.02)
    monkeypatch.setattr(scheduler_gate, "RETRY_MAX_S", 0.08)


async def session(number: int, gate: SchedulerGate, scheduler: Scheduler) -> str:
    """As a node session's catch-up: ask until answered."""
    retries = Retries(gate)
    while True:
        try:
            return await retries.ask(scheduler.ask(number))
        except ServiceUnavailable:
            await retries.wait()


async def test_while_the_scheduler_is_away_one_session_asks_again_and_every_session_gets_its_answer_after() -> None:
    gate, scheduler = SchedulerGate(random.Random(1)), Scheduler()
    sessions = [asyncio.create_task(session(n, gate, scheduler)) for n in range(SESSIONS)]

    async def retried_five_times() -> bool:
        return len(scheduler.unanswered) >= SESSIONS + 5

    await wait_until(retried_five_times, timeout=10, what="five retries while the scheduler is away")
    scheduler.away = False
    answers = await asyncio.wait_for(asyncio.gather(*sessions), timeout=10)
    assert answers == [f"answer for {n}" for n in range(SESSIONS)]
    asked = Counter(scheduler.unanswered)
    [(prober, times)] = asked.most_common(1)
    assert times >= 6  # the prober asked again and again...
    assert all(asked[n] == 1 for n in range(SESSIONS) if n != prober)  # ...every other session once, on its own
    assert not gate.away


async def test_when_the_prober_is_gone_another_session_asks_in_its_place() -> None:
    gate, scheduler = SchedulerGate(random.Random(2)), Scheduler()
    sessions = [asyncio.create_task(session(n, gate, scheduler)) for n in range(10)]

    async def retried() -> bool:
        return len(scheduler.unanswered) > 10

    await wait_until(retried, timeout=10, what="a retry")
    [(prober, _)] = Counter(scheduler.unanswered).most_common(1)  # the one that asked again
    sessions[prober].cancel()  # its connection closed

    async def another_retried() -> bool:
        return any(n != prober and times > 1 for n, times in Counter(scheduler.unanswered).items())

    await wait_until(another_retried, timeout=10, what="another session asking in the prober's place")
    scheduler.away = False
    others = [task for number, task in enumerate(sessions) if number != prober]
    assert len(await asyncio.wait_for(asyncio.gather(*others), timeout=10)) == 9


async def test_a_scheduler_that_answers_with_an_error_is_not_away() -> None:
    gate = SchedulerGate(random.Random(3))
    retries = Retries(gate)

    async def refused() -> str:
        raise Problem(422, "Unprocessable", "a report it cannot take")

    with pytest.raises(Problem):
        await retries.ask(refused())
    assert not gate.away
    await asyncio.wait_for(retries.wait(), timeout=5)  # its own delay, not the gate's turn
    assert (retries.tries, gate.away) == (1, False)
