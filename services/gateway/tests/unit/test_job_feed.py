"""The gateway's job feed hands assignments to nodes once each, whether pushed or from their
events, and never a re-driven copy of one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from nats.aio.msg import Msg

from fog_gateway.calls import ServiceCalls
from fog_gateway.job_feed import JobFeed, JobWatchers
from fog_gateway.node_link import NodeLinks
from fog_shared.bus.consumer import H_REDRIVE_FOR
from fog_shared.commands.gateway import AssignmentPush, NodeAssignment
from fog_shared.commands.scheduler import Assignment, Resources
from fog_shared.events.scheduler import JobAssigned


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
    await feed.on_push(pushed("j1"))
    assert links.sent[0] == ("n1", {"type": "assignment", **pushed("j1").assignments[0].assignment.model_dump()})
    await feed._on_event(assigned(None, "j1"))
    await feed._on_event(assigned(None, "j1", attempt=2))  # another attempt is another assignment
    assert jobs_sent(links) == [("n1", "j1", 1), ("n1", "j1", 2)]
    await feed.on_push(pushed("j1", attempt=2))  # a push that comes after its event: not sent either
    await feed._on_event(assigned(None, "j1"))  # a third copy (a redelivery) is sent: agents ignore it
    assert jobs_sent(links) == [("n1", "j1", 1), ("n1", "j1", 2), ("n1", "j1", 1)]
    assert feed.copies_skipped == 2


async def test_an_assignment_not_sent_here_does_not_hold_back_its_other_copy() -> None:
    links = Links(connected=set())
    feed = JobFeed(cast(NodeLinks, links), JobWatchers(), cast(ServiceCalls, None))
    await feed.on_push(pushed("j1"))  # the node is not connected here (yet)
    links.connected = {"n1"}
    await feed._on_event(assigned(None, "j1"))
    assert jobs_sent(links) == [("n1", "j1", 1)]
