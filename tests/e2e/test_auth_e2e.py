"""Auth and gateway security on the real stack: separate processes, driven over HTTP only
(plus the database for the one thing HTTP cannot give: the real signing key, to forge tokens
that differ from genuine ones in exactly one claim)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from devstack_driver import RUN, RunningStack, email, fogctl, open_stack

from fog_client import ApiError, FogClient
from fog_shared.testing.waiting import wait_until

pytestmark = pytest.mark.e2e
PASSWORD = "a long and unguessable password"
#: node ids: unique to the run, as a deployed Fog keeps earlier runs' nodes
EDGE_A, EDGE_B = f"edge-a-{RUN}", f"edge-b-{RUN}"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    stack = open_stack(tmp_path_factory.mktemp("auth-e2e"))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def stack(running: RunningStack) -> RunningStack:
    await running.ready()
    return running


def client(stack: RunningStack, url: str | None = None, **credentials: Any) -> FogClient:
    return FogClient(url or stack.state["gateway_url"], **credentials)


async def new_user(stack: RunningStack, email: str, roles: tuple[str, ...] = ("user",)) -> FogClient:
    fog = client(stack)
    await fog.register(email, PASSWORD, roles=roles)
    await fog.login(email, PASSWORD)
    return fog


async def until_refused(url: str, token: str, *, timeout: float) -> None:
    async with httpx.AsyncClient() as http:

        async def refused() -> bool:
            return (await http.get(f"{url}/v1/me", headers={"Authorization": f"Bearer {token}"})).status_code == 401

        await wait_until(refused, timeout=timeout, interval=0.02, what="the token refused")


@pytest.mark.local_stack
async def test_the_first_admin_exists_and_fogctl_is_logged_in_as_it(stack: RunningStack) -> None:
    path = Path(stack.state["admin_credentials"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    admin = await _read_json(path)
    assert len(admin["password"]) >= 20, "a random password, not a default one"
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}
    code, out = await fogctl("whoami", "--json", env=config)
    assert code == 0, out
    assert "admin" in json.loads(out)["roles"]
    assert stat.S_IMODE(os.stat(stack.dir / "fogctl" / "credentials.json").st_mode) == 0o600


@pytest.mark.local_stack
async def test_fogctl_status_shows_the_admin_every_service_in_order_and_who_leads(stack: RunningStack) -> None:
    """Each service is its own process and NATS user here: every replica answers the status query itself."""
    config = {"FOG_CONFIG_DIR": str(stack.dir / "fogctl")}

    async def in_order() -> dict[str, Any] | None:
        code, out = await fogctl("status", "--json", env=config)
        return json.loads(out) if code == 0 else None

    status = await wait_until(in_order, timeout=30, interval=0.5, what="fogctl status to say all is in order")
    services = {s["service"]: s["replicas"] for s in status["services"]}
    assert sorted(services) == ["auth", "gateway", "messaging", "registry", "scheduler"]
    assert [replica["facts"] for replica in services["scheduler"]] == [{"leads_placement": True}]
    assert [replica["facts"] for replica in services["registry"]] == [{"leads_liveness": True}]
    code, table = await fogctl("status", env=config)
    assert code == 0, table
    assert all(name in table for name in services)


@pytest.mark.local_stack
async def test_register_login_call_refresh_logout_and_revocation_on_a_second_gateway(stack: RunningStack) -> None:
    second = await stack.extra_gateway()
    fog = await new_user(stack, email("alice"))
    assert (await fog.me()).roles == ["user"]
    first_refresh = fog.refresh_token
    await fog.refresh()
    assert fog.refresh_token != first_refresh
    access = fog.access_token
    assert access is not None
    async with client(stack, second, access_token=access) as other:
        assert (await other.me()).kind == "user"
    await fog.logout()
    await until_refused(second, access, timeout=1.0)  # the revocation reaches the other process within 1 s
    async with client(stack, refresh_token=first_refresh) as stale:
        with pytest.raises(ApiError) as dead:
            await stale.refresh()
    assert dead.value.status == 401


async def test_reusing_a_refreshed_token_revokes_the_whole_family(stack: RunningStack) -> None:
    fog = await new_user(stack, email("bob"))
    spent = fog.refresh_token
    await fog.refresh()
    newer_access, newer_refresh = fog.access_token, fog.refresh_token
    assert newer_access is not None
    async with client(stack, refresh_token=spent) as thief:
        with pytest.raises(ApiError):
            await thief.refresh()
    async with client(stack, refresh_token=newer_refresh) as owner:
        with pytest.raises(ApiError) as revoked:
            await owner.refresh()
    assert revoked.value.status == 401
    await until_refused(stack.state["gateway_url"], newer_access, timeout=1.0)


async def _signing_key(stack: RunningStack) -> tuple[str, Ed25519PrivateKey]:
    password = await asyncio.to_thread(lambda: (stack.dir / "postgres" / "superuser.pw").read_text().strip())
    dsn = stack.state["database_dsn_redacted"].replace("***", password).rsplit("/", 1)[0] + "/fog"
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT kid, private_pem FROM auth.signing_keys WHERE retired_at IS NULL")
    finally:
        await conn.close()
    passphrase = (await _read_json(stack.dir / "secrets.json"))["auth_signing_key_passphrase"]
    key = load_pem_private_key(bytes(row["private_pem"]), password=passphrase.encode())
    assert isinstance(key, Ed25519PrivateKey)
    return row["kid"], key


def _b64(data: bytes | dict[str, Any]) -> str:
    raw = json.dumps(data).encode() if isinstance(data, dict) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.local_stack
async def test_forged_expired_and_misaddressed_tokens_get_401(stack: RunningStack) -> None:
    fog = await new_user(stack, email("carol"))
    assert fog.access_token is not None
    genuine = jwt.decode(fog.access_token, options={"verify_signature": False})
    kid, key = await _signing_key(stack)
    header, now = {"kid": kid, "typ": "at+jwt"}, int(time.time())

    def signed(with_key: Any = key, headers: dict[str, Any] = header, **claims: Any) -> str:
        return jwt.encode({**genuine, **claims}, with_key, algorithm="EdDSA", headers=headers)

    jwks = await fog.jwks()
    public_jwk = json.dumps(next(k for k in jwks["keys"] if k["kid"] == kid)).encode()
    hs_input = f"{_b64({**header, 'alg': 'HS256'})}.{_b64(genuine)}"
    hs_mac = hmac.digest(public_jwk, hs_input.encode(), hashlib.sha256)
    forged = {
        "expired": signed(iat=now - 700, exp=now - 60),
        "wrong signature": signed(with_key=Ed25519PrivateKey.generate()),
        "alg none": f"{_b64({**header, 'alg': 'none'})}.{_b64(genuine)}.",
        "HS256 signed with the public key": f"{hs_input}.{_b64(hs_mac)}",
        "unknown kid": signed(headers={**header, "kid": "k-unknown"}),
        "wrong aud": signed(aud="another-audience"),
        "wrong iss": signed(iss="https://issuer.example"),
    }
    async with httpx.AsyncClient(base_url=stack.state["gateway_url"]) as http:
        assert (await http.get("/v1/me", headers={"Authorization": f"Bearer {signed()}"})).status_code == 200
        for name, token in forged.items():
            answer = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 401, name


async def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(await asyncio.to_thread(path.read_text)))


async def _admin(stack: RunningStack) -> FogClient:
    credentials = await _read_json(Path(stack.state["admin_credentials"]))
    fog = client(stack)
    await fog.login(credentials["email"], credentials["password"])
    return fog


@pytest.mark.local_stack
async def test_rotation_keeps_old_tokens_until_they_expire(stack: RunningStack) -> None:
    admin, user = await _admin(stack), await new_user(stack, email("dan"))
    assert user.access_token is not None
    old_kid = jwt.get_unverified_header(user.access_token)["kid"]
    new_kid = (await admin.rotate_signing_key()).kid
    assert (await user.me()).kind == "user", "a token signed with the old key still verifies"
    await user.login(email("dan"), PASSWORD)
    assert user.access_token is not None
    assert jwt.get_unverified_header(user.access_token)["kid"] == new_kid != old_kid
    assert (await user.me()).kind == "user"


async def test_authorization_users_keys_and_nodes(stack: RunningStack) -> None:
    user = await new_user(stack, email("erin"))
    with pytest.raises(ApiError) as forbidden:
        await user.list_users()
    assert forbidden.value.status == 403
    with pytest.raises(ApiError) as too_wide:
        await user.create_api_key("escalate", ["admin"])
    assert too_wide.value.status == 403
    provider = await new_user(stack, email("pat"), roles=("user", "provider"))
    scoped = await provider.create_api_key("read-only", ["user"])
    async with client(stack, api_key=scoped.key) as by_key:
        assert (await by_key.me()).roles == ["user"]
        with pytest.raises(ApiError) as beyond_scope:
            await by_key.issue_node_credential(EDGE_A)
    assert beyond_scope.value.status == 403
    credential = (await provider.issue_node_credential(EDGE_A)).credential
    await provider.issue_node_credential(EDGE_B)
    async with client(stack, api_key=credential) as node:
        assert (await node.me()).node_id == EDGE_A
        for as_user in (node.list_api_keys(), node.create_api_key("k", ["user"]), node.list_users()):
            with pytest.raises(ApiError) as not_a_user:
                await as_user
            assert not_a_user.value.status == 403
        with pytest.raises(ApiError) as other_node:
            await node.revoke_node_credential(EDGE_B)
        assert other_node.value.status == 403


async def test_wrong_passwords_lock_the_account(stack: RunningStack) -> None:
    await new_user(stack, email("frank"))
    async with client(stack) as fog:
        for _ in range(5):
            with pytest.raises(ApiError) as wrong:
                await fog.login(email("frank"), "not the right password")
            assert wrong.value.status == 401
        with pytest.raises(ApiError) as locked:
            await fog.login(email("frank"), PASSWORD)
    assert locked.value.status == 429
    assert (locked.value.retry_after or 0) > 0


@pytest.mark.local_stack
async def test_rate_limit_answers_429_with_retry_after_and_recovers(stack: RunningStack) -> None:
    limited = await stack.extra_gateway(rate_per_principal_per_s="2", burst_per_principal="3")
    fog = await new_user(stack, email("gina"))
    assert fog.access_token is not None
    headers = {"Authorization": f"Bearer {fog.access_token}"}
    async with httpx.AsyncClient(base_url=limited) as http:
        statuses = [(await http.get("/v1/me", headers=headers)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        refused = await http.get("/v1/me", headers=headers)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1

        async def recovered() -> bool:
            return (await http.get("/v1/me", headers=headers)).status_code == 200

        await wait_until(recovered, timeout=5, interval=0.5, what="the bucket refilled")


@pytest.mark.local_stack
async def test_with_auth_stopped_auth_routes_answer_503_within_the_timeout(stack: RunningStack) -> None:
    auth_pid = stack.process("auth")["pid"]
    body = {"email": email("hank"), "password": PASSWORD}
    os.kill(auth_pid, signal.SIGSTOP)  # auth stops answering, as a hung or partitioned process does
    try:
        async with httpx.AsyncClient(base_url=stack.state["gateway_url"], timeout=30) as http:
            started = time.monotonic()
            answer = await http.post("/v1/auth/register", json=body)
            waited = time.monotonic() - started
    finally:
        os.kill(auth_pid, signal.SIGCONT)
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["retry-after"]
    assert "no answer within" in answer.json()["detail"]
    assert waited < 30, "the gateway's own timeout answers, not the client's"
