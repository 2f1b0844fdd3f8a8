"""Jobs through the gateway: submit, placement, the agent's side of the protocol (simulated here
over a real WebSocket), results, retries, lost work, cancel, explain, isolation between users."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from gateway_stack import HEARTBEAT_INTERVAL_S, Stack
from nats.aio.msg import Msg
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection, connect

from fog_client import FogClient
from fog_shared.commands.gateway import ASSIGNMENTS, AssignmentPush, NodeAssignment
from fog_shared.commands.scheduler import GET_JOB, NODE_ASSIGNMENTS, Assignment, Resources
from fog_shared.events.scheduler import JobCompleted, JobFailed, JobLost, JobStarted, JobSubmitted
from fog_shared.telemetry.context import correlation_id
from fog_shared.testing.plugin import Servers
from fog_shared.testing.waiting import wait_until

USAGE = {"cpu_percent": 1.0, "memory_used_bytes": 1, "disk_used_bytes": 1}


def capabilities(cores: int = 2, arch: str = "x86_64") -> dict[str, Any]:
    return {"cpu_cores": cores, "memory_bytes": 4 << 30, "disk_bytes": 1 << 30, "arch": arch, "os": "Linux"}


class FakeAgent:
    """The agent's half of the protocol, by hand: it does what the test tells it to."""

    def __init__(self, ws: ClientConnection, node_id: str, credential: str = "") -> None:
        self.ws, self.node_id, self.seq, self.credential = ws, node_id, 0, credential
        self.unread: list[dict[str, Any]] = []
        self._beating: asyncio.Task[None] | None = None

    def keep_beating(self) -> None:
        async def beating() -> None:
            while True:
                await self.beat()
                await asyncio.sleep(HEARTBEAT_INTERVAL_S / 2)  # the simulated agent's heartbeat period

        self._beating = asyncio.create_task(beating())

    async def die(self) -> None:
        if self._beating is not None:
            self._beating.cancel()
        await self.ws.close()

    async def beat(self) -> None:
        self.seq += 1
        beat = {"type": "heartbeat", "node_id": self.node_id, "seq": self.seq, "running_jobs": 0, "usage": USAGE}
        await self.ws.send(json.dumps(beat))

    async def next_of(self, kind: str, timeout: float = 10) -> dict[str, Any]:
        """The next message of this type; others are kept for whoever asks for them."""
        for index, message in enumerate(self.unread):
            if message["type"] == kind:
                return self.unread.pop(index)
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout=timeout))
            if message["type"] == kind:
                return dict(message)
            self.unread.append(message)

    async def report(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))
        ack = await self.next_of("ack", timeout=60)  # the gateway retries while the scheduler is away
        assert (ack["job_id"], ack["report"]) == (message["job_id"], message["type"])

    async def run(
        self, assignment: dict[str, Any], outcome: str = "succeeded", exit_code: int = 0, output: str = "", **usage: Any
    ) -> None:
        job, attempt = assignment["job_id"], assignment["attempt"]
        await self.report({"type": "started", "job_id": job, "attempt": attempt})
        await self.report({"type": "finished", "job_id": job, "attempt": attempt, "outcome": outcome,
                           "exit_code": exit_code, "duration_s": 0.01, "output": output, **usage})  # fmt: skip


async def ready_node(stack: Stack, url: str, owner: dict[str, str], name: str, **caps: Any) -> FakeAgent:
    body = {"name": name, "capabilities": capabilities(**caps), "labels": {"site": name}}
    registered = (await stack.http.post("/v1/nodes", json=body, headers=owner)).json()
    node_id = registered["node"]["id"]
    ws_url = url.replace("http://", "ws://") + "/v1/nodes/connect"
    ws = await connect(ws_url, additional_headers={"Authorization": f"Bearer {registered['credential']}"})
    agent = FakeAgent(ws, node_id, registered["credential"])
    await agent.next_of("welcome")
    agent.keep_beating()

    async def ready() -> bool:
        return (await stack.http.get(f"/v1/nodes/{node_id}", headers=owner)).json()["status"] == "ready"

    await wait_until(ready, timeout=5, what=f"{name} ready")
    return agent


async def provider(stack: Stack) -> dict[str, str]:
    return stack.bearer(await stack.register_and_login("pat@example.org", roles=["user", "provider"]))


async def job_status(stack: Stack, user: dict[str, str], job_id: str, status: str) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        job = (await stack.http.get(f"/v1/jobs/{job_id}", headers=user)).json()
        return job if job["status"] == status else None

    return await wait_until(reached, timeout=10, what=f"job {status}")


async def test_a_drained_node_takes_no_new_job_until_it_is_resumed(stack: Stack) -> None:
    url, owner = await stack.serve_gateway(), await provider(stack)
    agent = await ready_node(stack, url, owner, "a")
    assert (await stack.http.post(f"/v1/nodes/{agent.node_id}/drain", headers=owner)).status_code == 200
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    job_id = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)).json()["id"]

    async def explained() -> dict[str, int] | None:
        found = (await stack.http.get(f"/v1/jobs/{job_id}/explain", headers=user)).json()
        return found["filtered"] if found["status"] == "pending" and found["filtered"] else None

    assert await wait_until(explained, what="the job explained as waiting") == {"node draining": 1}
    assert (await stack.http.post(f"/v1/nodes/{agent.node_id}/resume", headers=owner)).json()["status"] == "ready"
    assignment = await agent.next_of("assignment")
    assert assignment["job_id"] == job_id
    await agent.run(assignment)
    assert (await job_status(stack, user, job_id, "succeeded"))["node_id"] == agent.node_id


