"""Plain ASGI middlewares of the gateway: request id, body size limit, per-source rate limit.

Plain ASGI rather than ``BaseHTTPMiddleware``: no extra task per request, and streamed request
and response bodies pass through untouched. Refusals are RFC 9457 problems built by
:func:`fog_gateway.problems.problem_response`, so they look like every other error of the API.

Order in the app, outermost first: :class:`RequestIdMiddleware` (so even a refusal carries the
id), the access log (:mod:`fog_gateway.access_log`), :class:`BodySizeLimitMiddleware`,
:class:`SourceRateLimitMiddleware`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable

from opentelemetry import trace
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fog_gateway.problems import problem_response
from fog_gateway.ratelimit import RATE_LIMITED, RateLimiter, retry_after_s
from fog_shared.telemetry.context import use_correlation_id

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
# What a caller may choose as its id: enough for uuids, ULIDs and "service:seq" forms, and
# nothing that could split a log line or a header.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

DEFAULT_EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/asyncapi.json"})


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case) of the request."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RequestIdMiddleware:
    """Gives each request an id: the caller's ``X-Request-ID`` when well-formed, else a fresh one.

    The id becomes the correlation id for the rest of the request (NATS requests carry it, events
    recorded for it are stamped with it, log lines name it), is kept in ``scope["state"]``
    (``request.state.request_id``) and is echoed in the response's ``X-Request-ID``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        # A new dict: a server may hand every request the same lifespan state mapping.
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("fog.correlation_id", request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message.setdefault("headers", [])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with use_correlation_id(request_id):
            await self.app(scope, receive, send_with_id)


def _request_id(scope: Scope) -> str:
    raw = _header(scope, _REQUEST_ID_KEY)
    if raw is not None:
        candidate = raw.decode("latin-1")
        if _VALID_REQUEST_ID.fullmatch(candidate):
            return candidate
    return uuid.uuid4().hex


class BodySizeLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` with 413 (problem ``body_too_large``).

    A declared ``Content-Length`` over the limit is refused before the app runs or the body is
    read. Otherwise (chunked bodies, or a length the server did not check) the body is counted as
    the app reads it; the chunk that crosses the limit is never delivered. Instead:

    * if the app has not started its response, the 413 is sent there and then, the app is told
      the client went away (``http.disconnect``: Starlette raises ``ClientDisconnect``), and
      whatever it sends or raises afterwards is dropped — the client already has its answer;
    * if the app already started a response (it streams while reading), a 413 can no longer be
      sent: the app is just not fed any more (``http.disconnect``), an error it raises over that
      is dropped too, and the server ends the unfinished response when the app returns.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(declared)(scope, receive, send)
            return

        received = 0
        response_started = answered = cut_off = False

        async def counting_receive() -> Message:
            nonlocal received, answered, cut_off
            if cut_off:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    cut_off = True
                    if not response_started:
                        answered = True
                        await self._too_large(None)(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if answered:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not cut_off:
                raise
            # The app failing after its body was cut off is its reaction to the disconnect we fed
            # it: not a server error worth a traceback.
            log.debug("app failed after its oversized request body was cut off", exc_info=True)

    def _too_large(self, declared: int | None) -> ASGIApp:
        size = f"{declared} bytes" if declared is not None else f"over {self.max_bytes} bytes"
        return problem_response(
            413,
            "Request body too large",
            f"the body has {size}; at most {self.max_bytes} bytes are accepted",
            code="body_too_large",
        )


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    # Servers reject malformed lengths themselves; if one slips through, counting still applies.
    if raw is None or not raw.isdigit():
        return None
    return int(raw)


class SourceRateLimitMiddleware:
    """Rate-limits requests per client address (``scope["client"]``), 429 ``rate_limited``.

    The address is whatever the server puts in the scope: behind a proxy, run the server with
    proxy headers trusted from that proxy only, or every client shares the proxy's bucket.
    Health, readiness and metrics paths are never limited, so probes and scrapes cannot be shed.
    """

    def __init__(
        self,
        app: ASGIApp,
        limiter: RateLimiter,
        *,
        exempt_paths: frozenset[str] = DEFAULT_EXEMPT_PATHS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app, self.limiter, self.exempt_paths, self.clock = app, limiter, exempt_paths, clock
        self._refused = RATE_LIMITED.labels(scope="source")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.limiter.unlimited or scope["path"] in self.exempt_paths:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.limiter.take(client[0] if client else "unknown", self.clock())
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        self._refused.inc()
        retry_after = retry_after_s(wait)
        response = problem_response(
            429,
            "Too many requests",
            f"too many requests from this address; retry in {retry_after}s",
            code="rate_limited",
            headers={"Retry-After": str(retry_after)},
        )
        await response(scope, receive, send)
