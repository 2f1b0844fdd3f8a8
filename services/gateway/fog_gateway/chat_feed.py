"""How this gateway's sync long-polls and live streams learn of new changes.

Two ways, one fast and one durable:

* :class:`TimelineChain` takes messaging's timeline pushes
  (:data:`fog_shared.commands.gateway.TIMELINE`), in position order. While it has every push
  since a live stream's last sync, the stream is *fed*: it sends each new entry as the push
  brings it, with no sync.
* :class:`ChatFeed` follows the messaging events. Every event names its audience, and their
  watchers sync again, except where the event's push has come already.

A wake-up carries nothing but "look again": a stream that is not fed reads from the messaging
service's sync, so a missed or spurious wake-up costs latency, never a message. A fed stream
sends only entries past its position, with the position of the newest push as its token, so a
client that resumes from any token gets no duplicate and misses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from prometheus_client import Counter, Gauge

from fog_shared.commands.gateway import TimelinePush
from fog_shared.envelope import NATS_MSG_ID
from fog_shared.subjects import service_events

log = logging.getLogger(__name__)
TIMELINE_HEAD = Gauge("fog_gateway_timeline_head", "Position up to which this gateway has every push (0: none)")
TIMELINE_PUSHES = Counter(
    "fog_gateway_timeline_pushes_total", "Timeline pushes: applied, waiting (a gap), stale", ["outcome"]
)
CHAIN_RESTARTS = Counter("fog_gateway_timeline_chain_restarts_total", "Timeline chains given up (gaps, overlaps)")
EVENT_WAKEUPS = Counter(
    "fog_gateway_chat_event_wakeups_total", "Messaging events: woke their audience, or skipped (pushed)", ["outcome"]
)
LIVE_FRAMES = Counter("fog_gateway_live_frames_total", "Frames sent on live streams, by source", ["source"])


@dataclass(eq=False, slots=True)
class Watcher:
    """A long-poll or a live stream of one member."""

    member_id: str
    woken: asyncio.Event = field(default_factory=asyncio.Event)
    #: something may have changed that only a sync shows
    stale: bool = True
    #: a live stream between syncs that the chain feeds: every entry up to ``since`` and up to
    #: the chain's head is sent or in ``queued``
    fed: bool = False
    #: a live stream whose sync is under way; it joins the chain after, from the pushes it kept
    joining: bool = False
    since: int = 0
    queued: list[str] = field(default_factory=list)

    def wake(self) -> None:
        self.stale = True
        self.woken.set()


class ChatWaiters:
    """The members with a long-poll or a live stream open on this gateway."""

    def __init__(self) -> None:
        self._watching: dict[str, set[Watcher]] = defaultdict(set)

    @contextlib.contextmanager
    def watch(self, member_id: str) -> Iterator[Watcher]:
        """A watcher woken by the next change for ``member_id``; watch *before* asking, so a change
        between the ask and the wait still wakes it."""
        watcher = Watcher(member_id)
        self._watching[member_id].add(watcher)
        try:
            yield watcher
        finally:
            watching = self._watching.get(member_id)
            if watching is not None:
                watching.discard(watcher)
                if not watching:
                    del self._watching[member_id]

    def of(self, member_id: str) -> set[Watcher]:
        return self._watching.get(member_id) or set()

    def all(self) -> Iterator[Watcher]:
        for watching in list(self._watching.values()):
            yield from list(watching)

    def wake(self, member_ids: list[str]) -> None:
        for member in member_ids:
            for watcher in self.of(member):
                watcher.wake()


@dataclass(frozen=True, slots=True)
class _Applied:
    """A push, with each entry's audience as a set, for the streams that join from it."""

    after: int
    through: int
    entries: list[tuple[int, frozenset[str], str]]