async def test_a_job_waiting_for_a_label_is_placed_once_its_owner_labels_a_node(stack: Stack) -> None:
    url, owner = await stack.serve_gateway(), await provider(stack)
    agent = await ready_node(stack, url, owner, "a")  # labelled site=a
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["true"], "constraints": {"labels": {"gpu": "a100"}}}
    job_id = (await stack.http.post("/v1/jobs", json=spec, headers=user)).json()["id"]

    async def explained() -> dict[str, int] | None:
        found = (await stack.http.get(f"/v1/jobs/{job_id}/explain", headers=user)).json()
        return found["filtered"] if found["status"] == "pending" and found["filtered"] else None

    assert list(await wait_until(explained, what="the job explained as waiting")) == ["label gpu=a100 missing"]
    node = f"/v1/nodes/{agent.node_id}"
    stranger = stack.bearer(await stack.register_and_login("eve@example.org", roles=["user", "provider"]))
    assert (await stack.http.patch(node, json={"labels": {"gpu": "a100"}}, headers=stranger)).status_code == 404
    crowded = {"labels": {f"k{n}": "v" for n in range(32)}}  # 33 with site
    refused = await stack.http.patch(node, json=crowded, headers=owner)
    assert (refused.status_code, refused.json()["code"]) == (422, "too_many_labels")
    changed = await stack.http.patch(node, json={"labels": {"gpu": "a100", "site": None}}, headers=owner)
    assert (changed.status_code, changed.json()["labels"]) == (200, {"gpu": "a100"})
    assignment = await agent.next_of("assignment")
    assert assignment["job_id"] == job_id
    await agent.run(assignment)
    await job_status(stack, user, job_id, "succeeded")
    admin = stack.bearer(await stack.admin())
    events = (await stack.http.get("/v1/admin/events", params={"aggregate_id": agent.node_id}, headers=admin)).json()
    relabelled = [e["data"] for e in events["items"] if e["type"] == "registry.node.labels_changed.v1"]
    assert [(e["previous_labels"], e["labels"]) for e in relabelled] == [({"site": "a"}, {"gpu": "a100"})]


async def test_a_node_declaring_more_disk_than_at_join_takes_the_job_that_waited_for_it(stack: Stack) -> None:
    url, owner = await stack.serve_gateway(), await provider(stack)
    agent = await ready_node(stack, url, owner, "a")  # 1 GiB of disk for jobs, as it joined
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["true"], "resources": {"disk_bytes": 4 << 30}}
    job_id = (await stack.http.post("/v1/jobs", json=spec, headers=user)).json()["id"]

    async def explained() -> dict[str, int] | None:
        found = (await stack.http.get(f"/v1/jobs/{job_id}/explain", headers=user)).json()
        return found["filtered"] if found["status"] == "pending" and found["filtered"] else None

    assert await wait_until(explained, what="the job explained as waiting") == {"too little disk": 1}
    route = f"/v1/nodes/{agent.node_id}/capabilities"
    now = {**capabilities(), "disk_bytes": 8 << 30, "networks": ["host", "none"]}
    # Only the node itself declares: not its owner, not another node.
    assert (await stack.http.put(route, json=now, headers=owner)).status_code == 403
    other = await ready_node(stack, url, owner, "b")
    as_other = {"Authorization": f"Bearer {other.credential}"}
    assert (await stack.http.put(route, json=now, headers=as_other)).status_code == 403
    as_itself = {"Authorization": f"Bearer {agent.credential}"}
    assert (await stack.http.put(route, json={**now, "disk_bytes": -1}, headers=as_itself)).status_code == 422
    declared = await stack.http.put(route, json=now, headers=as_itself)
    assert declared.status_code == 200, declared.text
    assert declared.json()["capabilities"]["disk_bytes"] == 8 << 30
    assert (await stack.http.put(route, json=now, headers=as_itself)).status_code == 200  # the same again: no event
    assignment = await agent.next_of("assignment")
    assert (assignment["job_id"], assignment["resources"]["disk_bytes"]) == (job_id, 4 << 30)
    admin = stack.bearer(await stack.admin())
    events = (await stack.http.get("/v1/admin/events", params={"aggregate_id": agent.node_id}, headers=admin)).json()
    changed = [e["data"] for e in events["items"] if e["type"] == "registry.node.capabilities_changed.v1"]
    assert [(e["previous_capabilities"]["disk_bytes"], e["capabilities"]["disk_bytes"]) for e in changed] == [
        (1 << 30, 8 << 30)
    ]


async def test_submit_run_and_read_the_result(stack: Stack) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    submitted = await stack.http.post("/v1/jobs", json={"command": ["echo", "hello"]}, headers=user)
    assert submitted.status_code == 201, submitted.text
    job = submitted.json()
    assignment = await agent.next_of("assignment")
    assert (assignment["job_id"], assignment["command"], assignment["attempt"]) == (job["id"], ["echo", "hello"], 1)
    await agent.run(assignment, output="hello\n", cpu_s=0.25, max_rss_bytes=3 * 2**20)
    done = await job_status(stack, user, job["id"], "succeeded")
    assert (done["exit_code"], done["node_id"]) == (0, agent.node_id)
    assert (done["cpu_s"], done["max_rss_bytes"]) == (0.25, 3 * 2**20)  # what the agent measured
    output = (await stack.http.get(f"/v1/jobs/{job['id']}/output", headers=user)).json()
    assert output == {"output": "hello\n", "truncated": False, "exit_code": 0, "length": 6, "ended": True, "attempt": 1}
    explained = (await stack.http.get(f"/v1/jobs/{job['id']}/explain", headers=user)).json()
    assert explained["candidates"][0]["node_id"] == agent.node_id

    other = stack.bearer(await stack.register_and_login("vic@example.org"))
    for path in (f"/v1/jobs/{job['id']}", f"/v1/jobs/{job['id']}/output", f"/v1/jobs/{job['id']}/explain"):
        assert (await stack.http.get(path, headers=other)).status_code == 404
    assert (await stack.http.post(f"/v1/jobs/{job['id']}/cancel", headers=other)).status_code == 404
    assert (await stack.http.get("/v1/jobs", headers=other)).json()["items"] == []


