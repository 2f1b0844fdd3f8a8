"""Request/reply over core NATS with a deadline, and a clear error when nobody answers."""

from __future__ import annotations

import json
from typing import Any

from faststream.nats import NatsBroker
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from pydantic import BaseModel

from fog_shared.telemetry.context import correlation_id

H_CORRELATION = "fog-correlation-id"


class ServiceUnavailable(RuntimeError):
    """The service behind ``subject`` did not answer: none running, or not in time."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject}: {reason}")
        self.subject = subject
        self.reason = reason


async def request(
    broker: NatsBroker, subject: str, body: BaseModel | dict[str, Any], *, timeout: float
) -> dict[str, Any]:
    """Send a request and return the decoded JSON reply; raises :class:`ServiceUnavailable`."""
    headers = {H_CORRELATION: cid} if (cid := correlation_id()) else None
    payload = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    try:
        reply = await broker.request(payload, subject, headers=headers, timeout=timeout)
    except NoRespondersError:
        raise ServiceUnavailable(subject, "no service is answering") from None
    except (TimeoutError, NatsTimeoutError):
        raise ServiceUnavailable(subject, f"no answer within {timeout:g}s") from None
    decoded: dict[str, Any] = json.loads(reply.body or b"{}")
    return decoded
