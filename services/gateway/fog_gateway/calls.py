"""Asking a service over NATS from a route: its refusals become problem+json responses."""

from __future__ import annotations

from typing import Any

from faststream.nats import NatsBroker
from pydantic import BaseModel

from fog_gateway.problems import Problem, status_for
from fog_shared.bus.rpc import request
from fog_shared.commands.common import ErrorReply, refusal_in


def problem_for(refusal: ErrorReply) -> Problem:
    """A service's refusal as the problem+json answer it becomes."""
    headers = {"Retry-After": str(refusal.retry_after_s)} if refusal.retry_after_s else None
    title = refusal.code.replace("_", " ").capitalize()
    return Problem(status_for(refusal.code), title, refusal.detail, code=refusal.code, headers=headers)


class ServiceCalls:
    def __init__(self, broker: NatsBroker, timeout_s: float) -> None:
        self.broker, self.timeout_s = broker, timeout_s

    async def ask(
        self, subject: str, body: BaseModel | dict[str, Any], *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The reply, or :class:`Problem` when the service refused (``ServiceUnavailable`` → 503)."""
        reply = await request(self.broker, subject, body, timeout=timeout_s or self.timeout_s)
        refusal = refusal_in(reply)
        if refusal is not None:
            raise problem_for(refusal)
        return reply