async def test_a_running_jobs_output_so_far_is_read_from_an_offset_until_it_ends(stack: Stack) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    job = (await stack.http.post("/v1/jobs", json={"command": ["make"]}, headers=user)).json()
    assignment = await agent.next_of("assignment")
    job_id, attempt = assignment["job_id"], assignment["attempt"]

    async def printed(offset: int, data: str) -> dict[str, Any]:
        await agent.ws.send(json.dumps({"type": "output", "job_id": job_id, "attempt": attempt, "offset": offset,
                                        "data": data}))  # fmt: skip
        return await agent.next_of("ack")

    async def output(offset: int = 0) -> dict[str, Any]:
        answer = await stack.http.get(f"/v1/jobs/{job_id}/output", params={"offset": offset}, headers=user)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    assert await output() == {
        "output": "", "truncated": False, "exit_code": None, "length": 0, "ended": False, "attempt": 1
    }  # fmt: skip
    await agent.report({"type": "started", "job_id": job_id, "attempt": attempt})
    assert (await printed(0, "compiling\n"))["through"] == 10
    assert (await printed(0, "compiling\nlinking\n"))["through"] == 18  # sent again from the start: not acked
    assert (await printed(10, "linking\ntesting"))["through"] == 25
    assert (await printed(40, "a gap"))["through"] == 45  # acked, and dropped: nothing is kept after a gap
    assert await output() == {
        "output": "compiling\nlinking\ntesting", "truncated": False, "exit_code": None, "length": 25, "ended": False,
        "attempt": 1,
    }  # fmt: skip
    assert (await output(10))["output"] == "linking\ntesting"
    assert (await output(99))["output"] == ""

    whole = "compiling\nlinking\ntesting\ndone\n"
    await agent.report({"type": "finished", "job_id": job_id, "attempt": attempt, "outcome": "succeeded",
                        "exit_code": 0, "duration_s": 2.0, "output": whole})  # fmt: skip
    await job_status(stack, user, job["id"], "succeeded")
    assert await output(25) == {
        "output": "\ndone\n", "truncated": False, "exit_code": 0, "length": 31, "ended": True, "attempt": 1
    }  # fmt: skip
    await printed(0, "late")  # an attempt that ended keeps its whole output
    assert (await output())["output"] == "compiling\nlinking\ntesting\ndone\n"
    db = await asyncpg.connect(stack.scheduler_db.owner_dsn)
    try:
        pieces_left = await db.fetchval(f"SELECT count(*) FROM {stack.scheduler_db.schema}.job_output_so_far")
    finally:
        await db.close()
    assert pieces_left == 0, "the pieces go once the whole output is kept"

    other = stack.bearer(await stack.register_and_login("vic@example.org"))
    assert (await stack.http.get(f"/v1/jobs/{job_id}/output", headers=other)).status_code == 404


async def test_binary_output_is_recorded_and_holds_up_none_of_the_nodes_reports(stack: Stack) -> None:
    """PostgreSQL's text cannot hold NUL: recorded as printed, a job's binary output would fail its report's
    transaction, which the gateway retries, in order, with every later report of its node behind it."""
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    binary, after = [
        (await stack.http.post("/v1/jobs", json={"command": ["head", "-c", "3", "/dev/zero"]}, headers=user)).json()
        for _ in range(2)
    ]
    await agent.run(await agent.next_of("assignment"), output="a\x00b", exit_code=0)
    await agent.run(await agent.next_of("assignment"), output="next\n")

    await job_status(stack, user, after["id"], "succeeded")
    await job_status(stack, user, binary["id"], "succeeded")
    output = (await stack.http.get(f"/v1/jobs/{binary['id']}/output", headers=user)).json()
    assert output["output"] == "a\ufffdb"  # as undecodable bytes are shown


async def test_a_lone_job_on_an_idle_cluster_is_placed_in_its_submits_transaction(stack: Stack) -> None:
    """No job waits: the submit decides its job itself, and answers it assigned and explained; its node is told
    to prepare it before the assignment comes."""
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    # The loop may be in a cycle (the node's arrival wakes it) when a submit comes: that job is left to it.
    # One of a few jobs submitted one after another on the idle cluster is placed at submit.
    placed_at_submit = None
    for _ in range(20):
        job = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)).json()
        assignment = await agent.next_of("assignment")
        assert assignment["job_id"] == job["id"]
        await agent.run(assignment)
        if job["status"] == "assigned":
            placed_at_submit = job
            break
        assert job["status"] == "pending"
    assert placed_at_submit is not None, "no job was placed at submit on an idle cluster"
    assert placed_at_submit["node_id"] == agent.node_id
    # Its node heard of it first, while its insert committed, to get it ready (docs/jobs.md).
    prepared = await agent.next_of("prepare")
    assert prepared == {**assignment, "type": "prepare"}
    explained = (await stack.http.get(f"/v1/jobs/{placed_at_submit['id']}/explain", headers=user)).json()
    assert explained["candidates"][0]["node_id"] == agent.node_id
    await job_status(stack, user, placed_at_submit["id"], "succeeded")


async def test_reports_sent_back_to_back_are_recorded_once_each_in_order(stack: Stack) -> None:
    """An agent sends reports as jobs end, without waiting for acks; the gateway records them in
    batches. Resent, stale and unknown reports are acked and change nothing."""
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a", cores=32)
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    array = {"spec": {"command": ["true"], "resources": {"cpu_cores": 1, "memory_bytes": 64 << 20}}, "count": 30}
    await stack.http.post("/v1/jobs/array", json=array, headers=user)
    assignments = [await agent.next_of("assignment") for _ in range(30)]
    reports: list[dict[str, Any]] = []
    for a in assignments:
        job, attempt = a["job_id"], a["attempt"]
        finished = {"type": "finished", "job_id": job, "attempt": attempt, "outcome": "succeeded", "exit_code": 0,
                    "duration_s": 0.01, "output": job}  # fmt: skip
        reports += [{"type": "started", "job_id": job, "attempt": attempt}, finished]
    reports += [reports[1], {**reports[3], "attempt": 2}, {**reports[5], "job_id": "no-such-job"}]
    for report in reports:
        await agent.ws.send(json.dumps(report))
    acks = [await agent.next_of("ack") for _ in reports]
    assert [(a["job_id"], a["report"]) for a in acks] == [(r["job_id"], r["type"]) for r in reports]

    for a in assignments:
        done = await job_status(stack, user, a["job_id"], "succeeded")
        assert done["attempt"] == 1
        output = (await stack.http.get(f"/v1/jobs/{a['job_id']}/output", headers=user)).json()
        assert output["output"] == a["job_id"]
    db = await asyncpg.connect(stack.scheduler_db.owner_dsn)
    try:
        counted = f"SELECT count(*) FROM {stack.scheduler_db.schema}.outbox WHERE subject = $1"
        assert await db.fetchval(counted, JobStarted.TYPE.subject) == 30
        assert await db.fetchval(counted, JobCompleted.TYPE.subject) == 30, "one completion per job"
    finally:
        await db.close()


