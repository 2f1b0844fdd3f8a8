"""The FastStream broker every service uses for its request/reply handlers.

Defaults that FastStream gets wrong for us are set here once (DESIGN §8): NACK on error instead
of terminating a message after one failed run, and OTel + Prometheus middlewares so request
handlers join the caller's trace and are counted (labelled by subject, which holds no ids).
"""

from __future__ import annotations

from faststream import AckPolicy
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
from prometheus_client import REGISTRY, CollectorRegistry


def make_broker(nats_url: str, service: str, *, registry: CollectorRegistry = REGISTRY) -> NatsBroker:
    return NatsBroker(
        nats_url,
        name=f"fog-{service}",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        middlewares=(
            NatsTelemetryMiddleware(),
            NatsPrometheusMiddleware(registry=registry, app_name=f"fog-{service}", metrics_prefix="fog"),
        ),
        graceful_timeout=10.0,
        logger=None,
    )


def queue_group(service: str) -> str:
    """Replicas of one service share request load through one queue group."""
    return f"fog-{service}"
