"""The five services, each logged in to NATS as its own generated user, work together.

As on Kubernetes: a NATS server with the generated users, streams provisioned by the
provisioning user, and auth, registry, scheduler, messaging and the gateway (in this process, on
the session's real PostgreSQL) each connected with its own credentials. Requests, events, durable
consumers and the gateway's live feeds go through, and the server refuses nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import nats
import pytest
from pydantic import SecretStr

from fog_auth.app import MIGRATIONS as AUTH_MIGRATIONS
from fog_auth.app import build_app as build_auth
from fog_auth.config import Settings as AuthSettings
from fog_gateway.app import build_app as build_gateway
from fog_gateway.config import Settings as GatewaySettings
from fog_messaging.app import MIGRATIONS as MESSAGING_MIGRATIONS
from fog_messaging.app import build_app as build_messaging
from fog_messaging.config import Settings as MessagingSettings
from fog_registry.app import MIGRATIONS as REGISTRY_MIGRATIONS
from fog_registry.app import build_app as build_registry
from fog_registry.config import Settings as RegistrySettings
from fog_scheduler.app import MIGRATIONS as SCHEDULER_MIGRATIONS
from fog_scheduler.app import build_app as build_scheduler
from fog_scheduler.config import Settings as SchedulerSettings
from fog_shared.bus.permissions import PROVISIONER
from fog_shared.bus.provision import provision
from fog_shared.bus.topology import Topology
from fog_shared.devservers import NatsServer
from fog_shared.subjects import inbox_prefix
from fog_shared.testing.plugin import ServiceDb, ServiceDbFactory, settings_in_schema
from fog_shared.testing.waiting import wait_until

PASSWORD = "a long passphrase for the test"


class Platform:
    def __init__(self, http: httpx.AsyncClient, messaging_db: ServiceDb) -> None:
        self.http, self.messaging_db = http, messaging_db


def _url(server: NatsServer, user: str, passwords: dict[str, str]) -> str:
    return f"nats://{user}:{passwords[user]}@127.0.0.1:{server.port}"


async def _provision(url: str) -> None:
    nc = await nats.connect(url, inbox_prefix=inbox_prefix(PROVISIONER))
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            await js.delete_stream(info.config.name or "")
        await provision(js, Topology())
    finally:
        await nc.close()


@pytest.fixture
async def platform(
    nats_with_users: NatsServer, nats_passwords: dict[str, str], service_db: ServiceDbFactory
) -> AsyncIterator[Platform]:
    def url(user: str) -> str:
        return _url(nats_with_users, user, nats_passwords)

    await _provision(url(PROVISIONER))
    dbs = {
        "auth": await service_db("auth", AUTH_MIGRATIONS),
        "registry": await service_db("registry", REGISTRY_MIGRATIONS),
        "scheduler": await service_db("scheduler", SCHEDULER_MIGRATIONS),
        "messaging": await service_db("messaging", MESSAGING_MIGRATIONS),
    }

    def settings(cls: Any, svc: str, **values: Any) -> Any:
        db = dbs[svc]
        return settings_in_schema(cls, db.schema, nats_url=url(svc), database_url=SecretStr(db.dsn), **values)

    apps = [
        build_auth(settings(AuthSettings, "auth", insecure_cheap_hashing=True)),
        build_registry(settings(RegistrySettings, "registry")),
        build_scheduler(settings(SchedulerSettings, "scheduler", placement_idle_s=0.2)),
        build_messaging(settings(MessagingSettings, "messaging")),
    ]
    gateway = build_gateway(GatewaySettings(nats_url=url("gateway"), request_timeout_s=2.0))
    async with contextlib.AsyncExitStack() as running:
        for app in [*apps, gateway]:
            await running.enter_async_context(app.router.lifespan_context(app))
        transport = httpx.ASGITransport(app=gateway)
        http = await running.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://gateway"))
        yield Platform(http, dbs["messaging"])


def _violations(server: NatsServer, since: int) -> list[str]:
    with server.log_path.open("rb") as log:
        log.seek(since)
        return [line for line in log.read().decode(errors="replace").splitlines() if "violation" in line.lower()]


async def test_the_platform_works_with_each_service_as_its_own_nats_user(
    nats_with_users: NatsServer, platform: Platform
) -> None:
    log_start = nats_with_users.log_path.stat().st_size
    http = platform.http
    # gateway -> auth (commands), auth -> EVT_AUTH (outbox), messaging <- its durable (user events)
    registered = await http.post("/v1/auth/register", json={"email": "ida@example.org", "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    tokens = (await http.post("/v1/auth/login", json={"email": "ida@example.org", "password": PASSWORD})).json()
    user = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await http.get("/v1/me", headers=user)).status_code == 200

    # gateway -> scheduler (command and query), scheduler -> EVT_SCHEDULER (outbox)
    submitted = await http.post("/v1/jobs", json={"command": ["echo", "hi"]}, headers=user)
    assert submitted.status_code == 201, submitted.text
    job = await http.get(f"/v1/jobs/{submitted.json()['id']}", headers=user)
    assert job.status_code == 200, job.text

    async def messaging_saw_the_user() -> bool:
        conn = await asyncpg.connect(platform.messaging_db.dsn)
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'messaging__users'"))
        finally:
            await conn.close()

    await wait_until(messaging_saw_the_user, timeout=10, what="messaging handling user.registered")

    # auth's session.revoked event reaches the gateway's live feed: the access token stops working
    logout = await http.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert logout.status_code == 204

    async def revoked() -> bool:
        return (await http.get("/v1/me", headers=user)).status_code == 401

    await wait_until(revoked, timeout=10, what="the gateway learning of the revocation")
    assert _violations(nats_with_users, log_start) == []
