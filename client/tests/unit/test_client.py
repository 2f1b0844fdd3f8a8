"""FogClient against a scripted gateway (httpx.MockTransport): parsing, problems, token refresh."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest

from fog_client import ApiError, Capabilities, FogClient, Location, NodeUsage, Tokens
from fog_client.errors import parse_retry_after

URL = "http://gateway.test"
NOW = "2030-01-02T03:04:05Z"
Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def client(handler: Handler, **kwargs: object) -> FogClient:
    return FogClient(URL, transport=httpx.MockTransport(handler), **kwargs)  # type: ignore[arg-type]


def tokens(n: int) -> dict[str, object]:
    return {"access_token": f"a{n}", "refresh_token": f"r{n}", "token_type": "Bearer", "expires_in": 600}


def problem(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"type": f"urn:fog:problem:{code}", "title": code.replace("_", " "), "status": status, "detail": "no"}
    extra = {"Content-Type": "application/problem+json", "X-Request-ID": "req-9", **(headers or {})}
    return httpx.Response(status, json={**body, "code": code}, headers=extra)


def bearer(request: httpx.Request) -> str | None:
    value: str | None = request.headers.get("Authorization")
    return value


ME = {"kind": "user", "user_id": "u1", "node_id": None, "roles": ["admin"], "session_id": "s1", "api_key_id": None}


class Gateway:
    """Access token ``a<n>`` is valid while ``n == current``; refresh with ``r<current>`` rotates."""

    def __init__(self, *, refresh_ok: bool = True) -> None:
        self.current, self.refresh_ok = 1, refresh_ok
        self.calls: list[tuple[str, str, str | None]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path, bearer(request)))
        if request.url.path == "/v1/auth/refresh":
            if not self.refresh_ok or json.loads(request.content) != {"refresh_token": f"r{self.current}"}:
                return problem(401, "invalid_grant")
            self.current += 1
            return httpx.Response(200, json=tokens(self.current))
        if bearer(request) != f"Bearer a{self.current}":
            return problem(401, "invalid_token", {"WWW-Authenticate": "Bearer"})
        return httpx.Response(200, json=ME)

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.calls]


async def test_login_keeps_the_tokens_and_sends_them_with_the_request_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json=tokens(1))
        return httpx.Response(200, json=ME)

    got: list[Tokens] = []
    async with client(handler, request_id="req-1", on_tokens=got.append) as fog:
        pair = await fog.login("alice@example.org", "pw")
        me = await fog.me()
    assert (pair.access_token, pair.refresh_token, pair.expires_in) == ("a1", "r1", 600)
    assert got == [pair]
    assert "a1" not in repr(pair)  # secrets stay out of logs
    assert json.loads(seen[0].content) == {"email": "alice@example.org", "password": "pw"}
    assert bearer(seen[0]) is None
    assert bearer(seen[1]) == "Bearer a1"
    assert [r.headers["X-Request-ID"] for r in seen] == ["req-1", "req-1"]
    assert (me.kind, me.user_id, me.roles, me.session_id) == ("user", "u1", ["admin"], "s1")


async def test_replies_parse_into_models_with_datetimes() -> None:
    key = {"id": "k1", "name": "ci", "scopes": ["user"], "created_at": NOW, "expires_at": None}
    user = {"id": "u1", "email": "a@b.c", "roles": ["user"], "disabled": False, "created_at": NOW}
    replies = {
        ("POST", "/v1/auth/register"): httpx.Response(201, json={"user_id": "u1"}),
        ("POST", "/v1/api-keys"): httpx.Response(201, json={**key, "key": "fogk_secret"}),
        ("GET", "/v1/api-keys"): httpx.Response(
            200, json={"items": [{**key, "last_used_at": NOW, "revoked_at": None}]}
        ),
        ("DELETE", "/v1/api-keys/k%2F1"): httpx.Response(204),
        ("GET", "/v1/admin/users?limit=10"): httpx.Response(200, json={"items": [user]}),
        ("PUT", "/v1/admin/users/u1/roles"): httpx.Response(200, json={**user, "roles": ["admin"]}),
        ("POST", "/v1/admin/signing-keys/rotate"): httpx.Response(200, json={"kid": "k2"}),
        ("POST", "/v1/nodes/n1/credential"): httpx.Response(
            201, json={"node_id": "n1", "credential": "fogn_secret", "issued_at": NOW}
        ),
        ("GET", "/.well-known/jwks.json"): httpx.Response(200, json={"keys": [{"kid": "k2"}]}),
    }
    bodies: dict[str, object] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.content:
            bodies[request.url.path] = json.loads(request.content)
        return replies[(request.method, request.url.raw_path.decode())]  # raw: the path as sent, query included

    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    async with client(handler, access_token="a1") as fog:
        assert await fog.register("a@b.c", "pw") == "u1"
        created = await fog.create_api_key("ci", ["user"], expires_at=at)
        assert (created.key, created.created_at, created.expires_at) == ("fogk_secret", at, None)
        assert "fogk_secret" not in repr(created)
        [listed] = await fog.list_api_keys()
        assert (listed.id, listed.last_used_at, listed.revoked_at) == ("k1", at, None)
        await fog.revoke_api_key("k/1")  # an id stays one path segment
        [listed_user] = await fog.list_users(limit=10)
        assert (listed_user.email, listed_user.disabled, listed_user.created_at) == ("a@b.c", False, at)
        assert (await fog.set_roles("u1", ["admin"])).roles == ["admin"]
        assert (await fog.rotate_signing_key()).kid == "k2"
        node = await fog.issue_node_credential("n1")
        assert (node.credential, node.issued_at) == ("fogn_secret", at)
        assert await fog.jwks() == {"keys": [{"kid": "k2"}]}
        with pytest.raises(ValueError, match="not an id"):
            await fog.disable_user("..")
    assert bodies["/v1/api-keys"] == {"name": "ci", "scopes": ["user"], "expires_at": "2030-01-02T03:04:05+00:00"}
    assert bodies["/v1/admin/users/u1/roles"] == {"roles": ["admin"]}


async def test_an_api_key_is_the_bearer_instead_of_the_access_token() -> None:
    gateway = Gateway()
    async with client(gateway, access_token="a1", refresh_token="r1", api_key="fogk_k") as fog:
        with pytest.raises(ApiError) as refused:
            await fog.me()
    # a refused key is not the session's business: no refresh
    assert gateway.calls == [("GET", "/v1/me", "Bearer fogk_k")]
    assert refused.value.code == "invalid_token"


async def test_a_problem_becomes_an_api_error_with_retry_after() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return problem(429, "locked", {"Retry-After": "30"})

    async with client(handler) as fog:
        with pytest.raises(ApiError) as refused:
            await fog.login("alice@example.org", "wrong")
    error = refused.value
    assert (error.status, error.code, error.title, error.detail) == (429, "locked", "locked", "no")
    assert error.retry_after == 30
    assert (error.problem["type"], error.request_id) == ("urn:fog:problem:locked", "req-9")
    assert str(error) == "429 locked: no [locked] (retry after 30s)"


async def test_a_non_json_error_body_still_makes_an_api_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>", headers={"Retry-After": "soon"})

    async with client(handler, access_token="a1") as fog:
        with pytest.raises(ApiError) as refused:
            await fog.me()
    error = refused.value
    assert (error.status, error.code, error.title, error.retry_after) == (502, None, "Bad Gateway", None)
    assert error.detail == "<html>Bad Gateway</html>"
    assert error.problem == {}


def test_retry_after_as_an_http_date() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    assert parse_retry_after("Wed, 02 Jan 2030 03:04:35 GMT", now=at) == 30
    assert parse_retry_after("Wed, 02 Jan 2030 03:04:00 GMT", now=at) == 0
    assert parse_retry_after(None) is None


async def test_a_401_refreshes_once_then_retries_and_reports_the_new_tokens() -> None:
    gateway = Gateway()
    gateway.current = 2  # the held access token a1 has been replaced: a 401 is coming
    got: list[Tokens] = []
    async with client(gateway, access_token="a1", refresh_token="r2", on_tokens=got.append) as fog:
        me = await fog.me()
        assert (fog.access_token, fog.refresh_token) == ("a3", "r3")
    assert me.user_id == "u1"
    assert gateway.calls == [
        ("GET", "/v1/me", "Bearer a1"),
        ("POST", "/v1/auth/refresh", None),
        ("GET", "/v1/me", "Bearer a3"),
    ]
    assert [t.refresh_token for t in got] == ["r3"]


async def test_a_second_401_after_refreshing_is_the_answer() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/refresh":
            return httpx.Response(200, json=tokens(2))
        return problem(401, "invalid_token")

    calls = 0

    def counting(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return handler(request)

    async with client(counting, access_token="a1", refresh_token="r1") as fog:
        with pytest.raises(ApiError, match="invalid_token"):
            await fog.me()
    assert calls == 3  # call, refresh, one retry


async def test_a_refused_refresh_raises_without_looping() -> None:
    gateway = Gateway(refresh_ok=False)
    gateway.current = 2
    got: list[Tokens] = []
    async with client(gateway, access_token="a1", refresh_token="r1", on_tokens=got.append) as fog:
        with pytest.raises(ApiError) as refused:
            await fog.me()
        assert fog.refresh_token is None  # dead for good: never presented again
        with pytest.raises(ApiError, match="invalid_token"):
            await fog.me()
    assert refused.value.code == "invalid_grant"
    assert gateway.paths() == ["/v1/me", "/v1/auth/refresh", "/v1/me"]
    assert got == []


async def test_the_auth_routes_never_trigger_a_refresh() -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return problem(401, "invalid_credentials")

    async with client(handler, access_token="a1", refresh_token="r1") as fog:
        with pytest.raises(ApiError, match="invalid_credentials"):
            await fog.login("alice@example.org", "wrong")
        with pytest.raises(ApiError, match="invalid_credentials"):
            await fog.logout()
    assert paths == ["/v1/auth/login", "/v1/auth/logout"]


async def test_concurrent_401s_share_one_refresh() -> None:
    """Refresh tokens rotate with reuse detection: two refreshes with r1 would revoke the session."""
    gateway = Gateway()
    gateway.current = 2
    both_sent = asyncio.Event()
    in_flight = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight
        if bearer(request) == "Bearer a1":  # hold both stale calls until each has been sent
            in_flight += 1
            if in_flight == 2:
                both_sent.set()
            await both_sent.wait()
        return gateway(request)

    async with client(handler, access_token="a1", refresh_token="r2") as fog:
        first, second = await asyncio.gather(fog.me(), fog.me())
    assert first == second
    assert gateway.paths().count("/v1/auth/refresh") == 1
    sent = sorted(str(auth) for _, path, auth in gateway.calls if path == "/v1/me")
    assert sent == ["Bearer a1", "Bearer a1", "Bearer a3", "Bearer a3"]


CAPABILITIES = {
    "cpu_cores": 8,
    "memory_bytes": 16 * 2**30,
    "disk_bytes": 500 * 10**9,
    "arch": "x86_64",
    "os": "Linux 6.8.0",
    "gpus": [{"model": "NVIDIA A100", "memory_bytes": 40 * 2**30}, {"model": "Tesla T4", "memory_bytes": None}],
}
NODE = {
    "id": "n1",
    "name": "edge-1",
    "owner_id": "u1",
    "status": "ready",
    "capabilities": CAPABILITIES,
    "labels": {"zone": "a"},
    "region": "eu-west",
    "location": {"lat": 52.37, "lon": 4.89},
    "reputation": 0.5,
    "running_jobs": 0,
    "usage": {"cpu_percent": 12.5, "memory_used_bytes": 2**30, "disk_used_bytes": 10**9},
    "last_heartbeat_at": NOW,
    "registered_at": NOW,
    "status_changed_at": NOW,
}


async def test_registering_a_node_sends_its_capabilities_and_keeps_the_credential_out_of_repr() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"node": NODE, "credential": "fogn_secret"})

    capabilities = Capabilities.model_validate(CAPABILITIES)
    async with client(handler, api_key="fogk_provider") as fog:
        registered = await fog.register_node(
            "edge-1", capabilities, labels={"zone": "a"}, region="eu-west", location=Location(lat=52.37, lon=4.89)
        )
        bare = await fog.register_node("edge-2", capabilities)
        isolating = capabilities.model_copy(update={"networks": ["host", "none"]})
        await fog.register_node("edge-3", isolating)
    assert (seen[0].method, seen[0].url.path, bearer(seen[0])) == ("POST", "/v1/nodes", "Bearer fogk_provider")
    assert json.loads(seen[0].content) == {
        "name": "edge-1",
        "capabilities": CAPABILITIES,
        "labels": {"zone": "a"},
        "region": "eu-west",
        "location": {"lat": 52.37, "lon": 4.89},
    }
    sent = json.loads(seen[1].content)
    assert (sent["labels"], sent["region"], sent["location"]) == ({}, None, None)
    assert isinstance(sent["capabilities"]["cpu_cores"], int)  # strict gateway: never 8.0
    assert "networks" not in sent["capabilities"], "the default is left to the gateway (an older one refuses it)"
    assert json.loads(seen[2].content)["capabilities"]["networks"] == ["host", "none"]
    assert registered.credential == "fogn_secret"
    assert "fogn_secret" not in repr(registered)
    node = registered.node
    assert (node.id, node.status, node.capabilities.gpus[0].model) == ("n1", "ready", "NVIDIA A100")
    assert node.capabilities.gpus[1].memory_bytes is None
    assert node.location == Location(lat=52.37, lon=4.89)
    assert node.usage == NodeUsage(cpu_percent=12.5, memory_used_bytes=2**30, disk_used_bytes=10**9)
    assert node.last_heartbeat_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert bare == registered


async def test_listing_nodes_sends_only_the_filters_given_and_repeats_label() -> None:
    queries: list[httpx.QueryParams] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params)
        return httpx.Response(200, json={"items": [NODE, {**NODE, "id": "n2", "usage": None, "location": None}]})

    async with client(handler, access_token="a1") as fog:
        nodes = await fog.list_nodes(
            status="ready", labels={"zone": "a", "gpu": "yes"}, min_cpu_cores=2, min_memory_bytes=2**30, owner_id="u1"
        )
        await fog.list_nodes()
    assert [n.id for n in nodes] == ["n1", "n2"]
    assert (nodes[1].usage, nodes[1].location) == (None, None)
    everything = queries[0]
    assert everything.get_list("label") == ["zone=a", "gpu=yes"]
    assert (everything["status"], everything["min_cpu_cores"], everything["owner_id"]) == ("ready", "2", "u1")
    assert everything["min_memory_bytes"] == str(2**30)
    assert not queries[1]


async def test_a_node_is_read_drained_and_deregistered_by_id() -> None:
    calls: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.raw_path.decode()))
        if request.method == "DELETE":
            return httpx.Response(204)
        status = "draining" if request.url.path.endswith("/drain") else "ready"
        return httpx.Response(200, json={**NODE, "status": status, "future_field": 1})  # extra fields are ignored

    async with client(handler, access_token="a1") as fog:
        assert (await fog.get_node("n1")).status == "ready"
        assert (await fog.drain_node("n1")).status == "draining"
        await fog.deregister_node("n/1")  # an id stays one path segment
        with pytest.raises(ValueError, match="not an id"):
            await fog.get_node("..")
    assert calls == [("GET", "/v1/nodes/n1"), ("POST", "/v1/nodes/n1/drain"), ("DELETE", "/v1/nodes/n%2F1")]


async def test_a_refused_node_call_raises_the_problem() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return problem(404, "not_found")

    async with client(handler, access_token="a1") as fog:
        with pytest.raises(ApiError) as refused:
            await fog.drain_node("n1")
    assert (refused.value.status, refused.value.code) == (404, "not_found")
