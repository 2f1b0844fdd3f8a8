"""The FastStream broker every service uses for its request/reply handlers.

Defaults that FastStream gets wrong for us are set here once (DESIGN §8): NACK on error instead
of terminating a message after one failed run, and OTel + Prometheus middlewares so request
handlers join the caller's trace and are counted (labelled by subject, which holds no ids).
A third middleware runs each handler in the caller's correlation id, so the events it records
and the requests it makes in turn carry the id of the gateway request that started it all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy, BaseMiddleware
from faststream.message import StreamMessage
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from opentelemetry import trace
from prometheus_client import REGISTRY, CollectorRegistry

from fog_shared.bus.rpc import H_CORRELATION
from fog_shared.subjects import inbox_prefix
from fog_shared.telemetry.context import use_correlation_id


class CorrelationMiddleware(BaseMiddleware):
    """Runs the handler inside the correlation id the request carries (header ``fog-correlation-id``).

    A message without one is handled with none, explicitly: the subscriber's task must not lend
    one message's id to the next.
    """

    async def consume_scope(self, call_next: Callable[..., Awaitable[Any]], msg: StreamMessage[Any]) -> Any:
        value = msg.headers.get(H_CORRELATION)
        cid = value if isinstance(value, str) and value else None
        if cid is not None:
            # Inside the consumer span of NatsTelemetryMiddleware (listed before this one).
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute("fog.correlation_id", cid)
        with use_correlation_id(cid):
            return await call_next(msg)


def make_broker(nats_url: str, service: str, *, registry: CollectorRegistry = REGISTRY) -> NatsBroker:
    return NatsBroker(
        nats_url,
        name=f"fog-{service}",
        inbox_prefix=inbox_prefix(service),
        ack_policy=AckPolicy.NACK_ON_ERROR,
        middlewares=(
            NatsTelemetryMiddleware(),
            NatsPrometheusMiddleware(registry=registry, app_name=f"fog-{service}", metrics_prefix="fog"),
            CorrelationMiddleware,
        ),
        graceful_timeout=10.0,
        logger=None,
    )


def queue_group(service: str) -> str:
    """Replicas of one service share request load through one queue group."""
    return f"fog-{service}"