async def test_a_job_no_node_fits_stays_pending_and_explain_says_why(stack: Stack) -> None:
    url = await stack.serve_gateway()
    await ready_node(stack, url, await provider(stack), "small", cores=2)
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    await wait_until(lambda: queue_gauges_show(pending=0), timeout=5, what="the scheduler's queue gauges, no job yet")
    spec = {"command": ["true"], "resources": {"cpu_cores": 8}, "constraints": {"arch": "aarch64"}}
    job = (await stack.http.post("/v1/jobs", json=spec, headers=user)).json()

    async def explained() -> dict[str, Any] | None:
        why = (await stack.http.get(f"/v1/jobs/{job['id']}/explain", headers=user)).json()
        return why if why["filtered"] else None

    why = await wait_until(explained, timeout=5, what="an explanation")
    assert why["status"] == "pending"
    assert why["filtered"] == {"architecture is not aarch64": 1}
    assert "no node fits" in why["summary"]
    await wait_until(lambda: queue_gauges_show(pending=1), timeout=5, what="the pending job in the queue gauges")


async def queue_gauges_show(pending: int) -> bool:
    """What the scheduler's /metrics says: it leads placement, and counts ``pending`` jobs waiting."""
    leading = REGISTRY.get_sample_value("fog_scheduler_leading")
    return leading == 1 and REGISTRY.get_sample_value("fog_scheduler_jobs", {"status": "pending"}) == pending


async def test_a_failing_job_is_retried_then_fails_and_a_lost_job_moves_to_another_node(stack: Stack) -> None:
    url = await stack.serve_gateway()
    owner = await provider(stack)
    first = await ready_node(stack, url, owner, "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["false"], "max_attempts": 2, "retry_backoff_s": 0}
    job = (await stack.http.post("/v1/jobs", json=spec, headers=user)).json()
    for attempt in (1, 2):
        assignment = await first.next_of("assignment")
        assert assignment["attempt"] == attempt
        await first.run(assignment, outcome="failed", exit_code=1)
    failed = await job_status(stack, user, job["id"], "failed")
    assert (failed["attempt"], failed["exit_code"]) == (2, 1)
    # What the job's history tells an operator: each attempt's failure, why, and what came next.
    events = await failed_events(stack, job["id"], count=2)
    assert [(e["attempt"], e["exit_code"], e["retried"], e["node_fault"]) for e in events] == [
        (1, 1, True, False), (2, 1, False, False),
    ]  # fmt: skip
    assert events[0]["reason"] == "attempt 1 of 2 failed: exit code 1; tried again in 0 s"
    assert events[1]["reason"] == "attempt 2 of 2 failed: exit code 1; no attempts left"

    lost = (await stack.http.post("/v1/jobs", json={"command": ["sleep", "1"]}, headers=user)).json()
    assignment = await first.next_of("assignment")
    await first.report({"type": "started", "job_id": lost["id"], "attempt": 1})
    second = await ready_node(stack, url, owner, "b")
    await first.die()  # no more heartbeats: suspect, then down
    moved = await second.next_of("assignment")
    assert (moved["job_id"], moved["attempt"]) == (lost["id"], 2)
    await second.run(moved)
    done = await job_status(stack, user, lost["id"], "succeeded")
    assert done["node_id"] == second.node_id
    assert assignment["attempt"] == 1


async def failed_events(stack: Stack, job_id: str, *, count: int) -> list[dict[str, Any]]:
    """The data of the job's ``job.failed`` events, as an admin reads them in its history, once ``count`` are in."""
    admin = stack.bearer(await stack.admin())
    params = {"subject": JobFailed.TYPE.subject, "aggregate_id": job_id}

    async def recorded() -> list[dict[str, Any]] | None:
        page = (await stack.http.get("/v1/admin/events", params=params, headers=admin)).json()
        return [event["data"] for event in page["items"]] if len(page["items"]) >= count else None

    return await wait_until(recorded, what=f"{count} job.failed events in the history")


async def test_cancel_tells_the_node_and_idempotent_submits_make_one_job(stack: Stack) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["sleep", "100"], "idempotency_key": "nightly-1"}
    first = await stack.http.post("/v1/jobs", json=spec, headers=user)
    again = await stack.http.post("/v1/jobs", json=spec, headers=user)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    assignment = await agent.next_of("assignment")
    await agent.report({"type": "started", "job_id": assignment["job_id"], "attempt": 1})
    cancelled = await stack.http.post(f"/v1/jobs/{assignment['job_id']}/cancel", headers=user)
    assert cancelled.json()["status"] == "cancelled"
    told = await agent.next_of("cancel")
    assert (told["job_id"], told["attempt"]) == (assignment["job_id"], 1)


