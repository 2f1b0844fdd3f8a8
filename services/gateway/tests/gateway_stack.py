"""A real auth service and a gateway in this process, on the session's real NATS and Postgres.

HTTP goes to the gateway's ASGI app through httpx (no socket); everything behind it is real.
Tests import :class:`Stack` from here (``pythonpath`` in pyproject.toml); the fixture is
registered in ``integration/conftest.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from fog_auth.app import MIGRATIONS as AUTH_MIGRATIONS
from fog_auth.app import build_app as build_auth
from fog_auth.config import Settings as AuthSettings
from fog_gateway.app import build_app as build_gateway
from fog_gateway.config import Settings as GatewaySettings
from fog_shared.bus.topology import Topology
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


async def open_stack(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> AsyncIterator[Stack]:
    await provision_topology(Topology())
    db = await service_db("auth", AUTH_MIGRATIONS)
    auth_app = build_auth(
        settings_in_schema(
            AuthSettings, db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(db.dsn),
            insecure_cheap_hashing=True, bootstrap_admin_email=ADMIN_EMAIL,
            bootstrap_admin_password=SecretStr(ADMIN_PASSWORD),
        )
    )  # fmt: skip
    async with contextlib.AsyncExitStack() as exits:
        await exits.enter_async_context(auth_app.router.lifespan_context(auth_app))

        async def open_gateway(**settings: Any) -> httpx.AsyncClient:
            values: dict[str, Any] = {"nats_url": fog_servers.nats_url, "request_timeout_s": 2.0, **settings}
            app = build_gateway(GatewaySettings(**values))
            await exits.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            return await exits.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://gateway"))

        yield Stack(await open_gateway(), db, open_gateway)
