"""Reputation and contribution follow job outcomes: the scheduler's events move them, once each, and a change of
reputation is announced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.nats import NatsBroker
from nats.js import JetStreamContext
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from fog_registry.app import MIGRATIONS, build_app
from fog_registry.config import Settings
from fog_shared.bus.broker import make_broker
from fog_shared.bus.publish import publish_event
from fog_shared.bus.rpc import request
from fog_shared.bus.topology import Topology
from fog_shared.commands import registry as contract
from fog_shared.commands.auth import Principal
from fog_shared.envelope import Envelope
from fog_shared.events.base import Event
from fog_shared.events.registry import NodeReputationChanged
from fog_shared.events.scheduler import JobCompleted, JobFailed
from fog_shared.testing.plugin import Provisioner, Servers, ServiceDbFactory, settings_in_schema
from fog_shared.testing.waiting import wait_until

OWNER = Principal(kind="user", user_id="owner-1", roles=["user", "provider"])
CAPABILITIES = {"cpu_cores": 2, "memory_bytes": 1 << 30, "disk_bytes": 0, "arch": "aarch64", "os": "Linux"}


@pytest.fixture
async def registry(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> AsyncIterator[NatsBroker]:
    await provision_topology(Topology())
    db = await service_db("registry", MIGRATIONS)
    settings = settings_in_schema(
        Settings, db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(db.dsn), liveness_tick_s=0.05
    )
    app = build_app(settings)
    client = make_broker(fog_servers.nats_url, "test", registry=CollectorRegistry())
    async with app.router.lifespan_context(app):
        await client.start()
        try:
            yield client
        finally:
            await client.stop()


async def ask(broker: NatsBroker, subject: str, body: Any) -> dict[str, Any]:
    reply = await request(broker, subject, body, timeout=5)
    assert "error" not in reply, reply
    return reply


async def published(js: JetStreamContext, event: Event) -> None:
    await publish_event(js, "EVT_SCHEDULER", event, Envelope.new(type=event.TYPE.name, source="fog/scheduler"))


async def test_job_outcomes_move_reputation_and_a_redelivered_outcome_counts_once(
    registry: NatsBroker, jetstream: JetStreamContext
) -> None:
    registration = {"name": "pi", "capabilities": CAPABILITIES}
    node = await ask(registry, contract.REGISTER_NODE, {"owner_id": "owner-1", "registration": registration})
    assert node["reputation"] == 0.5
    now = datetime.now(UTC)
    for i in range(3):
        await published(jetstream, JobCompleted(job_id=f"j{i}", node_id=node["id"], exit_code=0, completed_at=now))

    async def reputation() -> float:
        view = await ask(registry, contract.GET_NODE, {"node_id": node["id"], "by": OWNER.model_dump()})
        return float(view["reputation"])

    await wait_until(lambda: _above(reputation(), 0.75), timeout=10, what="reputation up after three successes")
    assert abs(await reputation() - 0.8) < 0.01, "(3 + 1) / (3 + 0 + 2)"
    failure = JobFailed(job_id="j9", node_id=node["id"], reason="lost", node_fault=True, failed_at=now)
    envelope = Envelope.new(type=failure.TYPE.name, source="fog/scheduler")
    await publish_event(jetstream, "EVT_SCHEDULER", failure, envelope)
    await publish_event(jetstream, "EVT_SCHEDULER", failure, envelope)  # a publisher retry: the same event
    not_the_nodes_fault = JobFailed(job_id="j10", node_id=node["id"], reason="exit 1", node_fault=False, failed_at=now)
    await published(jetstream, not_the_nodes_fault)
    await wait_until(lambda: _below(reputation(), 0.7), timeout=10, what="reputation down after a node fault")
    assert abs(await reputation() - 4 / 6) < 0.01, "one failure, counted once; the job's own failure not at all"

    sub = await jetstream.subscribe(NodeReputationChanged.TYPE.subject, ordered_consumer=True)
    changes = []
    while len(changes) < 4:
        event = NodeReputationChanged.from_json((await sub.next_msg(timeout=5)).data)
        changes.append(round(event.reputation, 2))
    assert changes == [0.67, 0.75, 0.8, 0.67]


async def test_a_nodes_contribution_adds_up_the_attempts_that_ended_there_each_once(
    registry: NatsBroker, jetstream: JetStreamContext
) -> None:
    registration = {"name": "pi", "capabilities": CAPABILITIES}
    node = await ask(registry, contract.REGISTER_NODE, {"owner_id": "owner-1", "registration": registration})
    other = await ask(registry, contract.REGISTER_NODE, {"owner_id": "owner-1", "registration": registration})
    assert node["contribution"] == {"attempts_succeeded": 0, "attempts_failed": 0, "attempts_lost": 0,
                                    "run_s": 0.0, "cpu_s": 0.0}  # fmt: skip
    now = datetime.now(UTC)
    done = JobCompleted(job_id="j1", node_id=node["id"], exit_code=0, completed_at=now, duration_s=60.0, cpu_s=30.0)
    envelope = Envelope.new(type=done.TYPE.name, source="fog/scheduler")
    await publish_event(jetstream, "EVT_SCHEDULER", done, envelope)
    await publish_event(jetstream, "EVT_SCHEDULER", done, envelope)  # a publisher retry: counted once
    await published(jetstream, JobCompleted(job_id="j2", node_id=node["id"], exit_code=0, completed_at=now))  # older
    await published(jetstream, JobFailed(job_id="j3", node_id=node["id"], reason="exit 1", node_fault=False,
                                         failed_at=now, duration_s=2.5, cpu_s=1.25))  # fmt: skip
    await published(
        jetstream, JobFailed(job_id="j4", node_id=node["id"], reason="lost", node_fault=True, failed_at=now)
    )
    await published(jetstream, JobFailed(job_id="j5", node_id=None, reason="no node", node_fault=False, failed_at=now))
    await published(jetstream, JobCompleted(job_id="j6", node_id=other["id"], exit_code=0, completed_at=now,
                                            duration_s=1.0, cpu_s=0.5))  # fmt: skip

    async def contribution(node_id: str) -> dict[str, Any]:
        view = await ask(registry, contract.GET_NODE, {"node_id": node_id, "by": OWNER.model_dump()})
        return dict(view["contribution"])

    async def counted() -> bool:
        return (await contribution(other["id"]))["attempts_succeeded"] == 1  # the last published, in order

    await wait_until(counted, timeout=10, what="the outcomes counted")
    assert await contribution(node["id"]) == {"attempts_succeeded": 2, "attempts_failed": 1, "attempts_lost": 1,
                                              "run_s": 62.5, "cpu_s": 31.25}  # fmt: skip
    assert await contribution(other["id"]) == {"attempts_succeeded": 1, "attempts_failed": 0, "attempts_lost": 0,
                                               "run_s": 1.0, "cpu_s": 0.5}  # fmt: skip


async def _above(value: Any, threshold: float) -> bool:
    return bool(await value > threshold)


async def _below(value: Any, threshold: float) -> bool:
    return bool(await value < threshold)
