"""Nodes through the gateway: registration, the agent WebSocket, liveness, drain, revocation.

A real auth service, a real registry (liveness at test speed: 0.3 s heartbeats) and a gateway
served by uvicorn on a real port, all on the session's real NATS and Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats
import pytest
from gateway_stack import HEARTBEAT_INTERVAL_S, Stack
from nats.js import JetStreamContext
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fog_shared.commands.registry import HEARTBEATS, HeartbeatBatch
from fog_shared.events.registry import NodeStatusChanged
from fog_shared.testing.plugin import Servers
from fog_shared.testing.waiting import wait_until

CAPABILITIES = {"cpu_cores": 4, "memory_bytes": 8 << 30, "disk_bytes": 100 << 30, "arch": "x86_64", "os": "Linux 6.1"}
USAGE = {"cpu_percent": 3.5, "memory_used_bytes": 1 << 30, "disk_used_bytes": 10 << 30}


async def provider(stack: Stack, email: str = "pat@example.org") -> dict[str, str]:
    return stack.bearer(await stack.register_and_login(email, roles=["user", "provider"]))


async def register_node(stack: Stack, owner: dict[str, str], name: str = "edge-1", **extra: Any) -> dict[str, Any]:
    created = await stack.http.post(
        "/v1/nodes", json={"name": name, "capabilities": CAPABILITIES, **extra}, headers=owner
    )
    assert created.status_code == 201, created.text
    return dict(created.json())


def heartbeat(node_id: str, seq: int) -> str:
    return json.dumps({"type": "heartbeat", "node_id": node_id, "seq": seq, "running_jobs": 0, "usage": USAGE})


async def status_of(stack: Stack, owner: dict[str, str], node_id: str) -> str:
    return str((await stack.http.get(f"/v1/nodes/{node_id}", headers=owner)).json()["status"])


async def until_status(stack: Stack, owner: dict[str, str], node_id: str, status: str, timeout: float = 5.0) -> None:
    async def reached() -> bool:
        return await status_of(stack, owner, node_id) == status

    await wait_until(reached, timeout=timeout, interval=0.05, what=f"node {status}")


@pytest.fixture
async def gateway_url(stack: Stack) -> str:
    return await stack.serve_gateway()


async def agent(url: str, credential: str) -> ClientConnection:
    ws_url = url.replace("http://", "ws://") + "/v1/nodes/connect"
    return await connect(ws_url, additional_headers={"Authorization": f"Bearer {credential}"})


async def transitions(js: JetStreamContext, node_id: str) -> list[str]:
    """Every status the registry announced for the node, in order."""
    statuses = []
    sub = await js.subscribe(NodeStatusChanged.TYPE.subject, ordered_consumer=True)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except TimeoutError:
                return statuses
            event = NodeStatusChanged.from_json(msg.data)
            if event.node_id == node_id:
                statuses.append(event.status)
    finally:
        await sub.unsubscribe()


async def test_a_node_joins_goes_ready_then_suspect_then_down_with_one_event_each(
    stack: Stack, gateway_url: str, jetstream: JetStreamContext
) -> None:
    owner = await provider(stack)
    registered = await register_node(stack, owner, labels={"site": "shop"}, region="eu-west")
    node_id, credential = registered["node"]["id"], registered["credential"]
    assert registered["node"]["status"] == "down", "not ready before its first heartbeat"
    async with await agent(gateway_url, credential) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome == {
            "type": "welcome", "node_id": node_id, "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
            "features": ["usage", "files"],
        }  # fmt: skip
        # Beating as an agent does until the node shows ready: one heartbeat alone gave a loaded CI machine three
        # intervals to make it ready and show it, and it once took longer.
        beating = asyncio.create_task(beat_every_interval(ws, node_id))
        try:
            await until_status(stack, owner, node_id, "ready", timeout=10)
        finally:
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
    # The agent is gone without a goodbye (as after kill -9): suspect, then down.
    await until_status(stack, owner, node_id, "suspect")
    await until_status(stack, owner, node_id, "down")
    await wait_until(
        lambda: _equals(transitions(jetstream, node_id), ["ready", "suspect", "down"]), timeout=5, what="events"
    )
    listed = (await stack.http.get("/v1/nodes?label=site=shop&status=down", headers=owner)).json()["items"]
    assert [n["id"] for n in listed] == [node_id]
    assert listed[0]["usage"] == USAGE


async def beat_every_interval(ws: ClientConnection, node_id: str) -> None:
    """An agent's heartbeats, at its cadence, until cancelled."""
    seq = 0
    while True:
        seq += 1
        await ws.send(heartbeat(node_id, seq))
        await asyncio.sleep(HEARTBEAT_INTERVAL_S)  # the protocol's pace, not a wait for something to happen