async def test_concurrent_submits_with_one_idempotency_key_make_one_job_and_one_event(stack: Stack) -> None:
    # The stack's gateways cut requests at 2 s; eight submits queued behind one key on a loaded machine
    # may take longer, and that is not what this test is about (it failed once so, with one non-2xx answer).
    gateway = await stack.open_gateway(request_timeout_s=10.0)
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["true"], "idempotency_key": "once"}
    answers = await asyncio.gather(*(gateway.post("/v1/jobs", json=spec, headers=user) for _ in range(8)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 7 + [201], [answer.text for answer in answers if answer.status_code not in (200, 201)]
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert len((await stack.http.get("/v1/jobs", headers=user)).json()["items"]) == 1
    db = await asyncpg.connect(stack.scheduler_db.owner_dsn)
    try:
        counted = f"SELECT count(*) FROM {stack.scheduler_db.schema}.outbox WHERE subject = $1"
        submitted = await db.fetchval(counted, JobSubmitted.TYPE.subject)
    finally:
        await db.close()
    assert submitted == 1


async def test_bad_specs_get_422_and_create_nothing(stack: Stack) -> None:
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    bad = [
        {"command": []},
        {"command": [""]},
        {"command": ["true"], "resources": {"cpu_cores": -1}},
        {"command": ["true"], "resources": {"memory_bytes": -5}},
        {"command": ["true"], "resources": {"disk_bytes": -1}},
        {"command": ["true"], "resources": {"disk_bytes": 1 << 51}},
        {"command": ["true"], "env": {"BIG": "x" * 40_000}},
        {"command": ["true"], "env": {"1BAD": "x"}},
        {"command": "true"},
        # NUL, which PostgreSQL's text and jsonb cannot hold, anywhere a spec carries text
        {"command": ["echo", "a\x00b"]},
        {"command": ["true"], "env": {"A": "\x00"}},
        {"command": ["true"], "name": "a\x00"},
        {"command": ["true"], "idempotency_key": "k\x00"},
        {"command": ["true"], "constraints": {"labels": {"zone": "a\x00"}}},
        {"command": ["true"], "affinities": [{"label": "zone", "value": "\x00", "weight": 1}]},
    ]
    for spec in bad:
        refused = await stack.http.post("/v1/jobs", json=spec, headers=user)
        assert refused.status_code == 422, spec
    assert (await stack.http.get("/v1/jobs", headers=user)).json()["items"] == []


async def test_a_job_after_others_runs_once_they_succeeded_and_never_after_one_that_failed(stack: Stack) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    first = (await stack.http.post("/v1/jobs", json={"command": ["make"], "max_attempts": 1}, headers=user)).json()
    then_spec = {"command": ["test"], "after": [first["id"]], "max_attempts": 1}
    then = await stack.http.post("/v1/jobs", json=then_spec, headers=user)
    assert then.status_code == 201, then.text
    assert (then.json()["spec"]["after"], then.json()["waiting_for"]) == ([first["id"]], 1)
    last = (await stack.http.post("/v1/jobs", json={"command": ["ship"], "after": [then.json()["id"]]},
                                  headers=user)).json()  # fmt: skip
    explained = (await stack.http.get(f"/v1/jobs/{last['id']}/explain", headers=user)).json()
    assert explained["waiting_for"] == [{"job_id": then.json()["id"], "status": "pending", "needs": "success"}]
    assert explained["waiting_count"] == 1
    assert explained["summary"] == f"waiting for job first: {then.json()['id']} to succeed (pending)"

    await agent.run(await agent.next_of("assignment"))  # make succeeded: test is placed
    assert (await job_status(stack, user, then.json()["id"], "assigned"))["waiting_for"] == 0
    assignment = await agent.next_of("assignment")
    assert assignment["command"] == ["test"]
    await agent.run(assignment, outcome="failed", exit_code=1)  # test failed: ship will never run
    shipped = await job_status(stack, user, last["id"], "cancelled")
    assert shipped["error"] == f"never ran: job {then.json()['id']}, which it was to run after, ended failed"

    other = stack.bearer(await stack.register_and_login("vic@example.org"))
    for after, code in (([first["id"]], "invalid_dependency"), (["not-an-id"], "invalid")):
        refused = await stack.http.post("/v1/jobs", json={"command": ["true"], "after": after}, headers=other)
        assert (refused.status_code, refused.json()["code"]) == (422, code), refused.text
    not_an_id = await stack.http.post("/v1/jobs", json={"command": ["true"], "after": ["nope"]}, headers=other)
    assert "'nope' is not the id of a job or an array" in not_an_id.text
    failed_one = await stack.http.post("/v1/jobs", json={"command": ["true"], "after": [then.json()["id"]]},
                                       headers=user)  # fmt: skip
    assert (failed_one.status_code, failed_one.json()["code"]) == (422, "invalid_dependency")
    assert "ended failed; a job after it would never run" in failed_one.json()["detail"]
    assert len((await stack.http.get("/v1/jobs", headers=user)).json()["items"]) == 3


async def test_an_array_submits_n_jobs_and_pages(stack: Stack) -> None:
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    array = (
        await stack.http.post("/v1/jobs/array", json={"spec": {"command": ["true"]}, "count": 25}, headers=user)
    ).json()
    assert array["count"] == 25
    lone = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)).json()

    async def listed(**params: str) -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            query = {"limit": 10, **params, **({"cursor": cursor} if cursor else {})}
            page = (await stack.http.get("/v1/jobs", params=query, headers=user)).json()
            seen += [j["id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                return seen

    oldest_first = await listed()
    assert sorted(oldest_first[:25]) == sorted(array["job_ids"])
    assert oldest_first[-1] == lone["id"]
    assert await listed(order="oldest") == oldest_first
    assert await listed(order="newest") == oldest_first[::-1]  # the lone job, submitted last, first
    refused = await stack.http.get("/v1/jobs", params={"order": "random"}, headers=user)
    assert refused.status_code == 422


async def test_jobs_are_listed_by_name_exactly(stack: Stack) -> None:
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    other = stack.bearer(await stack.register_and_login("vic@example.org"))
    named = []
    for name in ("nightly", "nightly-2", "nightly", None):
        spec = {"command": ["true"], **({"name": name} if name else {})}
        named.append((await stack.http.post("/v1/jobs", json=spec, headers=user)).json()["id"])
    await stack.http.post("/v1/jobs", json={"command": ["true"], "name": "nightly"}, headers=other)
    page = (await stack.http.get("/v1/jobs", params={"name": "nightly", "limit": 1}, headers=user)).json()
    assert [j["id"] for j in page["items"]] == [named[0]]
    rest = await stack.http.get("/v1/jobs", params={"name": "nightly", "cursor": page["next_cursor"]}, headers=user)
    assert [j["id"] for j in rest.json()["items"]] == [named[2]]  # not nightly-2, not another user's
    assert rest.json()["next_cursor"] is None
    none = await stack.http.get("/v1/jobs", params={"name": "weekly"}, headers=user)
    assert none.json()["items"] == []
    assert (await stack.http.get("/v1/jobs", params={"name": ""}, headers=user)).status_code == 422


async def test_an_array_is_summed_up_and_cancelled_whole_its_running_jobs_killed_on_their_node(stack: Stack) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a", cores=2)
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    spec = {"command": ["sleep", "100"], "resources": {"cpu_cores": 1}}
    array = (await stack.http.post("/v1/jobs/array", json={"spec": spec, "count": 5}, headers=user)).json()
    summary_path = f"/v1/jobs/arrays/{array['array_id']}"
    placed = [await agent.next_of("assignment"), await agent.next_of("assignment")]  # the node has room for two
    await agent.run(placed[0])  # one ends before the cancel
    await agent.report({"type": "started", "job_id": placed[1]["job_id"], "attempt": 1})

    async def settled() -> dict[str, Any] | None:
        summary = (await stack.http.get(summary_path, headers=user)).json()
        return summary if summary["statuses"] == {"succeeded": 1, "running": 1, "assigned": 1, "pending": 2} else None

    before = await wait_until(settled, timeout=10, what="the second job running, a third placed in the first's room")
    assert (before["count"], before["ended"]) == (5, 1)
    third = await agent.next_of("assignment")

    other = stack.bearer(await stack.register_and_login("vic@example.org"))
    assert (await stack.http.get(summary_path, headers=other)).status_code == 404
    assert (await stack.http.post(f"{summary_path}/cancel", headers=other)).status_code == 404
    assert (await stack.http.get(summary_path, headers=user)).json() == before, "someone else's cancel did nothing"

    cancelled = await stack.http.post(f"{summary_path}/cancel", headers=user)
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert (body["ended"], body["statuses"]) == (5, {"succeeded": 1, "cancelled": 4})
    jobs = (await stack.http.get("/v1/jobs", params={"array_id": array["array_id"]}, headers=user)).json()["items"]
    assert sorted(job["status"] for job in jobs) == ["cancelled"] * 4 + ["succeeded"]
    told = {(await agent.next_of("cancel"))["job_id"] for _ in range(2)}
    assert told == {placed[1]["job_id"], third["job_id"]}, "the node is told to kill the running and the assigned job"
    assert (await stack.http.post(f"{summary_path}/cancel", headers=user)).json() == body


async def test_a_large_array_is_given_longer_than_a_requests_usual_timeout(stack: Stack) -> None:
    """10,000 jobs take about a second to write, and 100,000 about ten: more than a request's usual few
    seconds, here cut to 0.2 s."""
    gateway = await stack.open_gateway(request_timeout_s=0.2)
    tokens = await stack.register_and_login("uma@example.org")
    user = stack.bearer(tokens)
    # The token checked, the cut in force. A first call may pass 0.2 s on a loaded machine (this new gateway
    # fetches auth's keys first): asked again until answered, within a deadline.
    await stack.until_status("/v1/jobs", tokens, 200, http=gateway, timeout=15)
    spec = {"command": ["true"], "constraints": {"labels": {"pool": "none"}}}
    submitted = await gateway.post("/v1/jobs/array", json={"spec": spec, "count": 10_000}, headers=user)
    assert submitted.status_code == 201, submitted.text
    cancelled = await gateway.post(f"/v1/jobs/arrays/{submitted.json()['array_id']}/cancel", headers=user)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["statuses"] == {"cancelled": 10_000}


async def test_a_node_back_while_the_scheduler_is_away_gets_its_jobs_once_the_scheduler_answers(
    stack: Stack,
) -> None:
    """A job placed on a node is sent again when the node reconnects; if the scheduler cannot say
    what is placed there at that moment, the gateway asks again until it can."""
    url = await stack.serve_gateway()
    owner = await provider(stack)
    agent = await ready_node(stack, url, owner, "edge", cores=4)
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    job = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)).json()
    first = await agent.next_of("assignment")
    assert first["job_id"] == job["id"]
    await agent.die()  # before running it; back before the registry would take the node down (2 s)
    async with stack.scheduler_away():
        ws_url = url.replace("http://", "ws://") + "/v1/nodes/connect"
        ws = await connect(ws_url, additional_headers={"Authorization": f"Bearer {agent.credential}"})
        agent = FakeAgent(ws, agent.node_id, agent.credential)
        await agent.next_of("welcome")
        agent.keep_beating()
        with pytest.raises(TimeoutError):
            await agent.next_of("assignment", timeout=0.5)  # nobody can say what is placed here yet
    again = await agent.next_of("assignment", timeout=15)
    assert (again["job_id"], again["attempt"]) == (job["id"], first["attempt"])
    await agent.run(again)
    await job_status(stack, user, job["id"], "succeeded")
    await agent.die()


