"""The admin event routes: a job's trace and history, bad queries, dead letters and their re-drive."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import asyncpg
import pytest
from gateway_stack import Stack
from nats.js import JetStreamContext

from fog_shared.bus.publish import publish_raw
from fog_shared.bus.topology import event_stream_name
from fog_shared.envelope import Envelope
from fog_shared.events import CATALOGUE, Event
from fog_shared.events.base import EventType
from fog_shared.testing.waiting import wait_until

from .test_jobs import job_status, provider, ready_node

JOB_CHAIN = [
    "scheduler.job.submitted.v1", "scheduler.job.assigned.v1", "scheduler.job.started.v1",
    "scheduler.job.completed.v1",
]  # fmt: skip


async def run_a_job(stack: Stack) -> tuple[str, str]:
    """A job run to success on a simulated node: (its id, the submit's request id)."""
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    submitted = await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)
    assert submitted.status_code == 201, submitted.text
    job_id, request_id = submitted.json()["id"], submitted.headers["X-Request-ID"]
    await agent.run(await agent.next_of("assignment"))
    await job_status(stack, user, job_id, "succeeded")
    return job_id, request_id


async def test_the_trace_of_a_submit_runs_to_the_jobs_completion_and_on_into_the_registry(stack: Stack) -> None:
    job_id, request_id = await run_a_job(stack)
    admin = stack.bearer(await stack.admin())

    async def traced() -> dict[str, Any] | None:
        answer = await stack.http.get(f"/v1/admin/events/trace/{request_id}", headers=admin)
        assert answer.status_code == 200, answer.text
        found = answer.json()
        types = [step["event"]["type"] for step in found["steps"]]
        return found if "registry.node.reputation_changed.v1" in types else None

    found = await wait_until(traced, what="the job's chain down to the registry's reputation event")
    chain = [(step["event"]["type"], step["depth"]) for step in found["steps"]]
    assert chain == [(kind, depth) for depth, kind in enumerate([*JOB_CHAIN, "registry.node.reputation_changed.v1"])]
    assert {step["event"]["aggregate_id"] for step in found["steps"][:4]} == {job_id}
    assert all(step["event"]["correlation_id"] == request_id for step in found["steps"])
    assert found["steps"][-1]["offset_ms"] >= found["steps"][0]["offset_ms"]
    assert found["gaps"] == []

    history = await stack.http.get("/v1/admin/events", params={"aggregate_id": job_id}, headers=admin)
    assert [event["type"] for event in history.json()["items"]] == JOB_CHAIN
    only_completed = await stack.http.get(
        "/v1/admin/events", params={"subject": "fog.evt.scheduler.job.completed.v1", "aggregate_id": job_id},
        headers=admin,
    )  # fmt: skip
    assert [event["type"] for event in only_completed.json()["items"]] == JOB_CHAIN[-1:]


async def test_history_pages_with_a_cursor(stack: Stack) -> None:
    job_id, _ = await run_a_job(stack)
    admin = stack.bearer(await stack.admin())
    seen: list[str] = []
    params: dict[str, Any] = {"subject": "fog.evt.scheduler.>", "aggregate_id": job_id, "limit": 1}
    while True:
        page = (await stack.http.get("/v1/admin/events", params=params, headers=admin)).json()
        seen.extend(event["type"] for event in page["items"])
        if not page["more"]:
            break
        params["cursor"] = page["cursor"]
    assert seen == JOB_CHAIN


async def test_event_routes_are_for_admins_only(stack: Stack) -> None:
    user = stack.bearer(await stack.register_and_login())
    routes = [
        ("GET", "/v1/admin/events"), ("GET", "/v1/admin/events/trace/x"), ("GET", "/v1/admin/dead-letters"),
        ("GET", "/v1/admin/dead-letters/1"), ("POST", "/v1/admin/dead-letters/1/redrive"),
    ]  # fmt: skip
    for method, path in routes:
        refused = await stack.http.request(method, path, headers=user)
        assert refused.status_code == 403, (method, path, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
        assert (await stack.http.request(method, path)).status_code == 401


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/admin/events", {"subject": "fog.cmd.>"}, 422),
        ("/v1/admin/events", {"subject": "fog.evt.>.x"}, 422),
        ("/v1/admin/events", {"cursor": "EVT_SCHEDULER:nope"}, 400),
        ("/v1/admin/events", {"limit": 0}, 422),
        ("/v1/admin/events", {"since": "yesterday"}, 422),
        ("/v1/admin/dead-letters/999999", {}, 404),
        ("/v1/admin/dead-letters/0", {}, 422),
    ],
)
async def test_bad_queries_get_problems(stack: Stack, path: str, params: dict[str, Any], status: int) -> None:
    admin = stack.bearer(await stack.admin())
    answer = await stack.http.get(path, params=params, headers=admin)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"