async def _equals(result: Any, expected: Any) -> bool:
    return bool(await result == expected)


async def test_a_node_cannot_heartbeat_for_another_node(stack: Stack, gateway_url: str) -> None:
    owner = await provider(stack)
    mine, other = await register_node(stack, owner, "a"), await register_node(stack, owner, "b")
    async with await agent(gateway_url, mine["credential"]) as ws:
        await ws.recv()
        await ws.send(heartbeat(other["node"]["id"], 1))
        refusal = json.loads(await ws.recv())
        assert refusal["code"] == "forbidden"
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403
    assert await status_of(stack, owner, other["node"]["id"]) == "down", "nothing changed for the other node"
    http_beat = await stack.http.post(
        f"/v1/nodes/{other['node']['id']}/heartbeat",
        content=heartbeat(other["node"]["id"], 1),
        headers={"Authorization": f"Bearer {mine['credential']}", "content-type": "application/json"},
    )
    assert http_beat.status_code == 403


async def test_malformed_capabilities_and_heartbeats_get_422_and_change_nothing(stack: Stack, gateway_url: str) -> None:
    owner = await provider(stack)
    bad = [
        {"name": "x", "capabilities": {**CAPABILITIES, "cpu_cores": 0}},
        {"name": "x", "capabilities": {**CAPABILITIES, "memory_bytes": "8G"}},
        {"name": "x", "capabilities": CAPABILITIES, "labels": {"Bad Key": "v"}},
        {"name": "x", "capabilities": CAPABILITIES, "location": {"lat": 91, "lon": 0}},
        {"name": "x", "capabilities": {**CAPABILITIES, "cpu_cores": 4.0}},
    ]
    for body in bad:
        refused = await stack.http.post("/v1/nodes", json=body, headers=owner)
        assert refused.status_code == 422, body
        assert refused.json()["errors"], "the reason is given"
    assert (await stack.http.get("/v1/nodes", headers=owner)).json()["items"] == []

    node = await register_node(stack, owner)
    node_id, node_auth = node["node"]["id"], {"Authorization": f"Bearer {node['credential']}"}
    malformed = {"type": "heartbeat", "node_id": node_id, "seq": -1, "running_jobs": 0, "usage": USAGE}
    over_http = await stack.http.post(f"/v1/nodes/{node_id}/heartbeat", json=malformed, headers=node_auth)
    assert over_http.status_code == 422
    async with await agent(gateway_url, node["credential"]) as ws:
        await ws.recv()
        await ws.send(json.dumps(malformed))
        refusal = json.loads(await ws.recv())
        assert refusal["code"] == "invalid"
        assert "seq" in refusal["detail"]
        await ws.send(heartbeat(node_id, 1))  # the connection survives a bad message
        await until_status(stack, owner, node_id, "ready")


async def test_only_owners_and_admins_drain_or_deregister(stack: Stack) -> None:
    owner, stranger = await provider(stack), await provider(stack, "eve@example.org")
    node_id = (await register_node(stack, owner))["node"]["id"]
    assert (await stack.http.post(f"/v1/nodes/{node_id}/drain", headers=stranger)).status_code == 404
    assert (await stack.http.delete(f"/v1/nodes/{node_id}", headers=stranger)).status_code == 404
    assert (await stack.http.get(f"/v1/nodes/{node_id}", headers=stranger)).status_code == 404
    assert (await stack.http.get("/v1/nodes", headers=stranger)).json()["items"] == []
    admin = stack.bearer(await stack.admin())
    assert [n["id"] for n in (await stack.http.get("/v1/nodes", headers=admin)).json()["items"]] == [node_id]
    drained = await stack.http.post(f"/v1/nodes/{node_id}/drain", headers=owner)
    assert drained.status_code == 200


