"""The gateway's HTTP metrics: every request counted and timed by its route's template (never a path with an id
in it), what a middleware refuses before routing too, and the WebSockets open; all served apart from the API."""

from __future__ import annotations

import uuid

import httpx
from gateway_stack import Stack
from prometheus_client import REGISTRY, generate_latest
from websockets.asyncio.client import connect

from fog_gateway.app import build_app
from fog_gateway.config import Settings
from fog_shared.bus.topology import Topology
from fog_shared.testing.plugin import Provisioner, Servers
from fog_shared.testing.waiting import wait_until


def _requests(route: str, method: str, status: int) -> float:
    labels = {"route": route, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("fog_http_requests_total", labels) or 0.0


def _timed(route: str, method: str) -> float:
    return REGISTRY.get_sample_value("fog_http_request_seconds_count", {"route": route, "method": method}) or 0.0


def _open(route: str) -> float:
    return REGISTRY.get_sample_value("fog_http_websockets_open", {"route": route}) or 0.0


async def test_requests_are_counted_and_timed_by_route_template_never_by_their_ids(stack: Stack) -> None:
    tokens = await stack.register_and_login("mia@example.org")
    job_id = str(uuid.uuid4())
    route = "/v1/jobs/{job_id}"
    found, timed = _requests(route, "GET", 404), _timed(route, "GET")
    assert (await stack.http.get(f"/v1/jobs/{job_id}", headers=stack.bearer(tokens))).status_code == 404
    assert _requests(route, "GET", 404) == found + 1
    assert _timed(route, "GET") == timed + 1
    unauthorized = _requests(route, "GET", 401)
    assert (await stack.http.get(f"/v1/jobs/{job_id}")).status_code == 401
    assert _requests(route, "GET", 401) == unauthorized + 1

    nowhere = _requests("unrouted", "GET", 404)
    assert (await stack.http.get(f"/v1/nothing/{job_id}")).status_code == 404
    assert _requests("unrouted", "GET", 404) == nowhere + 1
    made_up = _requests("unrouted", "other", 404)  # any method a client makes up is one label value
    assert (await stack.http.request("FETCH-1234", f"/v1/nothing/{job_id}")).status_code == 404
    assert _requests("unrouted", "other", 404) == made_up + 1
    metrics = generate_latest(REGISTRY).decode()
    assert "fog_http_requests_total" in metrics
    assert job_id not in metrics, "a path's ids never become labels"


async def test_the_gateways_metrics_are_served_apart_from_its_public_api(
    fog_servers: Servers, provision_topology: Provisioner
) -> None:
    """The API port faces the world: metrics there would tell anyone the platform's load, and their rendering,
    unlimited, would cost the gateway CPU at a stranger's will."""
    await provision_topology(Topology())
    app = build_app(Settings(nats_url=fog_servers.nats_url, request_timeout_s=1.0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as api:
        assert (await api.get("http://gateway/metrics")).status_code == 404
        metrics_url = app.state.runtime.metrics_url
        assert metrics_url is not None
        async with httpx.AsyncClient() as http:
            scraped = await http.get(metrics_url)
        assert scraped.status_code == 200
        assert "fog_http_requests_total" in scraped.text


async def test_websockets_are_counted_while_open(stack: Stack) -> None:
    url = await stack.serve_gateway()
    tokens = await stack.register_and_login("noa@example.org")
    route = "/v1/jobs/updates"
    before = _open(route)
    async with connect(url.replace("http://", "ws://") + route, additional_headers=stack.bearer(tokens)):
        await wait_until(lambda: _async(_open(route) == before + 1), timeout=5, what="the WebSocket counted open")

    await wait_until(lambda: _async(_open(route) == before), timeout=5, what="the closed WebSocket no longer counted")


async def _async(value: bool) -> bool:
    return value
