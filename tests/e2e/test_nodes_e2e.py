"""Nodes on the real stack with real agent processes (`fog-agent join` and `fog-agent run`).

The stack runs with a 2 s heartbeat interval: suspect after 3 s of silence, down after 8 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from devstack_driver import RunningStack, email, fogctl, heartbeat_interval, open_stack
from websockets.asyncio.client import connect

from fog_agent import __version__ as agent_version
from fog_client import ApiError, Capabilities, FogClient
from fog_shared.events.registry import NodeStatusChanged
from fog_shared.testing.waiting import wait_until
from fogctl.devstack import DEV_AGENT_ENVIRONMENT

pytestmark = pytest.mark.e2e
INTERVAL_S = heartbeat_interval(2.0)
#: a registry that takes the lead suspects no node for this long (``LivenessPolicy.restart_grace_s``)
RESTART_GRACE_S = 4 * INTERVAL_S
PASSWORD = "a long and unguessable password"
AGENT = [sys.executable, "-m", "fog_agent"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = open_stack(tmp_path_factory.mktemp("nodes-e2e"), "--heartbeat-interval", str(INTERVAL_S))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def stack(running: RunningStack) -> RunningStack:
    await running.ready()
    STACK_READY_AT.setdefault(id(running), time.monotonic())  # its registry leads since before this
    return running


STACK_READY_AT: dict[int, float] = {}


def grace_left(stack: RunningStack) -> float:
    """How much of the registry's start-up grace may still run: no node is suspected before it ends."""
    return max(0.0, STACK_READY_AT[id(stack)] + RESTART_GRACE_S - time.monotonic())


async def provider(stack: RunningStack, email: str) -> FogClient:
    fog = FogClient(stack.state["gateway_url"])
    await fog.register(email, PASSWORD, roles=("user", "provider"))
    await fog.login(email, PASSWORD)
    return fog


def join(stack: RunningStack, state_dir: Path, email: str, name: str) -> str:
    done = subprocess.run(
        [*AGENT, "join", "--gateway", stack.state["gateway_url"], "--name", name, "--email", email,
         "--password-stdin", "--state-dir", str(state_dir)],
        input=PASSWORD.encode(), capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.decode().strip()


def run_agent(state_dir: Path) -> subprocess.Popen[bytes]:
    log = (state_dir.parent / f"{state_dir.name}.log").open("ab")
    environment = {**os.environ, **DEV_AGENT_ENVIRONMENT}  # as `fogctl dev up` runs its agents
    return subprocess.Popen([*AGENT, "run", "--state-dir", str(state_dir)], stdout=log, stderr=log, env=environment)


async def until_status(fog: FogClient, node_id: str, status: str, timeout: float) -> None:
    async def reached() -> bool:
        return (await fog.get_node(node_id)).status == status

    await wait_until(reached, timeout=timeout, interval=0.1, what=f"node {node_id} {status}")


async def announced(stack: RunningStack, node_id: str) -> list[str]:
    """Every status the registry announced for the node, from the event history as an operator
    reads it (the gateway's admin route behind `fogctl events history`)."""
    admin = json.loads(await asyncio.to_thread(Path(stack.state["admin_credentials"]).read_text))
    statuses: list[str] = []
    async with FogClient(stack.state["gateway_url"]) as fog:
        await fog.login(admin["email"], admin["password"])
        cursor = None
        while True:
            page = await fog.event_history(subject=NodeStatusChanged.TYPE.subject, aggregate_id=node_id, cursor=cursor)
            assert not page.gaps, "the history of a node made minutes ago is complete"
            statuses += [event.data["status"] for event in page.items]
            if not page.more:
                return statuses
            cursor = page.cursor


@pytest.mark.local_stack
async def test_the_dev_stack_runs_two_agents_as_ready_nodes(stack: RunningStack) -> None:
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}  # fogctl is logged in as the first admin

    async def two_ready() -> list[dict[str, Any]] | None:
        code, out = await fogctl("node", "list", "--status", "ready", "--label", "dev=true", "--json", env=config)
        items = json.loads(out)["items"] if code == 0 else []
        return items if len(items) == 2 else None

    nodes = await wait_until(two_ready, timeout=3 * INTERVAL_S + 10, interval=0.5, what="two dev agents ready")
    assert sorted(n["name"] for n in nodes) == ["dev-agent-1", "dev-agent-2"]
    assert [n["agent"] for n in nodes] == [f"fog-agent/{agent_version}"] * 2  # what each node runs


async def test_an_agent_joins_dies_and_comes_back(stack: RunningStack, tmp_path: Path) -> None:
    owner = await provider(stack, email("olga"))
    state_dir = tmp_path / "agent"
    node_id = join(stack, state_dir, email("olga"), "olgas-box")
    assert (await owner.get_node(node_id)).status == "down"
    agent = run_agent(state_dir)
    try:
        # Within one interval of the agent's first heartbeat (Python's start-up comes on top).
        await until_status(owner, node_id, "ready", timeout=INTERVAL_S + 5)
        agent.send_signal(signal.SIGKILL)  # kill -9: no goodbye
        await asyncio.to_thread(agent.wait, 10)
        # A fast stack gets here before its registry's start-up grace is over: suspicion waits for its end.
        await until_status(owner, node_id, "suspect", timeout=1.5 * INTERVAL_S + 2 + grace_left(stack))
        await until_status(owner, node_id, "down", timeout=4 * INTERVAL_S + 2)
        assert await announced(stack, node_id) == ["ready", "suspect", "down"], "one event per transition"
        agent = run_agent(state_dir)
        await until_status(owner, node_id, "ready", timeout=INTERVAL_S + 5)
    finally:
        agent.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(agent.wait, 15) == 0, "SIGTERM: a clean exit"
    await until_status(owner, node_id, "down", timeout=5)  # its goodbye: down at once
    assert await announced(stack, node_id) == ["ready", "suspect", "down", "ready", "down"]


