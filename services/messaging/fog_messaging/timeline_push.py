"""The fast path of new timeline entries: straight to the gateways once their transaction commits.

A use case run inside :meth:`TimelinePusher.pushing` has the timeline positions it takes and the
events it records noted. Once it returns, with its transaction committed, the entries are read
back in one statement and published on :data:`fog_shared.commands.gateway.TIMELINE` (core NATS,
at most once). Without it, a gateway's live streams learn of a new message from its event, after
the outbox relay and the JetStream store, and then each asks messaging for a sync. The events and
the sync stay the durable path: a push that fails is logged and dropped, and never fails the
change that made it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from faststream.nats import NatsBroker
from prometheus_client import Counter

from fog_messaging import store
from fog_messaging.views import sync_entry
from fog_shared.commands import messaging as contract
from fog_shared.commands.gateway import TIMELINE, TIMELINE_BUDGET_BYTES
from fog_shared.pg import outbox

log = logging.getLogger(__name__)
PUSHES = Counter(
    "fog_messaging_timeline_pushes_total", "Changes whose timeline entries were pushed, or could not be", ["outcome"]
)


def push_bodies(
    after: int, through: int, entries: list[dict[str, Any]], event_ids: list[str], budget: int = TIMELINE_BUDGET_BYTES
) -> Iterator[bytes]:
    """:class:`~fog_shared.commands.gateway.TimelinePush` JSON for positions ``after`` + 1 up to
    ``through``, split by position until each part fits ``budget`` (one entry goes alone, whatever
    its size). The event ids ride with the last part: a gateway skips their wake-ups only once it
    has every part."""
    body = json.dumps(
        {"after": after, "through": through, "entries": entries, "event_ids": event_ids}, separators=(",", ":")
    ).encode()
    if len(body) <= budget or len(entries) <= 1:
        yield body
        return
    half = len(entries) // 2
    middle = entries[half - 1]["position"]  # the first part ends with its last entry
    yield from push_bodies(after, middle, entries[:half], [], budget)
    yield from push_bodies(middle, through, entries[half:], event_ids, budget)


@dataclass(slots=True)
class Pushing:
    """What a block run in :meth:`TimelinePusher.pushing` may say of the entries it adds."""

    #: the new messages, when the block added one ``message`` entry for each, in order: their
    #: entries are then made from them rather than read back
    messages: list[contract.MessageView] = field(default_factory=list)


class TimelinePusher:
    def __init__(self, broker: NatsBroker, *, enabled: bool = True) -> None:
        self.broker, self.enabled = broker, enabled

    @contextlib.asynccontextmanager
    async def pushing(self, conn: asyncpg.Connection) -> AsyncIterator[Pushing]:
        """Push the timeline entries the block adds, once it has returned: its transaction must
        have committed by then. A block that raises pushes nothing."""
        said = Pushing()
        with store.recording_appends() as appended, outbox.recording_ids() as event_ids:
            yield said
        if appended and self.enabled:
            await self.push(conn, appended, event_ids, said.messages)

    async def push(
        self,
        conn: asyncpg.Connection,
        appended: Sequence[store.Appended],
        event_ids: list[str],
        messages: Sequence[contract.MessageView] = (),
    ) -> None:
        positions = [one.position for one in appended]
        after, through = positions[0] - 1, positions[-1]
        if positions != list(range(after + 1, through + 1)):  # one transaction holds the head: never
            PUSHES.labels("unpushed").inc()
            log.warning("timeline positions of one change not consecutive; not pushed", extra={"after": after})
            return
        try:
            entries: list[dict[str, Any]] | None
            if messages and len(messages) == len(appended):
                entries = _message_entries(appended, messages)
            else:
                entries = await self._entries(conn, appended)
            if entries is None:
                PUSHES.labels("unpushed").inc()
                return
            for body in push_bodies(after, through, entries, event_ids):
                await self.broker.publish(body, subject=TIMELINE)
            PUSHES.labels("pushed").inc()
        except Exception:  # the events wake the gateways' streams, a little later
            PUSHES.labels("unpushed").inc()
            log.warning("timeline entries not pushed to the gateways", exc_info=True)

    async def _entries(
        self, conn: asyncpg.Connection, appended: Sequence[store.Appended]
    ) -> list[dict[str, Any]] | None:
        """Each entry as sync gives it, read from the first of its audience's timelines; None when
        one is missing (a push must hold every entry of its positions, or none)."""
        seen = [one for one in appended if one.audience]
        rows = await store.entries_at(conn, [(one.audience[0], one.position) for one in seen]) if seen else []
        if len(rows) != len(seen):
            log.warning("timeline entries not found right after their commit; not pushed")
            return None
        return [
            {"position": one.position, "audience": list(one.audience), "text": sync_entry(row).model_dump_json()}
            for one, row in zip(seen, rows, strict=True)
        ]


def _message_entries(
    appended: Sequence[store.Appended], messages: Sequence[contract.MessageView]
) -> list[dict[str, Any]]:
    """New messages' entries, as sync gives them: a message's entry is stamped when it is sent."""
    entries = []
    for one, message in zip(appended, messages, strict=True):
        entry = contract.SyncEntry(
            position=one.position, conversation_id=message.conversation_id, kind="message", message=message,
            at=message.sent_at,
        )  # fmt: skip
        entries.append({"position": one.position, "audience": list(one.audience), "text": entry.model_dump_json()})
    return entries