async def test_restarting_the_scheduler_during_a_job_array_loses_none_and_runs_none_twice(stack: Stack) -> None:
    """400 jobs here, with simulated agents; tests/e2e/test_jobs_e2e.py runs 1,000 on real ones."""
    url = await stack.serve_gateway()
    owner = await provider(stack)
    agents = [await ready_node(stack, url, owner, name, cores=4) for name in ("a", "b")]
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    runs: list[tuple[str, int]] = []

    async def work(agent: FakeAgent) -> None:
        done: set[tuple[str, int]] = set()
        while True:
            try:
                assignment = await agent.next_of("assignment")
            except TimeoutError:
                continue  # nothing to do for a while (the scheduler is restarting): keep listening
            key = (assignment["job_id"], assignment["attempt"])
            if key in done:
                continue  # sent again after a reconnect or a restart: run once
            done.add(key)
            runs.append(key)
            await agent.run(assignment)

    workers = [asyncio.create_task(work(agent)) for agent in agents]
    try:
        array = {"spec": {"command": ["true"], "resources": {"cpu_cores": 0.5}}, "count": 400}
        submitted = (await stack.http.post("/v1/jobs/array", json=array, headers=user)).json()
        array_id = submitted["array_id"]

        async def succeeded() -> int:
            page = await stack.http.get("/v1/jobs", params={"array_id": array_id, "status": "succeeded", "limit": 400},
                                        headers=user)  # fmt: skip
            if page.status_code == 503:  # the busy scheduler did not answer in time: ask again
                return 0
            assert page.status_code == 200, page.text
            return len(page.json()["items"])

        await wait_until(lambda: _at_least(succeeded(), 100), timeout=120, what="some jobs done")
        await stack.restart_scheduler()
        await wait_until(lambda: _at_least(succeeded(), 400), timeout=200, interval=0.5, what="every job done")
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    assert sorted(run for run in set(runs) if runs.count(run) > 1) == [], "no attempt ran twice"
    assert len({job for job, _ in runs}) == 400, "none lost"
    # A job runs again only as the next attempt of one lost with its node. Here a node goes down only
    # if the loaded test process keeps its heartbeats back for 4 intervals (2 s): then it is right.
    retried = sorted(run for run in runs if run[1] > 1)
    lost = await _lost_attempts(stack)
    assert [(job, attempt - 1) for job, attempt in retried if (job, attempt - 1) not in lost] == [], (
        f"each job ran again (job, attempt) only after its attempt before was lost: {retried}"
    )


async def _lost_attempts(stack: Stack) -> set[tuple[str, int]]:
    db = await asyncpg.connect(stack.scheduler_db.owner_dsn)
    try:
        bodies = await db.fetch(
            f"SELECT body FROM {stack.scheduler_db.schema}.outbox WHERE subject = $1", JobLost.TYPE.subject
        )
    finally:
        await db.close()
    return {(event.job_id, event.attempt) for event in (JobLost.from_json(row["body"]) for row in bodies)}


async def _at_least(count: Any, expected: int) -> bool:
    return bool(await count >= expected)


