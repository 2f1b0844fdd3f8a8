"""Create or update every stream and durable consumer of a :class:`Topology` (idempotent).

Run by ``fogctl dev up``, by the test harness, and on Kubernetes by a provisioning Job.
"""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BucketNotFoundError, NotFoundError

from fog_shared.bus.topology import ConsumerSpec, StreamSpec, Topology

log = logging.getLogger(__name__)


def stream_config(spec: StreamSpec, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        duplicate_window=spec.duplicate_window_s,
        num_replicas=replicas,
        allow_atomic=spec.allow_atomic,
    )


def consumer_config(spec: ConsumerSpec) -> ConsumerConfig:
    # max_deliver stays unlimited on the server: the consumer engine counts deliveries and
    # dead-letters with the error itself, so an event is never silently dropped by the server.
    return ConsumerConfig(
        durable_name=spec.durable,
        filter_subjects=list(spec.filter_subjects),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=spec.ack_wait_s,
        max_ack_pending=spec.max_ack_pending,
        max_deliver=-1,
    )


async def provision(js: JetStreamContext, topology: Topology) -> None:
    for stream in topology.streams:
        await ensure_stream(js, stream, topology.replicas)
    for consumer in topology.consumers:
        await ensure_consumer(js, consumer)
    for bucket in topology.object_stores:
        await ensure_object_store(js, bucket, topology.replicas)


async def ensure_object_store(js: JetStreamContext, bucket: str, replicas: int = 1) -> None:
    try:
        await js.object_store(bucket)
    except (BucketNotFoundError, NotFoundError):
        await js.create_object_store(bucket, ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas))
        log.info("object store created", extra={"bucket": bucket})


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> None:
    config = stream_config(spec, replicas)
    try:
        await js.stream_info(spec.name)
    except NotFoundError:
        await js.add_stream(config)
        log.info("stream created", extra={"stream": spec.name})
        return
    await js.update_stream(config)


async def ensure_consumer(js: JetStreamContext, spec: ConsumerSpec) -> None:
    # add_consumer with a durable name creates it, or updates the editable fields in place.
    await js.add_consumer(spec.stream, consumer_config(spec))