class TimelineChain:
    """The pushes this gateway has, in position order, and the live streams they feed.

    ``head`` is the newest position up to which the chain has every push. A push that comes
    ahead of a missing one waits, up to ``gap_wait_s``, for the missing one (pushes from different
    messaging replicas may cross). If it does not come, or more than ``max_waiting`` wait, the
    chain starts again: every watcher syncs, and the next push begins a new chain."""

    def __init__(
        self, waiters: ChatWaiters, *, kept: int = 256, max_waiting: int = 64, gap_wait_s: float = 0.2
    ) -> None:
        self.waiters, self.gap_wait_s, self.max_waiting = waiters, gap_wait_s, max_waiting
        self.head: int | None = None
        self._kept: deque[_Applied] = deque(maxlen=kept)
        self._waiting: dict[int, _Applied] = {}  # by ``after``
        self._gap_timer: asyncio.TimerHandle | None = None
        self._pushed_ids: OrderedDict[str, None] = OrderedDict()
        self._pushed_ids_max = 16_384
        #: pushes applied, pushes that came twice or too late, chain restarts (tests and metrics)
        self.applied = 0
        self.stale_pushes = 0
        self.restarts = 0

    def pushed(self, event_id: str) -> bool:
        """Whether a push has brought the change of this event."""
        return event_id in self._pushed_ids

    def on_push(self, push: TimelinePush) -> None:
        entries = [(entry.position, frozenset(entry.audience), entry.text) for entry in push.entries]
        applied = _Applied(push.after, push.through, entries)
        if self.head is not None and applied.through <= self.head:
            self.stale_pushes += 1
            TIMELINE_PUSHES.labels("stale").inc()
            return
        for event_id in push.event_ids:
            self._pushed_ids[event_id] = None
        while len(self._pushed_ids) > self._pushed_ids_max:
            self._pushed_ids.popitem(last=False)
        self._wake_unfed(applied)
        if self.head is None or applied.after == self.head:
            self._apply(applied)
            while self.head in self._waiting:
                self._apply(self._waiting.pop(self.head))
            if not self._waiting and self._gap_timer is not None:
                self._gap_timer.cancel()
                self._gap_timer = None
        elif applied.after < self.head:  # overlaps what the chain has: never from a sound publisher
            self.restart()
        else:
            TIMELINE_PUSHES.labels("waiting").inc()
            self._waiting[applied.after] = applied
            if len(self._waiting) > self.max_waiting:
                self.restart()
            elif self._gap_timer is None:
                self._gap_timer = asyncio.get_running_loop().call_later(self.gap_wait_s, self._gap_expired)

    def join(self, watcher: Watcher) -> None:
        """After its sync up to ``watcher.since``: fed from here on, with the kept pushes' entries
        after it queued, when the chain reaches back that far; otherwise it must sync again."""
        watcher.joining = False
        if self.head is None:
            return  # nothing to be fed by yet; the next push wakes it
        if watcher.since < self.head:
            if not self._kept or self._kept[0].after > watcher.since:
                watcher.wake()
                return
            for push in self._kept:
                if push.through > watcher.since:
                    self._queue(watcher, push)
        watcher.fed = True

    def flush(self, watcher: Watcher) -> tuple[list[str], int]:
        """A fed watcher's queued entries, taken, and the position up to which it now has all."""
        queued, watcher.queued = watcher.queued, []
        watcher.since = max(watcher.since, self.head or 0)
        return queued, watcher.since

    def restart(self) -> None:
        """Give up the chain: every watcher syncs from what it has."""
        self.restarts += 1
        CHAIN_RESTARTS.inc()
        TIMELINE_HEAD.set(0)
        log.info("timeline chain restarted", extra={"head": self.head, "waiting": len(self._waiting)})
        for watcher in self.waiters.all():
            if watcher.fed:
                watcher.since = max(watcher.since, self.head or 0)
                watcher.fed = False
            watcher.wake()
        self.head = None
        self._kept.clear()
        self._waiting.clear()
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _gap_expired(self) -> None:
        self._gap_timer = None
        if self._waiting:
            self.restart()

    def _wake_unfed(self, push: _Applied) -> None:
        """Long-polls, and streams neither fed nor about to join, sync now."""
        for _, audience, _ in push.entries:
            for member in audience:
                for watcher in self.waiters.of(member):
                    if not watcher.fed and not watcher.joining:
                        watcher.wake()

    def _apply(self, push: _Applied) -> None:
        self.applied += 1
        TIMELINE_PUSHES.labels("applied").inc()
        self.head = push.through
        TIMELINE_HEAD.set(push.through)
        self._kept.append(push)
        for position, audience, text in push.entries:
            for member in audience:
                for watcher in self.waiters.of(member):
                    if watcher.fed and position > watcher.since:
                        watcher.queued.append(text)
                        watcher.woken.set()

    def _queue(self, watcher: Watcher, push: _Applied) -> None:
        for position, audience, text in push.entries:
            if position > watcher.since and watcher.member_id in audience:
                watcher.queued.append(text)
                watcher.woken.set()


class ChatFeed:
    """The messaging events: each wakes its audience, unless its push came first."""

    def __init__(self, waiters: ChatWaiters, chain: TimelineChain) -> None:
        self.waiters, self.chain = waiters, chain
        #: events whose push had served them already (for tests and metrics)
        self.skipped = 0

    async def start(self, js: JetStreamContext) -> None:
        await js.subscribe(
            service_events("messaging"), cb=self._on_event, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )

    async def _on_event(self, msg: Msg) -> None:
        event_id = (msg.headers or {}).get(NATS_MSG_ID)
        if event_id is not None and self.chain.pushed(event_id):
            self.skipped += 1
            EVENT_WAKEUPS.labels("skipped").inc()
            return
        try:
            body = json.loads(msg.data)
            # group.created names its members; every other event its audience
            audience = body.get("audience") or body.get("member_ids") or []
        except (ValueError, AttributeError):
            log.warning("messaging event not understood", extra={"subject": msg.subject})
            return
        EVENT_WAKEUPS.labels("woke").inc()
        self.waiters.wake([member for member in audience if isinstance(member, str)])
