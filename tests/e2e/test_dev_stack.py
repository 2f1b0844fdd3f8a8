"""The dev stack as a newcomer runs it: `fogctl dev up` starts everything as separate processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from devstack_driver import SERVICES, all_ready, fogctl, launch, status

from fog_shared.bus.publish import publish_event
from fog_shared.envelope import Envelope
from fog_shared.events.auth import UserRegistered
from fog_shared.subjects import query_subject
from fog_shared.testing.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.local_stack]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data_dir = tmp_path_factory.mktemp("devstack")
    supervisor = launch(data_dir)
    try:
        yield {"dir": data_dir, "supervisor": supervisor, "log": data_dir / "fogctl.log"}
    finally:
        if supervisor.poll() is None:
            supervisor.send_signal(signal.SIGINT)
            try:
                supervisor.wait(30)
            except subprocess.TimeoutExpired:
                supervisor.kill()


async def test_every_service_is_ready_within_60_seconds(stack: dict[str, Any]) -> None:
    state = await wait_until(lambda: all_ready(stack["dir"]), timeout=60, interval=0.5, what="the whole stack ready")
    by_name = {p["name"]: p for p in state["processes"]}
    assert {"nats", "postgres"} <= set(by_name)
    async with httpx.AsyncClient() as http:
        for name in SERVICES:
            base = by_name[name]["url"]
            assert (await http.get(f"{base}/healthz")).json()["status"] == "ok"
            ready = (await http.get(f"{base}/readyz")).json()
            expected = {"nats": "ok", "background_tasks": "ok"}
            if name != "gateway":
                expected |= {"postgres": "ok", "migrations": "ok"}
            assert ready["checks"] == expected
            if name == "gateway":  # its port is the public API: its metrics are served apart
                assert (await http.get(f"{base}/metrics")).status_code == 404
                assert "fog_http_requests_total" in (await http.get(state["gateway_metrics_url"])).text
            else:
                assert "fog_" in (await http.get(f"{base}/metrics")).text
            asyncapi = (await http.get(f"{base}/asyncapi.json")).json()
            assert query_subject(name, "status") in json.dumps(asyncapi["channels"])
        assert (await http.get(f"{state['gateway_url']}/openapi.json")).json()["info"]["title"] == "Fog API"
    sizes = await asyncio.to_thread(lambda: {name: Path(by_name[name]["log"]).stat().st_size for name in SERVICES})
    assert all(sizes.values()), f"every service writes its own log file: {sizes}"


async def test_services_answer_over_nats_and_consume_events(stack: dict[str, Any]) -> None:
    state = await wait_until(lambda: all_ready(stack["dir"]), timeout=60, interval=0.5, what="the whole stack ready")
    nc = await nats.connect(state["nats_url"])
    try:
        for name in SERVICES:
            reply = await nc.request(query_subject(name, "status"), b"{}", timeout=5)
            assert json.loads(reply.data)["service"] == name
        # An auth event published into the stream reaches messaging's consumer in its own process.
        event = UserRegistered(
            user_id="e2e-1", email="e2e@example.org", roles=["user"], registered_at=datetime.now(UTC)
        )
        envelope = Envelope.new(type=event.TYPE.name, source="fog/auth", subject=event.user_id)
        await publish_event(nc.jetstream(), "EVT_AUTH", event, envelope)
    finally:
        await nc.close()
    password = await asyncio.to_thread(lambda: (stack["dir"] / "postgres" / "superuser.pw").read_text().strip())
    dsn = state["database_dsn_redacted"].replace("***", password).rsplit("/", 1)[0] + "/fog"
    conn = await asyncpg.connect(dsn)
    try:
        await wait_until(
            lambda: conn.fetchval("SELECT email FROM messaging.users WHERE user_id = 'e2e-1'"),
            what="messaging to learn the user",
        )
    finally:
        await conn.close()


async def test_each_service_is_its_own_nats_user_refused_the_rest(stack: dict[str, Any]) -> None:
    """The NATS permission model of the Kubernetes deployment, on the dev stack: a service's user
    may not publish another service's events nor administer streams."""
    state = await wait_until(lambda: all_ready(stack["dir"]), timeout=60, interval=0.5, what="the whole stack ready")
    async with httpx.AsyncClient() as http:
        connz = (await http.get(f"{state['nats_monitor_url']}/connz", params={"auth": "true"})).json()
    logged_in = {c.get("authorized_user") for c in connz["connections"]}
    assert set(SERVICES) <= logged_in, "every service connects as its own user"

    secrets = json.loads(await asyncio.to_thread((stack["dir"] / "secrets.json").read_text))
    refusals: list[str] = []

    async def record(exc: Exception) -> None:
        refusals.append(str(exc).lower())

    host = state["nats_url"].removeprefix("nats://")
    registry = await nats.connect(
        f"nats://registry:{secrets['nats_registry']}@{host}", error_cb=record, allow_reconnect=False
    )
    try:
        await registry.publish("fog.evt.auth.user.registered.v1", b"{}")
        with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
            await registry.jetstream(timeout=1).add_stream(name="ROGUE", subjects=["rogue.>"])

        async def refused(subject: str) -> bool:
            return any("permissions violation" in r and subject in r for r in refusals)

        await wait_until(lambda: refused("fog.evt.auth.user.registered.v1"), what="another service's event refused")
        await wait_until(lambda: refused("$js.api.stream.create.rogue"), what="stream administration refused")
    finally:
        await registry.close()


async def test_down_stops_every_process(stack: dict[str, Any]) -> None:
    state = await wait_until(lambda: all_ready(stack["dir"]), timeout=60, interval=0.5, what="the whole stack ready")
    assert (await fogctl("dev", "down", "--dir", str(stack["dir"])))[0] == 0
    assert stack["supervisor"].wait(30) == 0
    for proc in state["processes"]:
        with pytest.raises(ProcessLookupError):
            os.kill(proc["pid"], 0)
    assert (await status(stack["dir"]))["running"] is False


async def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    supervisor = launch(tmp_path)
    try:
        state = await wait_until(lambda: all_ready(tmp_path), timeout=60, interval=0.5, what="the whole stack ready")
        supervisor.send_signal(signal.SIGINT)  # what Ctrl-C sends to the foreground process
        assert await asyncio.to_thread(supervisor.wait, 30) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    for proc in state["processes"]:
        with pytest.raises(ProcessLookupError):
            os.kill(proc["pid"], 0)
    assert not (tmp_path / "state.json").exists()