@pytest.mark.local_stack
async def test_nodes_act_only_as_themselves_and_revocation_cuts_them_off(stack: RunningStack, tmp_path: Path) -> None:
    owner = await provider(stack, email("paul"))
    first = join(stack, tmp_path / "a", email("paul"), "a")
    second = join(stack, tmp_path / "b", email("paul"), "b")
    credential = json.loads((tmp_path / "a" / "node.json").read_text())["credential"]
    ws_url = stack.state["gateway_url"].replace("http://", "ws://") + "/v1/nodes/connect"
    async with connect(ws_url, additional_headers={"Authorization": f"Bearer {credential}"}) as ws:
        await ws.recv()
        usage = {"cpu_percent": 1.0, "memory_used_bytes": 1, "disk_used_bytes": 1}
        await ws.send(json.dumps({"type": "heartbeat", "node_id": second, "seq": 1, "running_jobs": 0, "usage": usage}))
        await ws.wait_closed()
        assert ws.close_code == 4403
    gateway_log = Path(next(p["log"] for p in stack.state["processes"] if p["name"] == "gateway"))
    assert "heartbeat for another node refused" in await asyncio.to_thread(gateway_log.read_text), "it is logged"

    stranger = await provider(stack, email("quinn"))
    async with httpx.AsyncClient(base_url=stack.state["gateway_url"]) as http:
        headers = {"Authorization": f"Bearer {stranger.access_token}"}
        assert (await http.post(f"/v1/nodes/{first}/drain", headers=headers)).status_code == 404
        bad = {"name": "x", "capabilities": {"cpu_cores": "many"}}
        refused = await http.post("/v1/nodes", json=bad, headers=headers)
        assert refused.status_code == 422
    assert await stranger.list_nodes() == [], "the refused registration left nothing behind"

    agent = run_agent(tmp_path / "a")
    try:
        await until_status(owner, first, "ready", timeout=INTERVAL_S + 5)
        await owner.revoke_node_credential(first)
        assert await asyncio.to_thread(agent.wait, 10) == 3, "revoked: the agent is cut off and gives up"
    finally:
        if agent.poll() is None:
            agent.kill()


@pytest.mark.local_stack
async def test_a_registry_restart_reports_no_live_node_down(stack: RunningStack) -> None:
    owner = await provider(stack, email("rita"))
    capabilities = Capabilities(cpu_cores=2, memory_bytes=1 << 30, disk_bytes=1 << 30, arch="x86_64", os="Linux")
    registered = [await owner.register_node(f"sim-{i}", capabilities) for i in range(50)]
    ws_url = stack.state["gateway_url"].replace("http://", "ws://") + "/v1/nodes/connect"

    async def simulated_node(node_id: str, credential: str) -> None:
        async with connect(ws_url, additional_headers={"Authorization": f"Bearer {credential}"}) as ws:
            await ws.recv()
            usage = {"cpu_percent": 1.0, "memory_used_bytes": 1, "disk_used_bytes": 1}
            for seq in range(1, 10_000):
                beat = {"type": "heartbeat", "node_id": node_id, "seq": seq, "running_jobs": 0, "usage": usage}
                await ws.send(json.dumps(beat))
                # Twice per interval: a hiccup of this test process (50 nodes, one event loop) of half an interval
                # would otherwise be the nodes' silence; what is under test is the registry's restart.
                await asyncio.sleep(INTERVAL_S / 2)

    nodes = [asyncio.create_task(simulated_node(r.node.id, r.credential)) for r in registered]
    try:

        async def all_ready() -> bool:
            return len(await owner.list_nodes(status="ready")) == 50

        await wait_until(all_ready, timeout=3 * INTERVAL_S + 10, interval=0.2, what="50 nodes ready")
        registry = next(p for p in stack.state["processes"] if p["name"] == "registry")
        os.kill(registry["pid"], signal.SIGKILL)
        killed_at = datetime.now(UTC)

        async def beats_long_after_the_restart() -> bool:
            # The supervisor restarted the registry, its grace period passed, and beats kept coming.
            try:
                listed = await owner.list_nodes()
            except ApiError as exc:
                if exc.status == 503:  # the registry is still restarting
                    return False
                raise
            seen = [n.last_heartbeat_at for n in listed if n.last_heartbeat_at is not None]
            return len(seen) == 50 and (min(seen) - killed_at).total_seconds() > 8 * INTERVAL_S

        await wait_until(beats_long_after_the_restart, timeout=60, interval=0.5, what="beats after the restart")
        assert {n.status for n in await owner.list_nodes()} == {"ready"}
        for node in registered[:10]:
            assert await announced(stack, node.node.id) == ["ready"], "no suspect, no down"
    finally:
        for task in nodes:
            task.cancel()
        await asyncio.gather(*nodes, return_exceptions=True)