@contextlib.asynccontextmanager
async def drained_node(
    stack: Stack, gateway_url: str, owner: dict[str, str]
) -> AsyncIterator[tuple[str, ClientConnection]]:
    """A node whose agent is connected (its WebSocket) and was ready, then drained by its owner."""
    node = await register_node(stack, owner)
    node_id = node["node"]["id"]
    async with await agent(gateway_url, node["credential"]) as ws:
        await ws.recv()
        await ws.send(heartbeat(node_id, 1))
        await until_status(stack, owner, node_id, "ready")
        assert (await stack.http.post(f"/v1/nodes/{node_id}/drain", headers=owner)).json()["status"] == "draining"
        yield node_id, ws


async def test_drain_then_deregister_cuts_the_node_off(stack: Stack, gateway_url: str) -> None:
    owner = await provider(stack)
    async with drained_node(stack, gateway_url, owner) as (node_id, ws):
        await ws.send(heartbeat(node_id, 2))
        assert await status_of(stack, owner, node_id) == "draining"
        assert (await stack.http.delete(f"/v1/nodes/{node_id}", headers=owner)).status_code == 204
        await ws.wait_closed()
        assert ws.close_code == 4401, "its credential was revoked with it"
    assert (await stack.http.get(f"/v1/nodes/{node_id}", headers=owner)).status_code == 404


async def test_a_resumed_node_takes_work_again_and_stays_ready(stack: Stack, gateway_url: str) -> None:
    owner, stranger = await provider(stack), await provider(stack, "eve@example.org")
    async with drained_node(stack, gateway_url, owner) as (node_id, ws):
        assert (await stack.http.post(f"/v1/nodes/{node_id}/resume", headers=stranger)).status_code == 404
        resumed = await stack.http.post(f"/v1/nodes/{node_id}/resume", headers=owner)
        assert (resumed.status_code, resumed.json()["status"]) == (200, "ready")
        for seq in (2, 3):  # heard by the registry's leader, whose view of the node moved with it
            await ws.send(heartbeat(node_id, seq))
        await until_status(stack, owner, node_id, "ready")
        assert (await stack.http.post(f"/v1/nodes/{node_id}/resume", headers=owner)).json()["status"] == "ready"
    admin = stack.bearer(await stack.admin())

    async def announced() -> list[tuple[str, str]] | None:
        found = await stack.http.get("/v1/admin/events", params={"aggregate_id": node_id}, headers=admin)
        moves = [(e["data"]["previous_status"], e["data"]["status"]) for e in found.json()["items"]
                 if e["type"] == "registry.node.status_changed.v1"]  # fmt: skip
        return moves if ("draining", "ready") in moves else None

    moves = await wait_until(announced, what="the end of the drain announced")
    assert moves[-2:] == [("ready", "draining"), ("draining", "ready")]  # once each: the repeat announced nothing


async def test_a_revoked_credential_is_cut_off_and_refused(stack: Stack, gateway_url: str) -> None:
    owner = await provider(stack)
    node = await register_node(stack, owner)
    async with await agent(gateway_url, node["credential"]) as ws:
        await ws.recv()
        revoked = await stack.http.delete(f"/v1/nodes/{node['node']['id']}/credential", headers=owner)
        assert revoked.status_code == 204
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4401
    async with await agent(gateway_url, node["credential"]) as again:
        with pytest.raises(ConnectionClosed) as refused:
            await again.recv()
        assert refused.value.rcvd is not None
        assert refused.value.rcvd.code == 4401


