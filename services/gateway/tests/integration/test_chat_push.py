"""BitChat's fast path: messaging pushes each committed change's timeline entries to the
gateways, and a live stream on the chain sends them without a sync (``fog_gateway.chat_feed``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import nats
import pytest
import websockets
from chat_driver import Member, members, messaging_db, start_direct
from gateway_stack import Stack
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from prometheus_client import REGISTRY

from fog_messaging.timeline_push import TimelinePusher
from fog_shared.commands.gateway import TIMELINE, PushedEntry, TimelinePush
from fog_shared.commands.messaging import SyncEntry
from fog_shared.testing.plugin import Servers
from fog_shared.testing.waiting import wait_until


@contextlib.asynccontextmanager
async def listening(fog_servers: Servers, on_push: Any) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(fog_servers.nats_url)
    try:
        await nc.subscribe(TIMELINE, cb=on_push)
        await nc.flush()
        yield nc
    finally:
        await nc.close()


async def test_a_committed_change_is_pushed_with_its_positions_entries_audience_and_events(
    stack: Stack, fog_servers: Servers
) -> None:
    alice, bob = await members(stack, 2)
    db = await messaging_db(stack)
    pushes: asyncio.Queue[tuple[TimelinePush, asyncpg.Record | None]] = asyncio.Queue()

    async def on_push(msg: Msg) -> None:
        push = TimelinePush.model_validate_json(msg.data)
        row = await db.fetchrow("SELECT text FROM messages WHERE text = 'pushed hello'")
        await pushes.put((push, row))

    try:
        async with listening(fog_servers, on_push):
            conversation = await start_direct(alice, bob, "pushed hello")
            push, row = await asyncio.wait_for(pushes.get(), timeout=10)
            assert row is not None, "committed before it was pushed"
            [pushed] = push.entries
            assert (push.after + 1, push.through) == (pushed.position, pushed.position)
            assert sorted(pushed.audience) == sorted([alice.id, bob.id])
            entry = SyncEntry.model_validate_json(pushed.text)
            assert entry.message is not None
            assert (entry.conversation_id, entry.kind, entry.message.text) == (conversation, "message", "pushed hello")
            ids = await db.fetch("SELECT event_id::text FROM outbox WHERE subject LIKE '%message.sent%'")
            assert set(push.event_ids) & {r["event_id"] for r in ids}, "it names the message's event"
            assert entry.model_dump(mode="json") in (await bob.sync())["entries"], "the entry is what sync gives"

            read = {"kind": "read", "up_to_seq": 1}
            answer = await bob.http.post(f"/v1/conversations/{conversation}/receipts", json=read, headers=bob.headers)
            assert answer.status_code == 200, answer.text
            receipt, _ = await asyncio.wait_for(pushes.get(), timeout=10)
            assert receipt.after == push.through, "the next change takes the next position"
            read_entry = SyncEntry.model_validate_json(receipt.entries[0].text)
            assert read_entry.kind == "receipt"
            assert read_entry.model_dump(mode="json") in (await bob.sync())["entries"], "read back as sync reads it"
    finally:
        await db.close()


def live_frames_pushed() -> float:
    return REGISTRY.get_sample_value("fog_gateway_live_frames_total", {"source": "pushed"}) or 0.0


async def test_a_live_stream_on_the_chain_sends_a_pushed_entry_without_asking_messaging(
    stack: Stack, fog_servers: Servers
) -> None:
    """The entry pushed here is in no timeline at all: only the push can have brought it."""
    url = await stack.serve_gateway()
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob, "one")
    db = await messaging_db(stack)
    nc = await nats.connect(fog_servers.nats_url)
    try:
        head = await db.fetchval("SELECT position FROM timeline_head")

        async def the_chain_has(position: int) -> bool:
            return REGISTRY.get_sample_value("fog_gateway_timeline_head") == position

        await wait_until(lambda: the_chain_has(head), what="the gateway's chain up to the first message")
        ws_url = url.replace("http", "ws", 1) + "/v1/sync/live"
        async with websockets.connect(ws_url, additional_headers=bob.headers) as stream:
            synced = json.loads(await asyncio.wait_for(stream.recv(), timeout=10))
            assert [e["message"]["text"] for e in synced["entries"]] == ["one"]
            await alice.send(conversation, "two")
            frame = json.loads(await asyncio.wait_for(stream.recv(), timeout=10))
            assert [e["message"]["text"] for e in frame["entries"]] == ["two"]
            head = await db.fetchval("SELECT position FROM timeline_head")
            assert frame["next"] == f"s{head}"
            await wait_until(lambda: the_chain_has(head), what="the gateway's chain up to the second message")

            # A position taken with no entry in anyone's timeline, and a push of an entry for it.
            position = await db.fetchval("UPDATE timeline_head SET position = position + 1 RETURNING position")
            assert position == head + 1, "nothing else changed meanwhile"
            made_up = _entry(position, conversation, bob)
            pushed_before = live_frames_pushed()
            sent = TimelinePush(after=head, through=position, entries=[made_up]).model_dump(mode="json")
            sent["shard"] = 7  # fields of a newer messaging, at two depths: this gateway leaves them out
            sent["entries"][0]["trace"] = "t-1"
            await nc.publish(TIMELINE, json.dumps(sent).encode())
            frame = json.loads(await asyncio.wait_for(stream.recv(), timeout=10))
            assert frame["entries"] == [json.loads(made_up.text)]
            assert frame["next"] == f"s{position}"
            assert not frame["limited"]
            assert live_frames_pushed() == pushed_before + 1
            assert (await bob.sync(frame["next"]))["entries"] == [], "the token is a real one: nothing after it"
    finally:
        await nc.close()
        await db.close()


def _entry(position: int, conversation: str, member: Member) -> PushedEntry:
    text = SyncEntry.model_validate(
        {"position": position, "conversation_id": conversation, "kind": "member_added",
         "member": {"member_id": member.id, "role": "member", "by": member.id}, "at": "2026-12-04T00:00:00Z"}
    ).model_dump_json()  # fmt: skip
    return PushedEntry(position=position, audience=[member.id], text=text)


async def test_without_pushes_a_live_stream_still_gets_every_message_once_from_the_events(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushes lost (here: never sent): each event wakes the stream, which syncs."""

    async def lost(*_: object, **__: object) -> None:
        return None

    monkeypatch.setattr(TimelinePusher, "push", lost)
    url = await stack.serve_gateway()
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob, "0")
    ws_url = url.replace("http", "ws", 1) + "/v1/sync/live"
    seen: list[str] = []
    async with websockets.connect(ws_url, additional_headers=bob.headers) as stream:
        for index in range(1, 6):
            await alice.send(conversation, str(index))
        while len(seen) < 6:
            frame = json.loads(await asyncio.wait_for(stream.recv(), timeout=10))
            seen += [e["message"]["text"] for e in frame["entries"] if e.get("message")]
    assert seen == ["0", "1", "2", "3", "4", "5"]
