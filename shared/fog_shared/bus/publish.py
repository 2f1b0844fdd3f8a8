"""Publishing to JetStream: always into a named stream, always waiting for the ack.

Services publish their events through the outbox (:mod:`fog_shared.pg.outbox`); this direct path
is for platform plumbing (dead-letter, re-drive, tests) where there is no state to commit with.
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.api import PubAck

from fog_shared.envelope import NATS_MSG_ID, Envelope
from fog_shared.events import Event


async def publish_event(
    js: JetStreamContext, stream: str, event: Event, envelope: Envelope, *, timeout: float = 5.0
) -> PubAck:
    return await publish_raw(js, stream, event.TYPE.subject, event.to_json(), envelope.to_headers(), timeout=timeout)


async def publish_raw(
    js: JetStreamContext,
    stream: str,
    subject: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float = 5.0,
) -> PubAck:
    """Publish and wait for the stream's ack; ``headers`` must carry ``Nats-Msg-Id``."""
    if not headers.get(NATS_MSG_ID):
        raise ValueError("refusing to publish without Nats-Msg-Id: duplicates could not be dropped")
    return await js.publish(subject, body, timeout=timeout, stream=stream, headers=headers)
