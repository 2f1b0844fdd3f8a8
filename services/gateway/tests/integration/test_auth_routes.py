"""The gateway's auth routes in front of a real auth service (same process), real NATS and Postgres."""

from __future__ import annotations

from gateway_stack import PASSWORD, Stack
from nats.js import JetStreamContext

from fog_shared.bus.topology import event_stream_name
from fog_shared.events.auth import SessionRevoked

EVT_AUTH = event_stream_name("auth")


async def test_register_login_call_refresh_logout(stack: Stack) -> None:
    http = stack.http
    tokens = await stack.register_and_login()
    me = await http.get("/v1/me", headers=stack.bearer(tokens))
    assert me.status_code == 200
    assert me.json()["roles"] == ["user"]
    assert me.json()["kind"] == "user"
    refreshed = (await http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    assert (await http.get("/v1/me", headers=stack.bearer(refreshed))).status_code == 200
    logout = await http.post("/v1/auth/logout", json={"refresh_token": refreshed["refresh_token"]})
    assert logout.status_code == 204
    dead = await http.post("/v1/auth/refresh", json={"refresh_token": refreshed["refresh_token"]})
    assert dead.status_code == 401
    assert dead.headers["content-type"] == "application/problem+json"
    # The logout's session.revoked event reaches the gateway: the access token stops working too.
    await stack.until_status("/v1/me", refreshed, 401)


async def test_reusing_a_refreshed_token_revokes_the_family(stack: Stack) -> None:
    http = stack.http
    tokens = await stack.register_and_login()
    newer = (await http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    reuse = await http.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert reuse.status_code == 401
    again = await http.post("/v1/auth/refresh", json={"refresh_token": newer["refresh_token"]})
    assert again.status_code == 401
    await stack.until_status("/v1/me", newer, 401)


async def test_refusals_are_problem_json(stack: Stack) -> None:
    http = stack.http
    no_token = await http.get("/v1/me")
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"] == "Bearer"
    garbage = await http.get("/v1/me", headers={"Authorization": "Bearer not.a.token"})
    assert garbage.status_code == 401
    weak = await http.post("/v1/auth/register", json={"email": "bob@example.org", "password": "short"})
    assert weak.status_code == 422
    assert weak.json()["type"] == "urn:fog:problem:weak_password"
    assert weak.json()["code"] == "weak_password"
    coerced = await http.post("/v1/auth/register", json={"email": "bob@example.org", "password": 123456789012345})
    assert coerced.status_code == 422, "strict models: a number is not a password"
    for route in ("/v1/auth/register", "/v1/auth/login"):  # PostgreSQL's text cannot hold a NUL: refused up front
        nul = await http.post(route, json={"email": "bob\u0000@example.org", "password": "correct horse battery"})
        assert nul.status_code == 422, nul.text
    jwks = (await http.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["alg"] == "EdDSA"


async def test_a_gateway_knows_revocations_from_before_its_start_and_hears_new_ones_after_losing_its_consumer(
    stack: Stack, jetstream: JetStreamContext
) -> None:
    first = await stack.register_and_login()
    assert (await stack.http.post("/v1/auth/logout", json={"refresh_token": first["refresh_token"]})).status_code == 204
    await stack.until_status("/v1/me", first, 401)
    later = await stack.open_gateway()
    assert (await later.get("/v1/me", headers=stack.bearer(first))).status_code == 401, "read as it started"

    # The consumers that bring revocations go away (as in a NATS restart without their state).
    for info in await jetstream.consumers_info(EVT_AUTH):
        if info.config.filter_subject == SessionRevoked.TYPE.subject:
            await jetstream.delete_consumer(EVT_AUTH, info.name)
    second = await stack.login("alice@example.org", PASSWORD, http=later)
    assert (await later.get("/v1/me", headers=stack.bearer(second))).status_code == 200
    assert (await later.post("/v1/auth/logout", json={"refresh_token": second["refresh_token"]})).status_code == 204
    # nats-py notices the silence (two missed idle heartbeats of 5 s) and makes the consumer anew.
    await stack.until_status("/v1/me", second, 401, http=later, timeout=40)
