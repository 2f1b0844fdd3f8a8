"""The gateway's ASGI middlewares on a tiny FastAPI app: request ids, body limits, rate limits."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from fog_gateway import problems
from fog_gateway.middleware import BodySizeLimitMiddleware, RequestIdMiddleware, SourceRateLimitMiddleware
from fog_gateway.ratelimit import RateLimiter
from fog_shared.telemetry.context import correlation_id

MAX_BODY = 16


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Item(BaseModel):
    name: str


def build_app() -> FastAPI:
    app = FastAPI()
    problems.install(app)
    app.state.calls = 0

    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str | None]:
        return {"correlation_id": correlation_id(), "state": getattr(request.state, "request_id", None)}

    @app.get("/whoami-sync")
    def whoami_sync() -> dict[str, str | None]:
        return {"correlation_id": correlation_id()}

    @app.post("/raw")
    async def raw(request: Request) -> dict[str, int]:
        app.state.calls += 1
        return {"received": len(await request.body())}

    @app.post("/items")
    async def items(item: Item) -> dict[str, str]:
        return {"name": item.name}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def client_for(app: FastAPI, host: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:fog:problem:{code}"
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# -- request id ------------------------------------------------------------------------------


@pytest.fixture
async def with_request_id() -> AsyncIterator[httpx.AsyncClient]:
    app = build_app()
    app.add_middleware(RequestIdMiddleware)
    async with client_for(app) as client:
        yield client


async def test_a_valid_request_id_is_echoed_and_becomes_the_correlation_id(
    with_request_id: httpx.AsyncClient,
) -> None:
    response = await with_request_id.get("/whoami", headers={"X-Request-ID": "req-42:a.b_c"})
    assert response.headers["x-request-id"] == "req-42:a.b_c"
    assert response.json() == {"correlation_id": "req-42:a.b_c", "state": "req-42:a.b_c"}


@pytest.mark.parametrize("sent", [None, b"", b"has space", b"a/b", b"semi;colon", "é".encode("latin-1"), b"x" * 129])
async def test_a_missing_or_invalid_request_id_is_replaced(
    with_request_id: httpx.AsyncClient, sent: bytes | None
) -> None:
    headers = {} if sent is None else {b"X-Request-ID": sent}
    response = await with_request_id.get("/whoami", headers=headers)
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert response.json() == {"correlation_id": request_id, "state": request_id}


async def test_the_correlation_id_reaches_sync_handlers_too(with_request_id: httpx.AsyncClient) -> None:
    response = await with_request_id.get("/whoami-sync", headers={"X-Request-ID": "sync-1"})
    assert response.json() == {"correlation_id": "sync-1"}


async def test_an_error_response_carries_the_request_id_too(with_request_id: httpx.AsyncClient) -> None:
    response = await with_request_id.get("/nowhere", headers={"X-Request-ID": "lost-1"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "lost-1"


async def test_the_correlation_id_does_not_outlive_the_request(with_request_id: httpx.AsyncClient) -> None:
    await with_request_id.get("/whoami", headers={"X-Request-ID": "gone-after"})
    assert correlation_id() is None


# -- body size limit -------------------------------------------------------------------------


@pytest.fixture
def limited_app() -> FastAPI:
    app = build_app()
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY)
    return app


@pytest.fixture
async def with_body_limit(limited_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(limited_app) as client:
        yield client


async def test_a_declared_length_over_the_limit_is_refused_before_the_app_runs(
    limited_app: FastAPI, with_body_limit: httpx.AsyncClient
) -> None:
    response = await with_body_limit.post("/raw", content=b"x" * (MAX_BODY + 1))
    assert_problem(response, 413, "body_too_large")
    assert limited_app.state.calls == 0


async def test_a_streamed_body_over_the_limit_is_refused(
    limited_app: FastAPI, with_body_limit: httpx.AsyncClient
) -> None:
    response = await with_body_limit.post("/raw", content=chunks(b"x" * 10, b"x" * 10, b"x" * 10))
    assert "content-length" not in response.request.headers  # chunked: caught while the app reads
    assert_problem(response, 413, "body_too_large")
    assert limited_app.state.calls == 1


async def test_a_streamed_json_body_over_the_limit_is_refused_not_reported_as_unparsable(
    with_body_limit: httpx.AsyncClient,
) -> None:
    # FastAPI turns the cut-off body into a 400; the middleware has answered 413 already.
    response = await with_body_limit.post("/items", content=chunks(b'{"name": "', b"y" * 20, b'"}'))
    assert_problem(response, 413, "body_too_large")


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_body_within_the_limit_passes(with_body_limit: httpx.AsyncClient, streamed: bool) -> None:
    body = b"x" * MAX_BODY
    response = await with_body_limit.post("/raw", content=chunks(body[:8], body[8:]) if streamed else body)
    assert response.status_code == 200
    assert response.json() == {"received": MAX_BODY}


async def test_a_response_already_started_is_left_alone_and_the_app_is_no_longer_fed() -> None:
    seen: list[Message] = []

    async def streaming_app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (message := await receive())["type"] == "http.request":
            seen.append(message)
        seen.append(message)
        await send({"type": "http.response.body", "body": b"done"})

    incoming: Iterator[Message] = iter(
        [{"type": "http.request", "body": b"x" * 10, "more_body": True}] * 3
        + [{"type": "http.request", "body": b"", "more_body": False}]
    )

    async def receive() -> Message:
        return next(incoming)

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    await BodySizeLimitMiddleware(streaming_app, max_bytes=MAX_BODY)(scope, receive, send)
    assert [m["type"] for m in seen] == ["http.request", "http.disconnect"]  # 10 bytes, then cut
    assert [m.get("status") for m in sent] == [200, None]  # no 413 once a response has started


# -- source rate limit -----------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rate_limited_app(clock: FakeClock) -> FastAPI:
    app = build_app()
    app.add_middleware(SourceRateLimitMiddleware, limiter=RateLimiter(rate_per_s=0.5, burst=2), clock=clock)
    return app


def refusals() -> float:
    return REGISTRY.get_sample_value("fog_gateway_rate_limited_total", {"scope": "source"}) or 0.0


async def test_a_source_over_its_rate_gets_429_until_time_passes(rate_limited_app: FastAPI, clock: FakeClock) -> None:
    before = refusals()
    async with client_for(rate_limited_app) as client:
        assert [(await client.get("/whoami")).status_code for _ in range(2)] == [200, 200]
        refused = await client.get("/whoami")
        assert_problem(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "2"  # one token per 2 s
        assert refusals() == before + 1

        clock.now += 1.0
        assert (await client.get("/whoami")).headers["retry-after"] == "1"
        clock.now += 1.0
        assert (await client.get("/whoami")).status_code == 200


async def test_sources_are_limited_separately(rate_limited_app: FastAPI) -> None:
    async with client_for(rate_limited_app, "10.0.0.1") as first, client_for(rate_limited_app, "10.0.0.2") as second:
        for _ in range(2):
            await first.get("/whoami")
        assert (await first.get("/whoami")).status_code == 429
        assert (await second.get("/whoami")).status_code == 200


async def test_health_paths_are_never_limited(rate_limited_app: FastAPI) -> None:
    async with client_for(rate_limited_app) as client:
        for _ in range(2):
            await client.get("/whoami")
        assert (await client.get("/whoami")).status_code == 429
        assert {(await client.get("/healthz")).status_code for _ in range(20)} == {200}


async def test_an_unlimited_limiter_lets_everything_through() -> None:
    app = build_app()
    app.add_middleware(SourceRateLimitMiddleware, limiter=RateLimiter(rate_per_s=0, burst=0))
    async with client_for(app) as client:
        assert {(await client.get("/whoami")).status_code for _ in range(20)} == {200}


# -- all three, in the gateway's order -------------------------------------------------------


async def test_refusals_from_inner_middlewares_carry_the_request_id(clock: FakeClock) -> None:
    app = build_app()
    # add_middleware wraps what is there, so the last added is the outermost
    app.add_middleware(SourceRateLimitMiddleware, limiter=RateLimiter(rate_per_s=1, burst=1), clock=clock)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY)
    app.add_middleware(RequestIdMiddleware)
    async with client_for(app) as client:
        too_big = await client.post("/raw", content=b"x" * (MAX_BODY + 1), headers={"X-Request-ID": "big-1"})
        assert_problem(too_big, 413, "body_too_large")
        assert too_big.headers["x-request-id"] == "big-1"

        # the 413 never reached the rate limiter: this request takes the only token, the next is refused
        assert (await client.post("/raw", content=b"x")).status_code == 200
        too_many = await client.post("/raw", content=b"x", headers={"X-Request-ID": "many-1"})
        assert_problem(too_many, 429, "rate_limited")
        assert too_many.headers["x-request-id"] == "many-1"
