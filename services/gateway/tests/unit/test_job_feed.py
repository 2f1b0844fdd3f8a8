"""The gateway's job feed hands assignments to nodes once each, whether pushed or from their
events, and never a re-driven copy of one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, cast

from fastapi import WebSocket
from nats.aio.msg import Msg

from fog_gateway.calls import ServiceCalls
from fog_gateway.job_feed import JobFeed, JobWatchers
from fog_gateway.node_link import NodeLinks
from fog_shared.bus.consumer import H_REDRIVE_FOR
from fog_shared.commands.auth import Principal
from fog_shared.commands.gateway import AssignmentPush, NodeAssignment, Preparation
from fog_shared.commands.scheduler import GET_JOBS, MAX_JOBS_PER_QUERY, Assignment, JobsQuery, Resources
from fog_shared.events.scheduler import JobAssigned, JobSubmitted
from fog_shared.testing.waiting import wait_until


class Links:
    """Nodes connected here (all of them unless told otherwise), and what was sent to each."""

    def __init__(self, connected: set[str] | None = None) -> None:
        self.connected = connected
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, node_id: str, message: dict[str, Any]) -> bool:
        if self.connected is not None and node_id not in self.connected:
            return False
        self.sent.append((node_id, message))
        return True


def assigned(headers: dict[str, str] | None, job_id: str = "j1", attempt: int = 1, node_id: str = "n1") -> Msg:
    event = JobAssigned(
        job_id=job_id, owner_id="u1", node_id=node_id, attempt=attempt,
        assignment={"job_id": job_id, "attempt": attempt}, assigned_at=datetime.now(UTC),
    )  # fmt: skip
    return Msg(_client=cast(Any, None), subject=event.TYPE.subject, data=event.to_json(), headers=headers)


def pushed(job_id: str = "j1", attempt: int = 1, node_id: str = "n1") -> AssignmentPush:
    assignment = Assignment(
        job_id=job_id, attempt=attempt, command=["true"], env={}, timeout_s=60.0, resources=Resources()
    )
    return AssignmentPush(assignments=[NodeAssignment(node_id=node_id, assignment=assignment)])


async def push_to(feed: JobFeed, push: AssignmentPush) -> None:
    await feed.on_push(push, push.model_dump(mode="json"))  # as the push receiver hands it over


async def prepare(feed: JobFeed, preparation: Preparation) -> None:
    await feed.on_preparation(preparation, preparation.model_dump(mode="json"))


def jobs_sent(links: Links) -> list[tuple[str, str, int]]:
    return [(node, message["job_id"], message["attempt"]) for node, message in links.sent]


async def test_an_assignment_reaches_its_node_but_a_redriven_copy_does_not() -> None:
    links = Links()
    feed = JobFeed(cast(NodeLinks, links), JobWatchers(), cast(ServiceCalls, None))
    await feed._on_event(assigned({H_REDRIVE_FOR: "registry__job_outcomes"}))
    assert links.sent == []
    await feed._on_event(assigned(None))
    assert links.sent == [("n1", {"type": "assignment", "job_id": "j1", "attempt": 1})]


async def test_a_pushed_assignment_is_not_sent_again_when_its_event_comes() -> None:
    links = Links()
    feed = JobFeed(cast(NodeLinks, links), JobWatchers(), cast(ServiceCalls, None))
    await push_to(feed, pushed("j1"))
    assert links.sent[0] == ("n1", {"type": "assignment", **pushed("j1").assignments[0].assignment.model_dump()})
    await feed._on_event(assigned(None, "j1"))
    await feed._on_event(assigned(None, "j1", attempt=2))  # another attempt is another assignment
    assert jobs_sent(links) == [("n1", "j1", 1), ("n1", "j1", 2)]
    await push_to(feed, pushed("j1", attempt=2))  # a push that comes after its event: not sent either
    await feed._on_event(assigned(None, "j1"))  # a third copy (a redelivery) is sent: agents ignore it
    assert jobs_sent(links) == [("n1", "j1", 1), ("n1", "j1", 2), ("n1", "j1", 1)]
    assert feed.copies_skipped == 2


async def test_an_assignment_not_sent_here_does_not_hold_back_its_other_copy() -> None:
    links = Links(connected=set())
    feed = JobFeed(cast(NodeLinks, links), JobWatchers(), cast(ServiceCalls, None))
    await push_to(feed, pushed("j1"))  # the node is not connected here (yet)
    links.connected = {"n1"}
    await feed._on_event(assigned(None, "j1"))
    assert jobs_sent(links) == [("n1", "j1", 1)]


async def test_a_preparation_and_its_withdrawal_reach_the_node_and_hold_back_no_assignment() -> None:
    links = Links()
    feed = JobFeed(cast(NodeLinks, links), JobWatchers(), cast(ServiceCalls, None))
    assignment = pushed("j1").assignments[0].assignment
    await prepare(feed, Preparation(node_id="n1", job_id="j1", attempt=1, assignment=assignment))
    await prepare(feed, Preparation(node_id="n1", job_id="j1", attempt=1))
    assert links.sent == [
        ("n1", {"type": "prepare", **assignment.model_dump(mode="json")}),
        ("n1", {"type": "withdraw", "job_id": "j1", "attempt": 1}),
    ]
    await push_to(feed, pushed("j1"))  # a preparation is no copy of the assignment
    assert links.sent[-1] == ("n1", {"type": "assignment", **assignment.model_dump()})


class Scheduler:
    """GET_JOBS answered from ``status`` (jobs as they are now), leaving out the ``too_large`` ones unless
    first; ``hold`` keeps the answers back until set."""

    def __init__(self) -> None:
        self.status: dict[str, str] = {}
        self.asked: list[list[str]] = []
        self.too_large: set[str] = set()
        self.hold = asyncio.Event()
        self.hold.set()

    async def ask(self, subject: str, query: JobsQuery) -> dict[str, Any]:
        assert subject == GET_JOBS
        self.asked.append(query.job_ids)
        await self.hold.wait()
        fits = [query.job_ids[0], *(job_id for job_id in query.job_ids[1:] if job_id not in self.too_large)]
        return {
            "items": [{"id": job_id, "status": self.status[job_id]} for job_id in fits],
            "left_out": [job_id for job_id in query.job_ids if job_id not in fits],
        }


class Socket:
    def __init__(self) -> None:
        self.jobs: list[tuple[str, str]] = []

    async def send_json(self, message: dict[str, Any]) -> None:
        self.jobs.append((message["job"]["id"], message["job"]["status"]))


def submitted(job_id: str) -> Msg:
    event = JobSubmitted(job_id=job_id, owner_id="u1", array_id=None, priority=0, submitted_at=datetime.now(UTC))
    return Msg(_client=cast(Any, None), subject=event.TYPE.subject, data=event.to_json(), headers=None)


def watched(scheduler: Scheduler) -> tuple[JobFeed, Socket, Links]:
    watchers, socket, links = JobWatchers(), Socket(), Links()
    watchers.add(Principal(kind="user", user_id="u1", roles=["user"]), cast(WebSocket, socket))
    return JobFeed(cast(NodeLinks, links), watchers, cast(ServiceCalls, scheduler)), socket, links


async def test_events_that_come_together_tell_the_owner_once_of_the_job_as_it_is_then() -> None:
    scheduler = Scheduler()
    feed, socket, _ = watched(scheduler)
    scheduler.status["j1"] = "assigned"
    await feed._on_event(submitted("j1"))
    await feed._on_event(assigned(None, "j1"))
    await wait_until(lambda: _now(socket.jobs), timeout=5, what="the owner told")
    assert (scheduler.asked, socket.jobs) == ([["j1"]], [("j1", "assigned")])


async def test_a_slow_update_holds_up_neither_the_events_behind_it_nor_the_jobs_changed_meanwhile() -> None:
    scheduler = Scheduler()
    feed, socket, links = watched(scheduler)
    scheduler.status |= {"j1": "pending", "j2": "assigned"}
    scheduler.hold.clear()
    async with asyncio.timeout(5):  # handling an event never waits for an update's request
        await feed._on_event(submitted("j1"))
    await wait_until(lambda: _now(scheduler.asked), timeout=5, what="j1 asked for")
    assert scheduler.asked == [["j1"]]
    async with asyncio.timeout(5):
        await feed._on_event(assigned(None, "j2"))  # while j1's update waits
    assert jobs_sent(links) == [("n1", "j2", 1)], "the assignment went to its node at once"
    await feed._on_event(submitted("j2"))
    scheduler.status["j1"] = "running"
    await feed._on_event(assigned(None, "j1"))  # j1 changed again while it was being told
    scheduler.hold.set()
    await wait_until(lambda: _now(len(socket.jobs) == 3), timeout=5, what="three updates")
    assert socket.jobs == [("j1", "running"), ("j2", "assigned"), ("j1", "running")]
    assert scheduler.asked == [["j1"], ["j2", "j1"]], "what changed meanwhile, in one request"


async def test_an_arrays_changes_are_asked_for_in_batches_and_what_did_not_fit_comes_first_next() -> None:
    scheduler = Scheduler()
    feed, socket, _ = watched(scheduler)
    jobs = [f"j{n}" for n in range(2 * MAX_JOBS_PER_QUERY + 1)]
    scheduler.status |= dict.fromkeys(jobs, "pending")
    scheduler.too_large = {"j2"}  # its spec is too large to come with the others
    for job_id in jobs:  # all of them before the owner's task first asks
        await feed._on_event(submitted(job_id))
    await wait_until(lambda: _now(len(socket.jobs) == len(jobs)), timeout=5, what="every job told")
    assert [len(batch) for batch in scheduler.asked] == [MAX_JOBS_PER_QUERY, MAX_JOBS_PER_QUERY, 2]
    assert scheduler.asked[1][0] == "j2", "left out for its size: first in the next request"
    assert sorted(job_id for job_id, _ in socket.jobs) == sorted(jobs)


async def _now(value: Any) -> Any:
    return value
