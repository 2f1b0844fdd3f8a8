"""Every JetStream stream and durable consumer Fog uses, declared in one place.

Services do not create streams or consumers: the provisioning step (:mod:`fog_shared.bus.provision`)
does, from these declarations, so a service's NATS user can be denied stream administration.
"""

from __future__ import annotations

from dataclasses import dataclass

from fog_shared.subjects import DEAD_LETTER_PREFIX, dead_letter_subject, service_events

DAY_S = 86_400.0


@dataclass(frozen=True, slots=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    #: retention by age and by size; whichever is hit first drops the oldest events
    max_age_s: float = 7 * DAY_S
    max_bytes: int = 1 << 30
    #: JetStream drops a re-published ``Nats-Msg-Id`` inside this window
    duplicate_window_s: float = 300.0
    #: accept atomic batches: the outbox relay stores a whole batch with one disk sync
    allow_atomic: bool = True


@dataclass(frozen=True, slots=True)
class ConsumerSpec:
    """A durable pull consumer: one per (consuming service, purpose), shared by its replicas."""

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    #: deliveries before a failing event goes to dead-letter (enforced by the consumer engine)
    max_deliver: int = 5
    #: delay before redelivery N (1-based, the last one repeats)
    backoff_s: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)
    ack_wait_s: float = 30.0
    max_ack_pending: int = 10_000

    @property
    def service(self) -> str:
        """The consuming service: durables are named ``<service>__<purpose>``."""
        return self.durable.split("__", 1)[0]

    @property
    def dead_letter_subject(self) -> str:
        return dead_letter_subject(self.durable)

    def backoff_for(self, delivery: int) -> float:
        index = min(max(delivery, 1), len(self.backoff_s)) - 1
        return self.backoff_s[index]


def event_stream_name(service: str) -> str:
    return f"EVT_{service.upper()}"


EVENT_STREAMS: tuple[StreamSpec, ...] = tuple(
    StreamSpec(name=event_stream_name(svc), subjects=(service_events(svc),))
    for svc in ("auth", "registry", "scheduler", "messaging")
)

DEAD_LETTER_STREAM = StreamSpec(name="DLQ", subjects=(f"{DEAD_LETTER_PREFIX}.>",), max_age_s=30 * DAY_S)

STREAMS: tuple[StreamSpec, ...] = (*EVENT_STREAMS, DEAD_LETTER_STREAM)

#: Durable consumers by (consuming service, purpose). Grows as services consume each other's events.
CONSUMERS: tuple[ConsumerSpec, ...] = (
    ConsumerSpec(
        stream=event_stream_name("auth"),
        durable="messaging__users",
        filter_subjects=("fog.evt.auth.user.>",),
    ),
    ConsumerSpec(
        stream=event_stream_name("auth"),
        durable="messaging__node_owners",
        filter_subjects=("fog.evt.auth.node_credential.>",),
    ),
    ConsumerSpec(
        stream=event_stream_name("registry"),
        durable="scheduler__nodes",
        filter_subjects=("fog.evt.registry.node.>",),
    ),
    ConsumerSpec(
        stream=event_stream_name("scheduler"),
        durable="registry__job_outcomes",
        filter_subjects=("fog.evt.scheduler.job.completed.v1", "fog.evt.scheduler.job.failed.v1"),
    ),
)


#: JetStream object stores: BitChat's file contents (the messaging service owns them)
FILES_BUCKET = "FOG_FILES"
OBJECT_STORES: tuple[str, ...] = (FILES_BUCKET,)


@dataclass(frozen=True, slots=True)
class Topology:
    """The streams, consumers and object stores to provision; tests build their own, with fresh names."""

    streams: tuple[StreamSpec, ...] = STREAMS
    consumers: tuple[ConsumerSpec, ...] = CONSUMERS
    replicas: int = 1
    object_stores: tuple[str, ...] = OBJECT_STORES

    def stream(self, name: str) -> StreamSpec:
        for spec in self.streams:
            if spec.name == name:
                return spec
        raise KeyError(f"no stream {name!r} in topology")

    def consumer(self, durable: str) -> ConsumerSpec:
        for spec in self.consumers:
            if spec.durable == durable:
                return spec
        raise KeyError(f"no consumer {durable!r} in topology")