async def test_restarting_the_registry_while_50_nodes_heartbeat_reports_none_down(
    stack: Stack, fog_servers: Servers, jetstream: JetStreamContext
) -> None:
    owner = await provider(stack)
    node_ids = [(await register_node(stack, owner, f"sim-{i}"))["node"]["id"] for i in range(50)]
    nc = await nats.connect(fog_servers.nats_url)
    beating = _Beating(nc, node_ids)
    async with beating.running():
        admin = stack.bearer(await stack.admin())

        async def all_ready() -> bool:
            listed = (await stack.http.get("/v1/nodes?status=ready", headers=admin)).json()["items"]
            return len(listed) == 50

        await wait_until(all_ready, timeout=10, what="50 nodes ready")
        await stack.stop_first_registry()
        restarted_at = datetime.now(UTC)
        await stack.start_registry()

        async def heard_well_after_restart() -> bool:
            # Past the new leader's grace period and a full down-timeout of heartbeats.
            answer = await stack.http.get("/v1/nodes", headers=admin)
            if answer.status_code == 503:  # the registry, busy starting, did not answer in time: ask again
                return False
            assert answer.status_code == 200, answer.text
            listed = answer.json()["items"]
            beats = [datetime.fromisoformat(n["last_heartbeat_at"]) for n in listed if n["last_heartbeat_at"]]
            return len(beats) == 50 and (min(beats) - restarted_at).total_seconds() > 8 * HEARTBEAT_INTERVAL_S

        await wait_until(heard_well_after_restart, timeout=20, interval=0.1, what="heartbeats long after the restart")
        listed = (await stack.http.get("/v1/nodes", headers=admin)).json()["items"]
        assert {n["status"] for n in listed} == {"ready"}
        for node_id in node_ids[:5]:
            assert await transitions(jetstream, node_id) == ["ready"], "no suspect, no down"
    await nc.close()


class _Beating:
    """50 simulated nodes heartbeating, batched as gateways publish them."""

    def __init__(self, nc: Any, node_ids: list[str]) -> None:
        self.nc, self.node_ids, self.seq = nc, node_ids, 0

    @staticmethod
    def _beat(node_id: str, seq: int) -> dict[str, Any]:
        return {"type": "heartbeat", "node_id": node_id, "seq": seq, "running_jobs": 0, "usage": USAGE}

    async def _loop(self) -> None:
        import asyncio

        while True:
            self.seq += 1
            batch = HeartbeatBatch.model_validate({"heartbeats": [self._beat(n, self.seq) for n in self.node_ids]})
            await self.nc.publish(HEARTBEATS, batch.model_dump_json().encode())
            # Twice per interval, as FakeAgent beats: at one per interval, a quarter second's hiccup of this process
            # (it runs the whole stack) is enough to make a node suspect; CI saw it once.
            await asyncio.sleep(HEARTBEAT_INTERVAL_S / 2)

    def running(self) -> Any:
        import asyncio
        import contextlib

        @contextlib.asynccontextmanager
        async def run() -> AsyncIterator[None]:
            task = asyncio.create_task(self._loop())
            try:
                yield
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        return run()


async def test_a_node_shows_the_agent_it_runs_as_its_connection_said(stack: Stack, gateway_url: str) -> None:
    """Owners upgrade agents one node at a time: each node shows what its agent said it is when it connected."""
    owner = await provider(stack)
    registered = await register_node(stack, owner)
    node_id, credential = registered["node"]["id"], registered["credential"]
    assert registered["node"]["agent"] is None  # nothing said yet
    db = stack.registry_db
    conn = await asyncpg.connect(db.dsn, server_settings={"search_path": db.schema})
    ws_url = gateway_url.replace("http://", "ws://") + "/v1/nodes/connect"
    try:
        for seq, version in enumerate(("fog-agent/1.2.3", "fog-agent/1.3.0"), start=1):
            headers = {"Authorization": f"Bearer {credential}"}
            async with await connect(ws_url, additional_headers=headers, user_agent_header=version) as ws:
                await ws.recv()  # welcome
                claim = {**json.loads(heartbeat(node_id, seq)), "agent": "fog-agent/99"}  # the connection's word wins
                await ws.send(json.dumps(claim))
                await wait_until(functools.partial(_shows, stack, owner, node_id, version), what=f"{version} shown")
                await wait_until(functools.partial(_written, conn, node_id, version), what=f"{version} written")
    finally:
        await conn.close()


async def _shows(stack: Stack, owner: dict[str, str], node_id: str, agent: str) -> bool:
    return bool((await stack.http.get(f"/v1/nodes/{node_id}", headers=owner)).json()["agent"] == agent)


async def _written(conn: asyncpg.Connection, node_id: str, agent: str) -> bool:
    return bool(await conn.fetchval("SELECT agent FROM nodes WHERE id = $1", node_id) == agent)
