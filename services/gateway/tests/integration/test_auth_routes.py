"""The gateway's auth routes in front of a real auth service (same process), real NATS and Postgres."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from fog_auth.app import MIGRATIONS as AUTH_MIGRATIONS
from fog_auth.app import build_app as build_auth
from fog_auth.config import Settings as AuthSettings
from fog_gateway.app import build_app as build_gateway
from fog_gateway.config import Settings as GatewaySettings
from fog_shared.bus.topology import Topology
from fog_shared.testing.plugin import Provisioner, Servers, ServiceDbFactory, settings_in_schema
from fog_shared.testing.waiting import wait_until

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def gateway(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> AsyncIterator[httpx.AsyncClient]:
    await provision_topology(Topology())
    db = await service_db("auth", AUTH_MIGRATIONS)

    auth_app = build_auth(
        settings_in_schema(
            AuthSettings, db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(db.dsn),
            insecure_cheap_hashing=True,
        )
    )  # fmt: skip
    gateway_app = build_gateway(GatewaySettings(nats_url=fog_servers.nats_url, request_timeout_s=2.0))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(auth_app.router.lifespan_context(auth_app))
        await stack.enter_async_context(gateway_app.router.lifespan_context(gateway_app))
        transport = httpx.ASGITransport(app=gateway_app)
        yield await stack.enter_async_context(httpx.AsyncClient(transport=transport, base_url="http://gateway"))


async def register_and_login(http: httpx.AsyncClient) -> dict[str, str]:
    created = await http.post("/v1/auth/register", json={"email": "alice@example.org", "password": PASSWORD})
    assert created.status_code == 201, created.text
    tokens = await http.post("/v1/auth/login", json={"email": "alice@example.org", "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    return dict(tokens.json())


def bearer(tokens: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


async def test_register_login_call_refresh_logout(gateway: httpx.AsyncClient) -> None:
    tokens = await register_and_login(gateway)
    me = await gateway.get("/v1/me", headers=bearer(tokens))
    assert me.status_code == 200
    assert me.json()["roles"] == ["user"]
    refreshed = (await gateway.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    assert (await gateway.get("/v1/me", headers=bearer(refreshed))).status_code == 200
    assert (
        await gateway.post("/v1/auth/logout", json={"refresh_token": refreshed["refresh_token"]})
    ).status_code == 204
    dead = await gateway.post("/v1/auth/refresh", json={"refresh_token": refreshed["refresh_token"]})
    assert dead.status_code == 401
    assert dead.headers["content-type"] == "application/problem+json"
    # The logout's session.revoked event reaches the gateway: the access token stops working too.
    await wait_until(
        lambda: _status(gateway.get("/v1/me", headers=bearer(refreshed)), 401), timeout=5, what="revocation applied"
    )


async def test_reusing_a_refreshed_token_revokes_the_family(gateway: httpx.AsyncClient) -> None:
    tokens = await register_and_login(gateway)
    newer = (await gateway.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    reuse = await gateway.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 401
    assert (await gateway.post("/v1/auth/refresh", json={"refresh_token": newer["refresh_token"]})).status_code == 401
    await wait_until(
        lambda: _status(gateway.get("/v1/me", headers=bearer(newer)), 401), timeout=5, what="family revoked"
    )


async def test_refusals_are_problem_json(gateway: httpx.AsyncClient) -> None:
    no_token = await gateway.get("/v1/me")
    assert no_token.status_code == 401
    assert no_token.json()["detail"] == "a bearer token is required"
    garbage = await gateway.get("/v1/me", headers={"Authorization": "Bearer not.a.token"})
    assert garbage.status_code == 401
    weak = await gateway.post("/v1/auth/register", json={"email": "bob@example.org", "password": "short"})
    assert weak.status_code == 422
    assert weak.json()["type"] == "urn:fog:problem:weak_password"
    coerced = await gateway.post("/v1/auth/register", json={"email": "bob@example.org", "password": 123456789012345})
    assert coerced.status_code == 422, "strict models: a number is not a password"
    jwks = (await gateway.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["alg"] == "EdDSA"


async def _status(response: object, expected: int) -> bool:
    return bool((await response).status_code == expected)  # type: ignore[misc]