async def test_owners_take_turns_a_big_array_does_not_starve_a_single_job(stack: Stack) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "solo", cores=1)
    alice = stack.bearer(await stack.register_and_login("alice@example.org"))
    bob = stack.bearer(await stack.register_and_login("bob@example.org"))
    array = {"spec": {"command": ["true"], "resources": {"cpu_cores": 1}}, "count": 50}
    await stack.http.post("/v1/jobs/array", json=array, headers=alice)
    first = await agent.next_of("assignment")  # the node runs one job at a time
    single = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=bob)).json()
    assert single["status"] == "pending", "with jobs waiting, a new one is not placed at submit: it takes its turn"
    order = [first["job_id"]]
    await agent.run(first)
    while single["id"] not in order:
        assignment = await agent.next_of("assignment")
        order.append(assignment["job_id"])
        await agent.run(assignment)
    assert order.index(single["id"]) <= 2, "bob's job ran after at most one more of alice's"


async def test_owners_see_their_jobs_change_live(stack: Stack) -> None:
    """Each state the job stays in is seen; states that pass faster than the feed may be told as the one
    after them (the owner is told of the job as it is by then)."""
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    tokens = await stack.register_and_login("uma@example.org")
    ws_url = url.replace("http://", "ws://") + "/v1/jobs/updates"
    async with connect(ws_url, additional_headers=stack.bearer(tokens)) as updates:

        async def until_seen(status: str) -> list[str]:
            seen: list[str] = []
            while status not in seen:
                message = json.loads(await asyncio.wait_for(updates.recv(), timeout=10))
                assert message["job"]["id"] == job["id"]
                seen.append(message["job"]["status"])
            return seen

        job = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=stack.bearer(tokens))).json()
        assignment = await agent.next_of("assignment")
        assert set(await until_seen("assigned")) <= {"pending", "assigned"}
        await agent.report({"type": "started", "job_id": job["id"], "attempt": assignment["attempt"]})
        assert (await until_seen("running"))[-1] == "running"
        await agent.report({"type": "finished", "job_id": job["id"], "attempt": assignment["attempt"],
                            "outcome": "succeeded", "exit_code": 0, "duration_s": 0.01, "output": ""})  # fmt: skip
        assert (await until_seen("succeeded"))[-1] == "succeeded"


async def test_an_owner_watching_sees_every_job_of_an_array(stack: Stack) -> None:
    url = await stack.serve_gateway()
    tokens = await stack.register_and_login("uma@example.org")
    ws_url = url.replace("http://", "ws://") + "/v1/jobs/updates"
    async with connect(ws_url, additional_headers=stack.bearer(tokens)) as updates:
        spec = {"command": ["true"], "constraints": {"labels": {"pool": "none"}}}  # no node: they stay pending
        body = {"spec": spec, "count": 450}  # more than one request's worth of jobs (200)
        array = (await stack.http.post("/v1/jobs/array", json=body, headers=stack.bearer(tokens))).json()
        seen: dict[str, str] = {}
        while len(seen) < 450:
            message = json.loads(await asyncio.wait_for(updates.recv(), timeout=10))
            seen[message["job"]["id"]] = message["job"]["status"]
    assert seen == dict.fromkeys(array["job_ids"], "pending")


async def test_a_placement_is_pushed_to_the_gateways_once_committed_and_reaches_its_node_once(
    stack: Stack, fog_servers: Servers
) -> None:
    """The fast path: the scheduler pushes what it placed as soon as the placement commits; the
    gateway holding the node's link sends it on, and does not send it again when the job's
    ``job.assigned`` event comes."""
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    nc, db = await nats.connect(fog_servers.nats_url), await asyncpg.connect(stack.scheduler_db.owner_dsn)
    pushes: asyncio.Queue[tuple[AssignmentPush, asyncpg.Record | None]] = asyncio.Queue()

    async def on_push(msg: Msg) -> None:
        push = AssignmentPush.model_validate_json(msg.data)
        job_id = push.assignments[0].assignment.job_id
        row = await db.fetchrow(
            f"SELECT status, node_id FROM {stack.scheduler_db.schema}.jobs WHERE id = $1::uuid", job_id
        )
        await pushes.put((push, row))

    try:
        await nc.subscribe(ASSIGNMENTS, cb=on_push)
        await nc.flush()
        job = (await stack.http.post("/v1/jobs", json={"command": ["echo", "hi"]}, headers=user)).json()
        push, row = await asyncio.wait_for(pushes.get(), timeout=10)
        [pushed] = push.assignments
        assert (pushed.node_id, pushed.assignment.job_id, pushed.assignment.attempt) == (agent.node_id, job["id"], 1)
        assert pushed.assignment.command == ["echo", "hi"]
        assert row is not None, "committed before it was pushed"
        assert (row["status"], row["node_id"]) == ("assigned", agent.node_id)

        assert (await agent.next_of("assignment"))["job_id"] == job["id"]
        # The cancel comes through the job's events, after its job.assigned: by then that event was handled.
        assert (await stack.http.post(f"/v1/jobs/{job['id']}/cancel", headers=user)).status_code == 200
        assert (await agent.next_of("cancel"))["job_id"] == job["id"]
        assert [m for m in agent.unread if m["type"] == "assignment"] == [], "the node heard of the job once"
    finally:
        await nc.close()
        await db.close()


async def test_a_pushed_assignment_reaches_its_node_without_waiting_for_an_event(
    stack: Stack, fog_servers: Servers
) -> None:
    url = await stack.serve_gateway()
    agent = await ready_node(stack, url, await provider(stack), "a")
    assignment = Assignment(
        job_id="pushed-only", attempt=1, command=["true"], env={}, timeout_s=60.0, resources=Resources()
    )
    nc = await nats.connect(fog_servers.nats_url)
    try:
        push = AssignmentPush(assignments=[NodeAssignment(node_id=agent.node_id, assignment=assignment)])
        await nc.publish(ASSIGNMENTS, push.model_dump_json().encode())
        received = await agent.next_of("assignment")
        # A newer scheduler's push, with a field this gateway does not know: relayed at once, the field with it.
        newer = {**assignment.model_dump(mode="json"), "job_id": "pushed-newer", "memory_max_bytes": 1 << 30}
        relay = {"assignments": [{"node_id": agent.node_id, "assignment": newer}]}
        await nc.publish(ASSIGNMENTS, json.dumps(relay).encode())
        relayed = await agent.next_of("assignment")
    finally:
        await nc.close()
    assert received == {"type": "assignment", **assignment.model_dump(mode="json")}
    assert relayed == {"type": "assignment", **newer}


