"""Core NATS pushes on the hot paths, sent and received on the raw client instead of through FastStream.

A push (new assignments to the gateways) is at most once, and the durable event it anticipates covers
a lost one. Through FastStream, each side of a push cost ~0.3 ms more than on the raw client here
(its telemetry, metrics and correlation middlewares, and its decoding: bench figures in
docs/performance.md), and a push is most of a new job's way from its placement to its node.

What those middlewares gave is kept: the sender's trace context and correlation id go in the headers,
and the receiver handles each push in a consumer span that continues the trace, with the correlation id
in its logs. A push that is not valid JSON of its model is logged and dropped, never raised into the
client (nats-py would only hand the exception to its error callback).

A push is checked against its model with the fields the receiver does not know left out (a newer
sender's, during a rollout), and handed over with the JSON as it was sent too: what the receiver
relays on (an assignment, to its node) keeps every field the sender wrote.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from opentelemetry import propagate, trace
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from fog_shared.bus.rpc import H_CORRELATION
from fog_shared.telemetry.context import correlation_id, use_correlation_id

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)

PUSHES = Counter("fog_pushes_total", "Core NATS pushes, by subject and what became of them", ["subject", "outcome"])


def push_headers() -> dict[str, str]:
    """The current trace context (W3C ``traceparent``) and correlation id, as push headers."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    if cid := correlation_id():
        headers[H_CORRELATION] = cid
    return headers


async def push(nc: NatsClient, subject: str, body: bytes) -> None:
    """Publish ``body`` on ``subject`` (core NATS: at most once, nothing waits for it)."""
    await nc.publish(subject, body, headers=push_headers() or None)
    PUSHES.labels(subject, "sent").inc()


#: what handles a push: the push as its model reads it, and the JSON object as it was sent
PushHandler = Callable[[M, dict[str, Any]], Awaitable[None]]


def receiver(subject: str, model: type[M], handle: PushHandler[M]) -> Callable[[Msg], Awaitable[None]]:
    """A subscription callback: each push decoded as ``model`` and handed to ``handle`` in the sender's trace."""
    tracer = trace.get_tracer(__name__)

    async def received(msg: Msg) -> None:
        headers = msg.headers or {}
        context = propagate.extract(headers)
        span = tracer.start_as_current_span(f"{subject} receive", context=context, kind=trace.SpanKind.CONSUMER)
        with span, use_correlation_id(headers.get(H_CORRELATION) or None):
            try:
                sent = json.loads(msg.data)
                pushed = model.model_validate(sent, extra="ignore")
            except (ValueError, ValidationError) as exc:  # not JSON (ValueError), or not the model
                PUSHES.labels(subject, "invalid").inc()
                log.warning("a push on %s is not a valid %s; dropped: %s", subject, model.__name__, exc)
                return
            try:
                await handle(pushed, sent)
            except Exception:
                PUSHES.labels(subject, "failed").inc()
                log.exception("handling a push on %s failed", subject)
                return
            PUSHES.labels(subject, "handled").inc()

    return received


async def subscribe(nc: NatsClient, subject: str, model: type[M], handle: PushHandler[M]) -> Subscription:
    """Receive every push on ``subject`` (no queue group: each subscriber hears each push)."""
    return await nc.subscribe(subject, cb=receiver(subject, model, handle))
