"""The timeline chain: pushes applied in position order feed the live streams that have joined
it; a gap waits for the missing push, then gives the chain up and sends everyone to sync."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fog_gateway.chat_feed import ChatWaiters, TimelineChain, Watcher
from fog_shared.commands.gateway import PushedEntry, TimelinePush
from fog_shared.testing.waiting import wait_until


def push(after: int, through: int, *entries: tuple[int, list[str]], event_ids: list[str] | None = None) -> TimelinePush:
    return TimelinePush(
        after=after,
        through=through,
        entries=[PushedEntry(position=p, audience=audience, text=f'{{"position":{p}}}') for p, audience in entries],
        event_ids=event_ids or [],
    )


@contextlib.contextmanager
def joined(waiters: ChatWaiters, chain: TimelineChain, member: str, since: int) -> Iterator[Watcher]:
    """A live stream of ``member`` whose sync reached ``since``, joined to the chain."""
    with waiters.watch(member) as watcher:
        watcher.since, watcher.stale, watcher.joining = since, False, True
        chain.join(watcher)
        yield watcher


async def test_a_joined_stream_is_fed_its_own_entries_in_order_and_its_token_follows_the_head() -> None:
    waiters = ChatWaiters()
    chain = TimelineChain(waiters)
    chain.on_push(push(0, 1, (1, ["ann", "bob"])))
    with joined(waiters, chain, "ann", 1) as ann:
        assert ann.fed
        assert not ann.queued
        chain.on_push(push(1, 2, (2, ["bob"])))  # not hers
        chain.on_push(push(2, 4, (3, ["ann", "bob"]), (4, ["ann"])))
        assert ann.woken.is_set()
        assert not ann.stale
        assert chain.flush(ann) == (['{"position":3}', '{"position":4}'], 4)
        chain.on_push(push(4, 5, (5, ["bob"])))
        assert chain.flush(ann) == ([], 5), "nothing to send, and everything up to the head is hers"


async def test_a_push_ahead_of_a_missing_one_waits_for_it_and_both_apply_in_order() -> None:
    waiters = ChatWaiters()
    chain = TimelineChain(waiters, gap_wait_s=60)
    chain.on_push(push(0, 1))
    with joined(waiters, chain, "ann", 1) as ann:
        chain.on_push(push(2, 3, (3, ["ann"])))
        assert (chain.head, ann.queued) == (1, []), "position 2 is not here yet"
        chain.on_push(push(1, 2, (2, ["ann"])))
        assert chain.head == 3
        assert chain.flush(ann) == (['{"position":2}', '{"position":3}'], 3)
    assert chain.restarts == 0


async def test_a_gap_that_stays_gives_the_chain_up_and_every_stream_syncs_from_what_it_has() -> None:
    waiters = ChatWaiters()
    chain = TimelineChain(waiters, gap_wait_s=0)
    chain.on_push(push(0, 4))
    with joined(waiters, chain, "ann", 2) as ann, waiters.watch("bob") as long_poll:
        long_poll.stale = False
        chain.on_push(push(5, 6, (6, ["ann"])))  # position 5 never comes

        async def restarted() -> bool:
            return chain.restarts == 1

        await wait_until(restarted, timeout=5, what="the chain given up")
        assert (ann.stale, ann.fed, ann.since) == (True, False, 4), "it had everything up to the chain's head"
        assert long_poll.stale, "everyone syncs"
        assert chain.head is None
        chain.on_push(push(6, 7))
        assert chain.head == 7, "the next push starts a new chain"


async def test_a_push_the_chain_has_already_changes_nothing() -> None:
    waiters = ChatWaiters()
    chain = TimelineChain(waiters)
    chain.on_push(push(0, 2, (1, ["ann"]), (2, ["ann"])))
    with joined(waiters, chain, "ann", 2) as ann:
        chain.on_push(push(1, 2, (2, ["ann"])))
        assert (chain.stale_pushes, ann.queued, chain.head) == (1, [], 2)


async def test_a_stream_whose_sync_the_pushes_overtook_joins_from_the_kept_pushes() -> None:
    waiters = ChatWaiters()
    chain = TimelineChain(waiters, kept=2)
    for position in range(1, 5):
        chain.on_push(push(position - 1, position, (position, ["ann"])))
    with joined(waiters, chain, "ann", 2) as ann:
        assert ann.fed
        assert chain.flush(ann) == (['{"position":3}', '{"position":4}'], 4)
    with joined(waiters, chain, "ann", 1) as behind:
        assert (behind.fed, behind.stale) == (False, True), "the kept pushes start after it: it syncs again"


async def test_long_polls_and_streams_not_on_the_chain_are_woken_to_sync_and_pushed_events_are_known() -> None:
    waiters = ChatWaiters()
    chain = TimelineChain(waiters)
    with waiters.watch("ann") as long_poll, waiters.watch("bob") as other:
        long_poll.stale = other.stale = False
        chain.on_push(push(0, 1, (1, ["ann"]), event_ids=["e-1"]))
        assert long_poll.stale
        assert long_poll.woken.is_set()
        assert not other.stale
    assert chain.pushed("e-1")
    assert not chain.pushed("e-2")


async def test_a_stream_syncing_is_not_woken_by_pushes_it_will_join_from() -> None:
    waiters = ChatWaiters()
    chain = TimelineChain(waiters)
    chain.on_push(push(0, 1))
    with waiters.watch("ann") as ann:
        ann.stale, ann.joining, ann.since = False, True, 1
        chain.on_push(push(1, 2, (2, ["ann"])))
        assert not ann.stale
        chain.join(ann)
        assert ann.fed
        assert chain.flush(ann) == (['{"position":2}'], 2)
