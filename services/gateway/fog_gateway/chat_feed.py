"""Wake-ups for ``GET /v1/sync`` long-polls: every messaging event names its audience, and the
long-polls of those members on this gateway ask again.

A wake-up carries nothing but "look again": the sync itself always reads from the messaging
service, so a missed or spurious wake-up costs latency, never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import Iterator

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from fog_shared.subjects import service_events

log = logging.getLogger(__name__)


class ChatWaiters:
    """The members with a long-poll open on this gateway, each with the events that wake them."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, member_id: str) -> Iterator[asyncio.Event]:
        """An event set by the next change for ``member_id``; watch *before* asking, so a change
        between the ask and the wait still wakes it."""
        woken = asyncio.Event()
        self._waiting[member_id].add(woken)
        try:
            yield woken
        finally:
            waiting = self._waiting.get(member_id)
            if waiting is not None:
                waiting.discard(woken)
                if not waiting:
                    del self._waiting[member_id]

    def wake(self, member_ids: list[str]) -> None:
        for member in member_ids:
            for woken in self._waiting.get(member, ()):
                woken.set()


class ChatFeed:
    def __init__(self, waiters: ChatWaiters) -> None:
        self.waiters = waiters

    async def start(self, js: JetStreamContext) -> None:
        await js.subscribe(
            service_events("messaging"), cb=self._on_event, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )

    async def _on_event(self, msg: Msg) -> None:
        try:
            body = json.loads(msg.data)
            # group.created names its members; every other event its audience
            audience = body.get("audience") or body.get("member_ids") or []
        except (ValueError, AttributeError):
            log.warning("messaging event not understood", extra={"subject": msg.subject})
            return
        self.waiters.wake([member for member in audience if isinstance(member, str)])
