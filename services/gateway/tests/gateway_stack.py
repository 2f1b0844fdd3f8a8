"""Real auth, registry, scheduler and messaging services and a gateway in this process, on the
session's real NATS and Postgres.

HTTP goes to the gateway's ASGI app through httpx (no socket); everything behind it is real.
Tests import :class:`Stack` from here (``pythonpath`` in pyproject.toml); the fixture is
registered in ``integration/conftest.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
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
from fog_shared.bus.topology import Topology
from fog_shared.devservers import free_port
from fog_shared.testing.plugin import Provisioner, Servers, ServiceDb, ServiceDbFactory, settings_in_schema
from fog_shared.testing.waiting import wait_until

PASSWORD = "correct horse battery staple"
ADMIN_EMAIL = "root@example.org"
ADMIN_PASSWORD = "admin password for the tests"


@dataclass
class Stack:
    http: httpx.AsyncClient
    auth_db: ServiceDb
    #: another gateway (as a second replica would be) on the same NATS, with its own settings
    open_gateway: Callable[..., Awaitable[httpx.AsyncClient]]
    registry_db: ServiceDb
    #: a gateway served on a real port (for WebSockets): its base URL
    serve_gateway: Callable[..., Awaitable[str]]
    #: another registry (a restart, or a second replica); returns how to stop it
    start_registry: Callable[[], Awaitable[Callable[[], Awaitable[None]]]]
    stop_first_registry: Callable[[], Awaitable[None]]
    #: stop the scheduler and start a new one on the same schema
    restart_scheduler: Callable[[], Awaitable[None]]
    scheduler_db: ServiceDb
    messaging_db: ServiceDb
    #: stop the messaging service and start a new one on the same schema
    restart_messaging: Callable[[], Awaitable[None]]
    #: the scheduler stopped while the block runs, and a new one started after it
    scheduler_away: Callable[[], contextlib.AbstractAsyncContextManager[None]]

    async def register_and_login(
        self, email: str = "alice@example.org", roles: list[str] | None = None, http: httpx.AsyncClient | None = None
    ) -> dict[str, str]:
        http = http or self.http
        body: dict[str, Any] = {"email": email, "password": PASSWORD}
        if roles:
            body["roles"] = roles
        created = await http.post("/v1/auth/register", json=body)
        assert created.status_code == 201, created.text
        return await self.login(email, PASSWORD, http)

    async def login(self, email: str, password: str, http: httpx.AsyncClient | None = None) -> dict[str, str]:
        tokens = await (http or self.http).post("/v1/auth/login", json={"email": email, "password": password})
        assert tokens.status_code == 200, tokens.text
        return dict(tokens.json())

    async def admin(self) -> dict[str, str]:
        return await self.login(ADMIN_EMAIL, ADMIN_PASSWORD)

    @staticmethod
    def bearer(tokens: dict[str, str] | str) -> dict[str, str]:
        token = tokens if isinstance(tokens, str) else tokens["access_token"]
        return {"Authorization": f"Bearer {token}"}

    async def until_status(
        self,
        path: str,
        tokens: dict[str, str] | str,
        status: int,
        *,
        http: httpx.AsyncClient | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Wait (with a deadline) until GET ``path`` with this credential answers ``status``."""
        client = http or self.http

        async def answered() -> bool:
            return (await client.get(path, headers=self.bearer(tokens))).status_code == status

        await wait_until(answered, timeout=timeout, what=f"GET {path} answers {status}")


#: node liveness at test speed: suspect after 0.75 s of silence, down after 2 s
HEARTBEAT_INTERVAL_S = 0.5
FAST_NODES = {"node_heartbeat_interval_s": HEARTBEAT_INTERVAL_S, "heartbeat_flush_s": 0.05}