# -- peers of another version: a newer agent, a newer scheduler ----------------------------------------
async def test_a_newer_agents_messages_with_fields_this_gateway_does_not_know_are_taken(stack: Stack) -> None:
    """Owners upgrade agents when they choose: a field added to a heartbeat or a report must not cut the node off."""
    url, owner = await stack.serve_gateway(), await provider(stack)
    agent = await ready_node(stack, url, owner, "a")
    beat = {"type": "heartbeat", "node_id": agent.node_id, "seq": 10_000, "running_jobs": 0,
            "usage": {**USAGE, "cpu_percent": 42.0, "gpu_percent": 7.0}, "temperature_c": 51}  # fmt: skip
    await agent.ws.send(json.dumps(beat))

    async def beat_taken() -> bool:
        node = (await stack.http.get(f"/v1/nodes/{agent.node_id}", headers=owner)).json()
        return bool(node["usage"]) and node["usage"]["cpu_percent"] == 42.0

    await wait_until(beat_taken, what="the newer heartbeat recorded")
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    job_id = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)).json()["id"]
    assignment = await agent.next_of("assignment")
    key = {"job_id": job_id, "attempt": assignment["attempt"]}
    await agent.report({"type": "started", **key, "cgroup": "/fog/job-1"})
    await agent.report({"type": "finished", **key, "outcome": "succeeded", "exit_code": 0, "duration_s": 0.01,
                        "output": "", "oom_killed": False})  # fmt: skip
    assert (await job_status(stack, user, job_id, "succeeded"))["node_id"] == agent.node_id
    assert [m for m in agent.unread if m["type"] == "error"] == []


async def test_a_newer_schedulers_replies_are_answered_without_the_fields_this_gateway_does_not_know(
    stack: Stack, fog_servers: Servers
) -> None:
    """Services roll out one at a time: a field a newer scheduler adds to a job (at any depth) is left out here
    until this gateway is upgraded too, instead of failing every such request with a 500."""
    user = stack.bearer(await stack.register_and_login("uma@example.org"))
    job = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=user)).json()
    newer = {**job, "carbon_g": 0.3, "spec": {**job["spec"], "checkpoint": {"every_s": 60}}}
    nc = await nats.connect(fog_servers.nats_url)
    try:
        async with stack.scheduler_away():

            async def answer_as_a_newer_scheduler(msg: Msg) -> None:
                await msg.respond(json.dumps(newer).encode())

            await nc.subscribe(GET_JOB, cb=answer_as_a_newer_scheduler)
            await nc.flush()
            answered = await stack.http.get(f"/v1/jobs/{job['id']}", headers=user)
            assert answered.status_code == 200, answered.text
            assert answered.json() == job
    finally:
        await nc.close()


async def test_assignments_a_node_catches_up_on_reach_it_with_every_field_the_scheduler_wrote(
    stack: Stack, fog_servers: Servers
) -> None:
    """Fields a newer scheduler adds to an assignment are for the agent: the gateway passes them on, not drops them."""
    url, owner = await stack.serve_gateway(), await provider(stack)
    first = await ready_node(stack, url, owner, "a")
    await first.die()
    assignment = Assignment(job_id="job-from-a-newer-scheduler", attempt=1, command=["true"], env={}, timeout_s=60,
                            resources=Resources()).model_dump(mode="json") | {"memory_max_bytes": 1 << 30}  # fmt: skip
    nc = await nats.connect(fog_servers.nats_url)
    try:
        async with stack.scheduler_away():

            async def answer_as_a_newer_scheduler(msg: Msg) -> None:
                await msg.respond(json.dumps({"assignments": [assignment], "cancelled": [], "epoch": 2}).encode())

            await nc.subscribe(NODE_ASSIGNMENTS, cb=answer_as_a_newer_scheduler)
            await nc.flush()
            ws_url = url.replace("http://", "ws://") + "/v1/nodes/connect"
            ws = await connect(ws_url, additional_headers={"Authorization": f"Bearer {first.credential}"})
            again = FakeAgent(ws, first.node_id, first.credential)
            try:
                caught_up = await again.next_of("assignment")
            finally:
                await again.die()
            assert caught_up == {"type": "assignment", **assignment}
    finally:
        await nc.close()


class Recording(httpx.AsyncHTTPTransport):
    """A client's transport that notes the status and request id of every answer it got."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.request_ids: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        self.request_ids.append(response.headers.get("X-Request-ID", ""))
        return response


class AccessLogLines(logging.Handler):
    """The gateway's access-log records, each with the request id in force when it was logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: list[tuple[logging.LogRecord, str | None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record, correlation_id()))


async def test_a_clients_read_during_a_scheduler_restart_is_answered_once_it_is_back(stack: Stack) -> None:
    url = await stack.serve_gateway()
    tokens = await stack.register_and_login("uma@example.org")
    job_id = (await stack.http.post("/v1/jobs", json={"command": ["true"]}, headers=stack.bearer(tokens))).json()["id"]
    transport, access_log = Recording(), AccessLogLines()
    logging.getLogger("fog_gateway.access_log").addHandler(access_log)
    # Enough tries, a second apart (the gateway's Retry-After), to outlast a scheduler's start on a loaded machine.
    try:
        async with FogClient(url, access_token=tokens["access_token"], transport=transport, retries=30) as fog:
            async with stack.scheduler_away():
                reading = asyncio.create_task(fog.get_job(job_id))

                async def turned_away() -> bool:
                    return 503 in transport.statuses

                await wait_until(turned_away, what="the read turned away while the scheduler is gone")
            job = await reading
    finally:
        logging.getLogger("fog_gateway.access_log").removeHandler(access_log)
    assert job.id == job_id
    assert transport.statuses[0] == 503
    assert transport.statuses[-1] == 200
    # Each 503 is in the gateway's log, under the request id the client was told; the 200 is not.
    answers = zip(transport.request_ids, transport.statuses, strict=True)
    turned_away_ids = [request_id for request_id, status in answers if status == 503]
    logged = [(logged_id, vars(record)["status"], vars(record)["route"], vars(record)["problem_code"])
              for record, logged_id in access_log.seen]  # fmt: skip
    assert logged == [(request_id, 503, "/v1/jobs/{job_id}", "service_unavailable") for request_id in turned_away_ids]
