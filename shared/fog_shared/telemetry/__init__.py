"""Tracing, metrics and logs: one trace across HTTP → NATS → handler → Postgres."""

from fog_shared.telemetry.context import correlation_id, use_correlation_id
from fog_shared.telemetry.logs import configure_logging
from fog_shared.telemetry.tracing import configure_tracing, current_traceparent, extract_context, tracer

__all__ = [
    "configure_logging",
    "configure_tracing",
    "correlation_id",
    "current_traceparent",
    "extract_context",
    "tracer",
    "use_correlation_id",
]