async def open_stack(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> AsyncIterator[Stack]:
    await provision_topology(Topology())
    db = await service_db("auth", AUTH_MIGRATIONS)
    registry_db = await service_db("registry", REGISTRY_MIGRATIONS)
    scheduler_db = await service_db("scheduler", SCHEDULER_MIGRATIONS)
    messaging_db = await service_db("messaging", MESSAGING_MIGRATIONS)
    messaging_settings = settings_in_schema(
        MessagingSettings, messaging_db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(messaging_db.dsn),
    )  # fmt: skip
    scheduler_settings = settings_in_schema(
        SchedulerSettings, scheduler_db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(scheduler_db.dsn),
        placement_idle_s=0.2, queue_gauges_every_s=0.1,
    )  # fmt: skip
    registry_settings = settings_in_schema(
        RegistrySettings, registry_db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(registry_db.dsn),
        heartbeat_interval_s=HEARTBEAT_INTERVAL_S, liveness_tick_s=0.05,
    )  # fmt: skip
    auth_app = build_auth(
        settings_in_schema(
            AuthSettings, db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(db.dsn),
            insecure_cheap_hashing=True, bootstrap_admin_email=ADMIN_EMAIL,
            bootstrap_admin_password=SecretStr(ADMIN_PASSWORD),
        )
    )  # fmt: skip
    async with contextlib.AsyncExitStack() as exits:
        await exits.enter_async_context(auth_app.router.lifespan_context(auth_app))

        async def start_registry() -> Callable[[], Awaitable[None]]:
            registry_app = build_registry(registry_settings)
            running = contextlib.AsyncExitStack()
            await running.enter_async_context(registry_app.router.lifespan_context(registry_app))
            exits.push_async_callback(running.aclose)
            return running.aclose

        def gateway_settings(settings: dict[str, Any]) -> GatewaySettings:
            # The heap freezer stays off in-process: it would freeze the test session's heap too. Metrics stay on
            # the API port: a server of their own would add a thread, and half a second to each stop.
            values: dict[str, Any] = {
                "nats_url": fog_servers.nats_url,
                # As in production: every service of the stack runs in the test's one process, and on a loaded
                # 2-core CI machine one of them took longer than 2 s to answer (a node's registration, 503).
                "request_timeout_s": 5.0,
                "gc_freeze_every_s": 0,
                "metrics_port": None,
                **FAST_NODES,
            }
            return GatewaySettings(**(values | settings))

        async def open_gateway(**settings: Any) -> httpx.AsyncClient:
            app = build_gateway(gateway_settings(settings))
            await exits.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            return await exits.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://gateway"))

        async def serve_gateway(**settings: Any) -> str:
            app = build_gateway(gateway_settings(settings))
            return await exits.enter_async_context(_serving(app))

        async def start_scheduler() -> Callable[[], Awaitable[None]]:
            scheduler_app = build_scheduler(scheduler_settings)
            running = contextlib.AsyncExitStack()
            await running.enter_async_context(scheduler_app.router.lifespan_context(scheduler_app))
            exits.push_async_callback(running.aclose)
            return running.aclose

        stop_first = await start_registry()

        async def start_messaging() -> Callable[[], Awaitable[None]]:
            messaging_app = build_messaging(messaging_settings)
            running = contextlib.AsyncExitStack()
            await running.enter_async_context(messaging_app.router.lifespan_context(messaging_app))
            exits.push_async_callback(running.aclose)
            return running.aclose

        messaging = [await start_messaging()]

        async def restart_messaging() -> None:
            await messaging.pop()()
            messaging.append(await start_messaging())

        schedulers = [await start_scheduler()]

        async def restart_scheduler() -> None:
            await schedulers.pop()()
            schedulers.append(await start_scheduler())

        @contextlib.asynccontextmanager
        async def scheduler_away() -> AsyncIterator[None]:
            await schedulers.pop()()
            try:
                yield
            finally:
                schedulers.append(await start_scheduler())

        yield Stack(
            await open_gateway(), db, open_gateway, registry_db, serve_gateway, start_registry, stop_first,
            restart_scheduler, scheduler_db, messaging_db, restart_messaging, scheduler_away,
        )  # fmt: skip


@contextlib.asynccontextmanager
async def _serving(app: Any) -> AsyncIterator[str]:
    """The app on a real port (WebSockets need one), as uvicorn serves it in production."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:

        async def started() -> bool:
            return bool(server.started)

        await wait_until(started, timeout=15, what="gateway serving")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
