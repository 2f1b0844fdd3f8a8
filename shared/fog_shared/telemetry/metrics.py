"""Prometheus metrics of the event path, labelled by stream/consumer, never by id."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: by ``type``, the events' CloudEvents type (``scheduler.job.completed.v1``): what each service did, at a glance
OUTBOX_PUBLISHED = Counter("fog_outbox_published_total", "Outbox events published and acked", ["service", "type"])
OUTBOX_PUBLISH_ERRORS = Counter("fog_outbox_publish_errors_total", "Outbox publish attempts that failed", ["service"])
OUTBOX_PENDING = Gauge("fog_outbox_pending", "Unpublished outbox rows seen by the relay", ["service"])
EVENTS_HANDLED = Counter("fog_events_handled_total", "Events consumed, by outcome", ["consumer", "outcome"])
EVENT_HANDLE_SECONDS = Histogram("fog_event_handle_seconds", "Time to handle one batch of events", ["consumer"])
DEAD_LETTERED = Counter("fog_events_dead_lettered_total", "Events sent to dead-letter", ["consumer", "reason"])
#: 1 for each background task (a consumer, the outbox relay, a service's loop) that ended while its service runs
BACKGROUND_TASK_DEAD = Gauge(
    "fog_background_task_dead", "Background tasks that ended before their service stopped", ["service", "task"]
)
