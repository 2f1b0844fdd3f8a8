"""A service whose background task ended is not alive: ``/healthz`` fails (Kubernetes restarts it),
``/readyz`` and ``/metrics`` say which task; a stop ending every task is not a death."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import httpx
import pytest

from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings
from fog_shared.testing.plugin import Servers
from fog_shared.testing.waiting import wait_until


class _Settings(CommonSettings):
    service: ClassVar[str] = "probed"


class _Doomed:
    """A loop that runs until told how to end: by raising, or by returning."""

    def __init__(self) -> None:
        self.end: asyncio.Queue[str] = asyncio.Queue()

    async def run(self) -> None:
        if await self.end.get() == "raise":
            raise RuntimeError("password=hunter2 in a failing loop's message")


async def _forever() -> None:
    await asyncio.Event().wait()


@pytest.fixture
async def service(fog_servers: Servers) -> AsyncIterator[tuple[_Doomed, _Doomed, httpx.AsyncClient]]:
    runtime = ServiceRuntime(_Settings(nats_url=fog_servers.nats_url), migrations_dir=None, uses_database=False)
    raising, returning = _Doomed(), _Doomed()
    runtime.in_background("steady", _forever)
    runtime.in_background("raising", raising.run)
    runtime.in_background("returning", returning.run)
    app = runtime.http_app()
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://s") as http:
        yield raising, returning, http


async def _health(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/healthz")


async def test_a_background_task_that_ends_fails_the_liveness_probe_and_says_which(
    service: tuple[_Doomed, _Doomed, httpx.AsyncClient],
) -> None:
    raising, returning, http = service
    healthy = await _health(http)
    assert (healthy.status_code, healthy.json()) == (200, {"status": "ok", "service": "probed"})
    assert (await http.get("/readyz")).json()["checks"]["background_tasks"] == "ok"

    raising.end.put_nowait("raise")

    async def failing() -> httpx.Response | None:
        answer = await _health(http)
        return answer if answer.status_code == 503 else None

    failed = await wait_until(failing, timeout=5, what="/healthz to fail once a background task raised")
    assert failed.json() == {
        "status": "failing", "service": "probed", "ended_tasks": {"raising": "raised RuntimeError"},
    }  # fmt: skip
    assert "hunter2" not in failed.text, "an exception's text stays in the log: /healthz answers anyone"

    returning.end.put_nowait("return")
    both = {"raising": "raised RuntimeError", "returning": "returned"}
    await wait_until(lambda: _ended(http, both), timeout=5, what="a loop that returned to count as ended too")
    ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["background_tasks"] == "ended: raising, returning"
    metrics = (await http.get("/metrics")).text
    assert 'fog_background_task_dead{service="probed",task="raising"} 1.0' in metrics
    assert 'task="steady"' not in metrics


async def _ended(http: httpx.AsyncClient, expected: dict[str, str]) -> bool:
    ended: dict[str, str] | None = (await _health(http)).json().get("ended_tasks")
    return ended == expected


async def test_the_stop_ending_every_task_is_no_death(fog_servers: Servers) -> None:
    runtime = ServiceRuntime(_Settings(nats_url=fog_servers.nats_url), migrations_dir=None, uses_database=False)
    runtime.in_background("steady", _forever)
    await runtime.start()
    await runtime.stop()
    assert runtime.dead_tasks == {}
