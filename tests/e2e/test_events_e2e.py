"""Event replay on the real stack: a job's trace and history, dead letters and their re-drive, via fogctl.

fogctl is logged in as the first admin (``fogctl dev up`` does that); a user submits a job that a
real agent runs; the checks read what the services stored, through the gateway's admin routes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from devstack_driver import RunningStack, email, fogctl, open_stack

from fog_client import FogClient
from fog_shared.bus.publish import publish_raw
from fog_shared.envelope import Envelope
from fog_shared.testing.waiting import wait_until

pytestmark = pytest.mark.e2e
PASSWORD = "a long and unguessable password"
JOB_CHAIN = [
    "scheduler.job.submitted.v1", "scheduler.job.assigned.v1", "scheduler.job.started.v1",
    "scheduler.job.completed.v1",
]  # fmt: skip


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = open_stack(tmp_path_factory.mktemp("events-e2e"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def stack(running: RunningStack) -> RunningStack:
    await running.ready()
    return running


async def admin_fogctl(stack: RunningStack, *args: str) -> tuple[int, str]:
    # fogctl logged in as the first admin; wide enough that tables do not wrap
    return await fogctl("events", *args, env={"FOG_CONFIG_DIR": str(stack.dir / "fogctl"), "COLUMNS": "250"})


async def submit_with_request_id(stack: RunningStack, request_id: str) -> str:
    """A user's job, submitted over plain HTTP with the request id we chose; waits until it ran."""
    url = stack.state["gateway_url"]
    fog = FogClient(url)
    await fog.register(email("eve"), PASSWORD)
    await fog.login(email("eve"), PASSWORD)
    headers = {"Authorization": f"Bearer {fog.access_token}", "X-Request-ID": request_id}
    async with httpx.AsyncClient(base_url=url) as http:
        submitted = await http.post("/v1/jobs", json={"command": ["true"]}, headers=headers)
    assert submitted.status_code == 201, submitted.text
    assert submitted.headers["X-Request-ID"] == request_id
    job_id: str = submitted.json()["id"]
    assert (await fog.wait_job(job_id, poll_s=0.1, timeout=30)).status == "succeeded"
    await fog.aclose()
    return job_id


async def test_a_jobs_trace_runs_from_the_submit_to_its_completion_and_its_history_is_in_order(
    stack: RunningStack,
) -> None:
    request_id = f"e2e-{secrets.token_hex(8)}"
    job_id = await submit_with_request_id(stack, request_id)

    async def traced() -> dict[str, Any] | None:
        code, out = await admin_fogctl(stack, "trace", request_id, "--json")
        assert code in (0, 1), out
        found: dict[str, Any] = json.loads(out)
        kinds = [step["event"]["type"] for step in found["steps"]]
        return found if "registry.node.reputation_changed.v1" in kinds else None

    found = await wait_until(traced, timeout=20, interval=0.3, what="the chain down to the registry")
    chain = [(step["event"]["type"], step["depth"]) for step in found["steps"]]
    assert chain == [(kind, depth) for depth, kind in enumerate([*JOB_CHAIN, "registry.node.reputation_changed.v1"])]
    assert {step["event"]["source"] for step in found["steps"]} == {"fog/scheduler", "fog/registry"}
    assert len(found["trace_ids"]) >= 1

    code, printed = await admin_fogctl(stack, "trace", request_id)
    assert code == 0
    assert f"request {request_id} (gateway X-Request-ID)" in printed
    assert "└─ scheduler.job.completed.v1" in printed

    code, history = await admin_fogctl(stack, "history", "--job", job_id, "--json")
    assert code == 0
    events = [json.loads(line) for line in history.splitlines()]
    assert [event["type"] for event in events if "type" in event] == JOB_CHAIN
    assert {event["correlation_id"] for event in events if "type" in event} == {request_id}


@pytest.mark.local_stack
async def test_a_poisoned_event_shows_in_the_dead_letters_and_redrive_hands_it_back(stack: RunningStack) -> None:
    envelope = Envelope.new(type="registry.node.retired.v2", source="fog/registry", subject="n-poison")
    nc = await nats.connect(stack.state["nats_url"])
    try:
        subject = "fog.evt.registry.node.retired.v2"
        await publish_raw(nc.jetstream(), "EVT_REGISTRY", subject, b'{"node_id": "n-poison"}', envelope.to_headers())
    finally:
        await nc.close()

    async def parked() -> list[dict[str, Any]]:
        code, out = await admin_fogctl(stack, "dlq", "list", "--json")
        assert code == 0, out
        return [entry for entry in map(json.loads, out.splitlines()) if entry["id"] == envelope.id]

    [entry] = await wait_until(parked, timeout=20, interval=0.3, what="the poisoned event dead-lettered")
    assert entry["dead_letter"]["consumer"] == "scheduler__nodes"
    assert "unknown event type" in entry["dead_letter"]["error"]
    code, table = await admin_fogctl(stack, "dlq", "list")
    assert code == 0
    assert "scheduler__nodes" in table

    code, out = await admin_fogctl(stack, "dlq", "redrive", str(entry["seq"]))
    assert code == 0
    assert "to scheduler__nodes" in out
    # This scheduler still does not know the type, so it parks the copy again: the copy reached it.
    again = await wait_until(
        lambda: _redriven_copy(parked, entry["seq"]), timeout=20, interval=0.3, what="the copy handled and re-parked"
    )
    assert again["dead_letter"]["consumer"] == "scheduler__nodes"
    code, _ = await admin_fogctl(stack, "dlq", "show", str(entry["seq"]))
    assert code == 1  # the re-driven entry is gone


async def _redriven_copy(parked: Any, seq: int) -> dict[str, Any] | None:
    for entry in await parked():
        if entry["redrive_of"] == f"DLQ:{seq}":
            return dict(entry)
    return None


@pytest.mark.local_stack
async def test_rebuild_of_the_scheduler_agrees_then_finds_a_row_changed_behind_its_back(stack: RunningStack) -> None:
    async def agrees() -> str | None:
        code, out = await admin_fogctl(stack, "rebuild", "scheduler")
        return out if code == 0 else None

    healthy = await wait_until(agrees, timeout=20, interval=0.5, what="the rebuilt node view equal to the live one")
    assert healthy is not None
    assert "no differences" in healthy

    password = await asyncio.to_thread(lambda: (stack.dir / "postgres" / "superuser.pw").read_text().strip())
    dsn = stack.state["database_dsn_redacted"].replace("***", password).rsplit("/", 1)[0] + "/fog"
    conn = await asyncpg.connect(dsn)
    try:
        node_id = await conn.fetchval("SELECT id FROM scheduler.nodes ORDER BY id LIMIT 1")
        await conn.execute("UPDATE scheduler.nodes SET reputation = 0.01 WHERE id = $1", node_id)
        code, out = await admin_fogctl(stack, "rebuild", "scheduler")
        assert code == 1
        assert f"{node_id}: reputation: live 0.01, rebuilt" in out
        # Replay wrote nothing live: the row is as it was left.
        assert await conn.fetchval("SELECT reputation FROM scheduler.nodes WHERE id = $1", node_id) == 0.01
    finally:
        await conn.close()
