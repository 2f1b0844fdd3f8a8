"""The gateway's job feed hands assignments to nodes, but never a re-driven copy of one."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from nats.aio.msg import Msg

from fog_gateway.calls import ServiceCalls
from fog_gateway.job_feed import JobFeed, JobWatchers
from fog_gateway.node_link import NodeLinks
from fog_shared.bus.consumer import H_REDRIVE_FOR
from fog_shared.events.scheduler import JobAssigned


class Links:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, node_id: str, message: dict[str, Any]) -> None:
        self.sent.append((node_id, message))


def assigned(headers: dict[str, str] | None) -> Msg:
    event = JobAssigned(
        job_id="j1", owner_id="u1", node_id="n1", attempt=1, assignment={"job_id": "j1"}, assigned_at=datetime.now(UTC)
    )
    return Msg(_client=cast(Any, None), subject=event.TYPE.subject, data=event.to_json(), headers=headers)


async def test_an_assignment_reaches_its_node_but_a_redriven_copy_does_not() -> None:
    links = Links()
    feed = JobFeed(cast(NodeLinks, links), JobWatchers(), cast(ServiceCalls, None))
    await feed._on_event(assigned({H_REDRIVE_FOR: "registry__job_outcomes"}))
    assert links.sent == []
    await feed._on_event(assigned(None))
    assert links.sent == [("n1", {"type": "assignment", "job_id": "j1"})]