class NodeRetired(Event):
    """A registry event type the scheduler does not know yet: a producer deployed before its consumer."""

    TYPE_LATER: ClassVar[EventType] = EventType("registry", "node", "retired", 2)
    AGGREGATE_ID = "node_id"
    node_id: str


async def test_a_poisoned_event_is_listed_and_redriven_after_the_fix(
    stack: Stack, jetstream: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = stack.bearer(await stack.admin())
    kind = NodeRetired.TYPE_LATER
    envelope = Envelope.new(type=kind.name, source="fog/registry", subject="n-1")
    stream = event_stream_name("registry")
    await publish_raw(jetstream, stream, kind.subject, b'{"node_id": "n-1"}', envelope.to_headers())

    async def parked() -> list[dict[str, Any]]:
        return list((await stack.http.get("/v1/admin/dead-letters", headers=admin)).json()["items"])

    [entry] = await wait_until(parked, what="the unknown event dead-lettered")
    assert entry["id"] == envelope.id
    assert entry["dead_letter"]["consumer"] == "scheduler__nodes"
    assert entry["dead_letter"]["reason"] == "invalid"
    assert "unknown event type" in entry["dead_letter"]["error"]
    shown = await stack.http.get(f"/v1/admin/dead-letters/{entry['seq']}", headers=admin)
    assert shown.json()["data"] == {"node_id": "n-1"}

    # The fix: the consumer learns the new type (as a deploy of the scheduler would teach it).
    NodeRetired.TYPE = kind  # type: ignore[misc]
    monkeypatch.setitem(CATALOGUE._types, kind.name, NodeRetired)
    redriven = await stack.http.post(f"/v1/admin/dead-letters/{entry['seq']}/redrive", headers=admin)
    assert redriven.status_code == 200, redriven.text
    copy_seq = redriven.json()["seq"]
    assert redriven.json()["consumer"] == "scheduler__nodes"

    async def handled() -> bool:
        info = await jetstream.consumer_info(stream, "scheduler__nodes")
        return info.ack_floor is not None and (info.ack_floor.stream_seq or 0) >= copy_seq

    await wait_until(handled, what="the scheduler consumed the re-driven copy")
    assert await parked() == []
    again = await stack.http.post(f"/v1/admin/dead-letters/{entry['seq']}/redrive", headers=admin)
    assert again.status_code == 404


async def test_rebuild_of_the_scheduler_agrees_until_a_row_is_changed_behind_its_back(stack: Stack) -> None:
    url, owner = await stack.serve_gateway(), await provider(stack)
    agent = await ready_node(stack, url, owner, "a")
    relabelled = await stack.http.patch(f"/v1/nodes/{agent.node_id}", json={"labels": {"gpu": "a100"}}, headers=owner)
    assert relabelled.status_code == 200
    admin = stack.bearer(await stack.admin())

    async def rebuilt() -> dict[str, Any]:
        answer = await stack.http.post("/v1/admin/rebuild/scheduler", headers=admin)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def agrees() -> dict[str, Any] | None:
        report = await rebuilt()
        relabelled = report["events_replayed"] >= 3  # registered, ready, labels changed: all in the live view too
        return report if relabelled and report["rows_live"] == 1 and not report["differences"] else None

    report = await wait_until(agrees, what="the rebuilt node view equal to the live one")
    assert report["read_model"] == "nodes"
    assert report["gaps"] == []

    conn = await asyncpg.connect(stack.scheduler_db.dsn)
    try:
        labels = await conn.fetchval(
            f'SELECT labels FROM "{stack.scheduler_db.schema}".nodes WHERE id = $1', agent.node_id
        )
        assert json.loads(labels) == {"site": "a", "gpu": "a100"}  # the live view follows the change, as the rebuild
        await conn.execute(
            f'UPDATE "{stack.scheduler_db.schema}".nodes SET reputation = 0.01 WHERE id = $1', agent.node_id
        )
        report = await rebuilt()
        [difference] = report["differences"]
        assert difference["key"] == agent.node_id
        assert difference["kind"] == "changed"
        assert difference["columns"]["reputation"][0] == 0.01
        assert difference["columns"]["reputation"][1] != 0.01
        # The rebuild wrote nothing live: the tampered row is as the test left it.
        live = await conn.fetchval(
            f'SELECT reputation FROM "{stack.scheduler_db.schema}".nodes WHERE id = $1', agent.node_id
        )
        assert live == 0.01
    finally:
        await conn.close()
    unknown = await stack.http.post("/v1/admin/rebuild/gateway", headers=admin)
    assert unknown.status_code == 422


async def test_rebuild_of_messaging_covers_its_users_and_node_owners_and_finds_rows_changed_behind_its_back(
    stack: Stack,
) -> None:
    url, owner = await stack.serve_gateway(), await provider(stack)
    agent = await ready_node(stack, url, owner, "a")  # its credential: a node owner
    uma = await stack.register_and_login("uma@example.org")
    admin = stack.bearer(await stack.admin())

    async def rebuilt(**params: str) -> dict[str, Any]:
        answer = await stack.http.post("/v1/admin/rebuild/messaging", params=params, headers=admin)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    async def agrees(read_model: str, rows: int) -> dict[str, Any] | None:
        report = await rebuilt(read_model=read_model)
        caught_up = report["rows_live"] >= rows and report["rows_rebuilt"] == report["rows_live"]
        return report if caught_up and not report["differences"] else None

    users = await wait_until(lambda: agrees("users", 3), what="messaging's users rebuilt equal to the live ones")
    assert (users["consumer"], users["gaps"]) == ("messaging__users", [])  # admin, the provider, uma
    owners = await wait_until(lambda: agrees("node_owners", 1), what="the node owners rebuilt equal to the live")
    assert owners["consumer"] == "messaging__node_owners"
    assert (await rebuilt())["read_model"] == "users"  # the first, when none is named

    schema = stack.messaging_db.schema
    uma_id = (await stack.http.get("/v1/me", headers=stack.bearer(uma))).json()["user_id"]
    conn = await asyncpg.connect(stack.messaging_db.dsn)
    try:
        await conn.execute(f'UPDATE "{schema}".users SET email = $1 WHERE user_id = $2', "mallory@example.org", uma_id)
        await conn.execute(f'DELETE FROM "{schema}".node_owners WHERE node_id = $1', agent.node_id)
        [changed] = (await rebuilt(read_model="users"))["differences"]
        assert changed == {"key": uma_id, "kind": "changed",
                           "columns": {"email": ["mallory@example.org", "uma@example.org"]}}  # fmt: skip
        [missing] = (await rebuilt(read_model="node_owners"))["differences"]
        assert (missing["key"], missing["kind"]) == (agent.node_id, "missing_live")
        # Nothing live was written by the rebuilds.
        assert await conn.fetchval(f'SELECT email FROM "{schema}".users WHERE user_id = $1', uma_id) == (
            "mallory@example.org"
        )
    finally:
        await conn.close()
    for wrong in ("nodes", "nope"):
        refused = await stack.http.post("/v1/admin/rebuild/messaging", params={"read_model": wrong}, headers=admin)
        assert refused.status_code == 404, refused.text
        assert "users, node_owners" in refused.json()["detail"]
    not_a_name = await stack.http.post("/v1/admin/rebuild/messaging", params={"read_model": "a b"}, headers=admin)
    assert not_a_name.status_code == 422
    user = stack.bearer(uma)
    assert (await stack.http.post("/v1/admin/rebuild/messaging", headers=user)).status_code == 403


async def test_a_job_lost_with_its_node_stays_in_its_requests_chain_and_names_the_node_event_as_cause(
    stack: Stack,
) -> None:
    url = await stack.serve_gateway()
    owner = await provider(stack)
    first = await ready_node(stack, url, owner, "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    submitted = await stack.http.post("/v1/jobs", json={"command": ["sleep", "1"]}, headers=user)
    job_id, request_id = submitted.json()["id"], submitted.headers["X-Request-ID"]
    await first.next_of("assignment")
    second = await ready_node(stack, url, owner, "b")
    await first.die()  # no more heartbeats: down, and its job lost
    await second.run(await second.next_of("assignment"))
    await job_status(stack, user, job_id, "succeeded")
    admin = stack.bearer(await stack.admin())

    async def traced() -> list[dict[str, Any]] | None:
        found = (await stack.http.get(f"/v1/admin/events/trace/{request_id}", headers=admin)).json()
        kinds = [step["event"]["type"] for step in found["steps"]]
        return found["steps"] if "scheduler.job.completed.v1" in kinds else None

    steps = await wait_until(traced, what="the job's chain to its completion")
    by_type = {step["event"]["type"]: step for step in steps if step["event"]["aggregate_id"] == job_id}
    lost = by_type["scheduler.job.lost.v1"]["event"]
    down = (await stack.http.get("/v1/admin/events", params={"aggregate_id": first.node_id}, headers=admin)).json()
    [went_down] = [
        e for e in down["items"] if e["type"] == "registry.node.status_changed.v1" and e["data"]["status"] == "down"
    ]
    assert lost["causation_id"] == went_down["id"]
    assert lost["correlation_id"] == request_id
    # The retry follows from the loss, and the chain runs on to the completion.
    chain = [step["event"]["type"] for step in steps if step["event"]["aggregate_id"] == job_id]
    assert chain[-4:] == ["scheduler.job.lost.v1", "scheduler.job.assigned.v1", "scheduler.job.started.v1",
                          "scheduler.job.completed.v1"]  # fmt: skip
