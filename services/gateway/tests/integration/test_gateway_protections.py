"""What the gateway does for every route: default deny, forged tokens, rate limits, request ids,
body limits, and a clear 503 when a service does not answer."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi.routing import APIRoute
from gateway_stack import Stack
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from fog_gateway.app import build_app
from fog_gateway.authz import PUBLIC_ROUTES
from fog_gateway.config import Settings
from fog_shared.bus.topology import Topology
from fog_shared.commands import auth as contract
from fog_shared.envelope import Envelope
from fog_shared.events.auth import UserRegistered
from fog_shared.testing.plugin import Provisioner, Servers
from fog_shared.testing.waiting import wait_until


def _guarded(route: APIRoute) -> bool:
    return any(getattr(dep.call, "fog_guarded", False) for dep in route.dependant.dependencies)


def test_every_route_is_guarded_or_declared_public() -> None:
    app = build_app(Settings())
    unguarded = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute) and not _guarded(route)
        for method in route.methods
    }
    assert unguarded <= PUBLIC_ROUTES, f"routes with no authorization: {sorted(unguarded - PUBLIC_ROUTES)}"


async def test_guarded_routes_refuse_a_request_without_credentials(stack: Stack) -> None:
    app = build_app(Settings())
    for route in app.routes:
        if isinstance(route, APIRoute) and _guarded(route):
            path = route.path.replace("{node_id}", "n1").replace("{user_id}", str(uuid.uuid4()))
            path = path.replace("{key_id}", str(uuid.uuid4()))
            for method in route.methods:
                answer = await stack.http.request(method, path, json={})
                assert answer.status_code == 401, (method, path, answer.text)


async def _signing_key(stack: Stack) -> tuple[str, Ed25519PrivateKey]:
    import asyncpg

    conn = await asyncpg.connect(stack.auth_db.dsn)
    try:
        row = await conn.fetchrow(
            f'SELECT kid, private_pem FROM "{stack.auth_db.schema}".signing_keys WHERE retired_at IS NULL'
        )
    finally:
        await conn.close()
    key = load_pem_private_key(bytes(row["private_pem"]), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return row["kid"], key


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_forged_and_stale_tokens_are_refused(stack: Stack) -> None:
    tokens = await stack.register_and_login()
    genuine = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    kid, real_key = await _signing_key(stack)
    now = int(time.time())
    header = {"kid": kid, "typ": "at+jwt"}

    def signed(key: Any = real_key, alg: str = "EdDSA", headers: dict[str, Any] = header, **claims: Any) -> str:
        return jwt.encode({**genuine, **claims}, key, algorithm=alg, headers=headers)

    jwks = (await stack.http.get("/.well-known/jwks.json")).json()
    public_jwk = json.dumps(next(k for k in jwks["keys"] if k["kid"] == kid)).encode()
    forgeries = {
        "expired": signed(iat=now - 700, exp=now - 100),
        "wrong signature": signed(key=Ed25519PrivateKey.generate()),
        "alg none": f"{_b64({'alg': 'none', **header})}.{_b64(genuine)}.",
        "HS256 with the public key": _hs256(genuine, header, public_jwk),
        "unknown kid": signed(headers={**header, "kid": "k-nobody"}),
        "wrong aud": signed(aud="someone-else"),
        "wrong iss": signed(iss="https://evil.example"),
        "not an access token": signed(headers={"kid": kid, "typ": "JWT"}),
    }
    assert (await stack.http.get("/v1/me", headers=stack.bearer(signed()))).status_code == 200, "control"
    for name, forged in forgeries.items():
        answer = await stack.http.get("/v1/me", headers=stack.bearer(forged))
        assert answer.status_code == 401, name
        assert answer.headers["www-authenticate"] == "Bearer", name


def _hs256(claims: dict[str, Any], header: dict[str, Any], secret: bytes) -> str:
    import hashlib
    import hmac

    signing_input = f"{_b64({**header, 'alg': 'HS256'})}.{_b64(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


async def test_revocation_reaches_a_second_gateway_within_a_second(stack: Stack) -> None:
    second = await stack.open_gateway()
    tokens = await stack.register_and_login()
    assert (await second.get("/v1/me", headers=stack.bearer(tokens))).status_code == 200
    await stack.http.post("/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    await stack.until_status("/v1/me", tokens, 401, http=second, timeout=1.0)


async def test_rate_limits_answer_429_with_retry_after_then_recover(stack: Stack) -> None:
    # Slow refills: a loaded machine may take a while between requests, and must not refill a bucket meanwhile.
    limited = await stack.open_gateway(rate_per_principal_per_s=0.5, burst_per_principal=3)
    tokens = await stack.register_and_login(http=limited)
    statuses = [(await limited.get("/v1/me", headers=stack.bearer(tokens))).status_code for _ in range(4)]
    assert statuses[:3] == [200] * 3
    refused = await limited.get("/v1/me", headers=stack.bearer(tokens))
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "2"  # a token every 2 s
    assert refused.json()["code"] == "rate_limited"
    await stack.until_status("/v1/me", tokens, 200, http=limited, timeout=5.0)

    by_source = await stack.open_gateway(rate_per_source_per_s=0.01, burst_per_source=2)
    answers = [(await by_source.get("/.well-known/jwks.json")).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    assert (await by_source.get("/healthz")).status_code == 200, "probes are never limited"


async def test_the_request_id_comes_back_and_becomes_the_events_correlation_id(
    stack: Stack, jetstream: JetStreamContext
) -> None:
    created = await stack.http.post(
        "/v1/auth/register",
        json={"email": "carol@example.org", "password": "a long enough password"},
        headers={"X-Request-ID": "req-carol-1"},
    )
    assert created.status_code == 201
    assert created.headers["x-request-id"] == "req-carol-1"
    generated = await stack.http.get("/.well-known/jwks.json", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"

    async def registered() -> Envelope | None:
        try:
            msg = await jetstream.get_last_msg("EVT_AUTH", UserRegistered.TYPE.subject)
        except Exception:
            return None
        if UserRegistered.from_json(msg.data).email != "carol@example.org":
            return None  # the first admin's, from start-up
        return Envelope.from_headers(msg.headers)

    envelope = await wait_until(registered, timeout=5, what="user.registered published")
    assert envelope.correlation_id == "req-carol-1"


async def test_oversized_bodies_get_413(stack: Stack) -> None:
    small = await stack.open_gateway(max_body_bytes=1024)
    big = {"email": "dave@example.org", "password": "x" * 2000}
    answer = await small.post("/v1/auth/register", json=big)
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"


async def test_auth_routes_answer_503_when_auth_is_down(
    fog_servers: Servers, provision_topology: Provisioner, nats_client: NatsClient
) -> None:
    await provision_topology(Topology())
    app = build_app(Settings(nats_url=fog_servers.nats_url, request_timeout_s=1.0))
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
        body = {"email": "erin@example.org", "password": "a long enough password"}
        nobody = await http.post("/v1/auth/login", json=body)  # no auth process at all
        assert nobody.status_code == 503
        assert nobody.json()["detail"] == "no service is answering"

        async def never_answers(_: Msg) -> None:
            """An auth replica that hangs."""

        await nats_client.subscribe(contract.LOGIN, cb=never_answers)
        await nats_client.flush()
        hung = await http.post("/v1/auth/login", json=body)
        assert hung.status_code == 503
        assert hung.json()["detail"] == "no answer within 1s"
        assert hung.headers["retry-after"] == "1"
