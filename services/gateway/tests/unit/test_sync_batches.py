"""SyncBatcher: syncs asked while others are answered go to messaging together, and each caller
gets exactly its own part (or its own refusal). Messaging is a stand-in that answers from a
fixed timeline; the real round trip is covered by the gateway's chat integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fog_gateway.problems import Problem
from fog_gateway.sync_batches import SyncBatcher, Synced
from fog_shared.bus.rpc import ServiceUnavailable
from fog_shared.commands import messaging as contract
from fog_shared.commands.auth import Principal
from fog_shared.commands.common import error
from fog_shared.testing.waiting import wait_until

#: everyone's timeline: one group's messages at positions 1..5
TIMELINE = {
    p: {"position": p, "conversation_id": "c", "kind": "message", "message": {"text": f"m{p}"}} for p in range(1, 6)
}


def query(user: str, since: int) -> contract.SyncQuery:
    return contract.SyncQuery(by=Principal(kind="user", user_id=user, roles=["user"]), since=f"s{since}")


class StandInMessaging:
    """Answers sync_many from :data:`TIMELINE`; refuses user ``intruder``; holds requests while
    ``gate`` is shut; ``broken`` makes it answer one part short, ``down`` not at all."""

    def __init__(self) -> None:
        self.requests: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.broken = self.down = False

    async def ask(self, subject: str, body: contract.SyncManyQuery, **_: Any) -> dict[str, Any]:
        assert subject == contract.SYNC_MANY
        self.requests.append([q.by.user_id or "" for q in body.queries])
        await self.gate.wait()
        if self.down:
            raise ServiceUnavailable(subject, "no answer in time")
        replies: list[dict[str, Any]] = []
        for q in body.queries:
            if q.by.user_id == "intruder":
                replies.append(error("forbidden", "not yours"))
                continue
            since = int((q.since or "s0")[1:])
            positions = [p for p in TIMELINE if p > since]
            replies.append({"positions": positions, "next": "s5", "limited": False, "gap": None, "more": False})
        if self.broken:
            replies.pop()
        wanted = {p for r in replies for p in r.get("positions", [])}
        return {"entries": [TIMELINE[p] for p in sorted(wanted)], "replies": replies}


@contextlib.asynccontextmanager
async def batching(messaging: StandInMessaging, in_flight: int = 1) -> AsyncIterator[SyncBatcher]:
    syncs = SyncBatcher(messaging, in_flight=in_flight)  # type: ignore[arg-type]
    runner = asyncio.ensure_future(syncs.run())
    try:
        yield syncs
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner


async def _asked(messaging: StandInMessaging, count: int) -> bool:
    return len(messaging.requests) >= count


async def test_syncs_asked_while_one_is_answered_go_together_each_with_its_own_part() -> None:
    messaging = StandInMessaging()
    async with batching(messaging) as syncs:
        messaging.gate.clear()
        first = asyncio.ensure_future(syncs.sync(query("ann", 4)))
        await wait_until(lambda: _asked(messaging, 1), what="the first sync_many")
        later = [asyncio.ensure_future(syncs.sync(query(user, since))) for user, since in (("bob", 2), ("cy", 5))]
        await asyncio.sleep(0)  # let them queue (no timing: the gate holds the first request)
        messaging.gate.set()
        ann, (bob, cy) = await first, await asyncio.gather(*later)
    assert messaging.requests == [["ann"], ["bob", "cy"]]
    assert (syncs.requests, syncs.syncs) == (2, 3)
    assert [e["position"] for e in ann.entries] == [5]
    assert [e["position"] for e in bob.entries] == [3, 4, 5]
    assert cy.entries == []
    for synced in (ann, bob, cy):
        assert json.loads(synced.frame()) == {"type": "sync", **synced.reply()}


async def test_a_refused_sync_refuses_only_its_caller() -> None:
    messaging = StandInMessaging()
    async with batching(messaging) as syncs:
        messaging.gate.clear()
        first = asyncio.ensure_future(syncs.sync(query("ann", 0)))
        await wait_until(lambda: _asked(messaging, 1), what="the first sync_many")
        bad = asyncio.ensure_future(syncs.sync(query("intruder", 0)))
        good = asyncio.ensure_future(syncs.sync(query("bob", 3)))
        await asyncio.sleep(0)
        messaging.gate.set()
        await first
        with pytest.raises(Problem) as refused:
            await bad
        assert [e["position"] for e in (await good).entries] == [4, 5]
    assert messaging.requests[1] == ["intruder", "bob"]
    assert (refused.value.status, refused.value.code) == (403, "forbidden")


@pytest.mark.parametrize("failure", ["broken", "down"])
async def test_an_answer_that_does_not_fit_or_never_comes_fails_every_caller_of_the_batch(failure: str) -> None:
    messaging = StandInMessaging()
    setattr(messaging, failure, True)
    async with batching(messaging) as syncs:
        outcomes = await asyncio.gather(syncs.sync(query("ann", 0)), return_exceptions=True)
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], ServiceUnavailable)


def test_an_entry_of_a_kind_this_gateway_does_not_know_is_left_out_of_the_answer_and_passed_on_live() -> None:
    """A newer messaging may add kinds of entry: the JSON answer (whose schema lists the kinds) leaves it out,
    instead of failing; a live stream's frame carries it on, for clients that skip kinds they do not know."""
    known, newer = TIMELINE[1], {"position": 2, "conversation_id": "c", "kind": "poll_created", "poll": {}}
    texts = [json.dumps(known), json.dumps(newer)]
    synced = Synced(entries=[known, newer], texts=texts, next="s2", limited=False, gap=None, more=False)
    assert synced.reply()["entries"] == [known]
    assert synced.reply()["next"] == "s2"
    assert [entry["kind"] for entry in json.loads(synced.frame())["entries"]] == ["message", "poll_created"]
