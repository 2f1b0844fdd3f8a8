"""Prometheus metrics of a service's HTTP routes and WebSockets, labelled by route template, never by path.

Why not a library (prometheus-fastapi-instrumentator): it matches each request against every route a
second time to find the template, and the gateway has dozens of routes on a path measured in tenths of a
millisecond (docs/performance.md). Starlette's router already leaves the route it matched in the ASGI
scope; this reads it once the request is answered.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: a request no route took (a 404, or refused by a middleware before routing: body size, rate limit)
UNROUTED = "unrouted"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

REQUESTS = Counter(
    "fog_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "fog_http_request_seconds",
    "From a request's arrival to its answer's start, by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBSOCKETS_OPEN = Gauge("fog_http_websockets_open", "WebSockets accepted and not closed yet, by route", ["route"])
WEBSOCKETS = Counter("fog_http_websockets_total", "WebSockets accepted, by route", ["route"])


class HttpMetricsMiddleware:
    """Counts and times each HTTP request, and counts the open WebSockets, by the route that took it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._request(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> None:
        began, status = time.perf_counter(), 500  # 500: no answer started before an exception escaped
        answered_at: float | None = None

        async def sending(message: Message) -> None:
            nonlocal status, answered_at
            if message["type"] == "http.response.start":
                status, answered_at = message["status"], time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route, method = route_of(scope), _method(scope["method"])
            _requests(route, method, status).inc()
            _request_seconds(route, method).observe((answered_at or time.perf_counter()) - began)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        accepted: str | None = None

        async def sending(message: Message) -> None:
            nonlocal accepted
            if message["type"] == "websocket.accept" and accepted is None:
                accepted = route_of(scope)
                WEBSOCKETS.labels(accepted).inc()
                WEBSOCKETS_OPEN.labels(accepted).inc()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if accepted is not None:
                WEBSOCKETS_OPEN.labels(accepted).dec()


def _method(method: str) -> str:
    """A client may send any method: the unknown ones are one label value, not one each."""
    return method if method in METHODS else "other"


# The labelled children, looked up once each: ``labels()`` validates and locks on every call (~2 µs a metric).
@functools.cache
def _requests(route: str, method: str, status: int) -> Counter:
    return REQUESTS.labels(route, method, str(status))


@functools.cache
def _request_seconds(route: str, method: str) -> Histogram:
    return REQUEST_SECONDS.labels(route, method)


def route_of(scope: Scope) -> str:
    """The template of the route Starlette's router matched (``/v1/jobs/{job_id}``), or ``UNROUTED``."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNROUTED
