"""BitChat through the gateway, on the real messaging service, NATS and Postgres: direct
messages, idempotent retries, groups with receipts and removal, sync (with its gap marker and
long-poll), causal order of offline-written messages, nodes messaging their owners, bad input."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chat_driver import GENEROUS_LIMITS, Member, members, messaging_db, start_direct, sync_all
from gateway_stack import Stack

from fog_messaging import store
from fog_shared.testing.waiting import wait_until

# -- direct messages -----------------------------------------------------------------------


async def test_two_users_exchange_direct_messages_and_see_one_order(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob, "hi bob")
    assert await start_direct(bob, alice, "hi alice") == conversation  # one conversation per pair
    await alice.send(conversation, "how are you?")
    await bob.send(conversation, "fine")
    seen_by_alice, seen_by_bob = await alice.messages(conversation), await bob.messages(conversation)
    assert seen_by_alice == seen_by_bob
    assert [(m["seq"], m["text"]) for m in seen_by_alice] == [
        (1, "hi bob"), (2, "hi alice"), (3, "how are you?"), (4, "fine")
    ]  # fmt: skip
    assert [m["sender_id"] for m in seen_by_alice] == [alice.id, bob.id, alice.id, bob.id]
    listed = (await bob.http.get("/v1/conversations", headers=bob.headers)).json()["items"]
    assert [(c["id"], c["kind"], c["last_seq"]) for c in listed] == [(conversation, "direct", 4)]


async def test_a_retried_send_stores_one_message(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    first = await alice.dm(bob.id, "once", client_msg_id="tx-1")
    again = await alice.dm(bob.id, "once", client_msg_id="tx-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    conversation = first.json()["conversation_id"]
    retried = await asyncio.gather(*(alice.send(conversation, "burst", client_msg_id="tx-2") for _ in range(5)))
    assert len({m["id"] for m in retried}) == 1
    assert [m["client_msg_id"] for m in await bob.messages(conversation)] == ["tx-1", "tx-2"]
    entries, _ = await sync_all(bob)
    assert [e["message"]["seq"] for e in entries if e["kind"] == "message"] == [1, 2]


async def test_edits_and_deletes_leave_tombstones(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob, "helo")
    path = f"/v1/conversations/{conversation}/messages/1"
    assert (await bob.http.patch(path, json={"text": "hijacked"}, headers=bob.headers)).status_code == 403
    edited = await alice.http.patch(path, json={"text": "hello"}, headers=alice.headers)
    assert edited.status_code == 200
    assert edited.json()["edited_at"]
    assert (await bob.http.delete(path, headers=bob.headers)).status_code == 403
    deleted = await alice.http.delete(path, headers=alice.headers)
    assert deleted.status_code == 200
    assert (deleted.json()["text"], deleted.json()["seq"]) == (None, 1)
    assert (await alice.http.patch(path, json={"text": "back"}, headers=alice.headers)).status_code == 409
    entries, _ = await sync_all(bob)
    assert [e["kind"] for e in entries] == ["message", "edited", "deleted"]
    assert all(e["message"]["text"] is None for e in entries)  # each shows the message as it is now


# -- groups --------------------------------------------------------------------------------


async def test_a_group_of_five_with_receipts_and_a_removed_member(stack: Stack) -> None:
    owner, *others = await members(stack, 5)
    created = await owner.http.post(
        "/v1/groups", json={"name": "crew", "member_ids": [m.id for m in others]}, headers=owner.headers
    )
    assert created.status_code == 201, created.text
    group = created.json()["id"]
    assert {(m["member_id"], m["role"]) for m in created.json()["members"]} == {
        (owner.id, "owner"), *((m.id, "member") for m in others)
    }  # fmt: skip
    for index, sender in enumerate([owner, *others]):
        await sender.send(group, f"hello from {index}")
    for reader in others:
        receipt = await reader.http.post(
            f"/v1/conversations/{group}/receipts", json={"kind": "read", "up_to_seq": 5}, headers=reader.headers
        )
        assert receipt.json() == {"member_id": reader.id, "delivered_seq": 5, "read_seq": 5}
    receipts = (await owner.http.get(f"/v1/conversations/{group}/receipts", headers=owner.headers)).json()["items"]
    assert {r["member_id"]: r["read_seq"] for r in receipts} == {owner.id: 0, **{m.id: 5 for m in others}}

    leaving = others[-1]
    removed = await owner.http.delete(f"/v1/groups/{group}/members/{leaving.id}", headers=owner.headers)
    assert removed.status_code == 204
    _, token = await sync_all(leaving)
    await owner.send(group, "after the removal")

    assert [m["seq"] for m in await others[0].messages(group)] == [1, 2, 3, 4, 5, 6]
    assert [m["seq"] for m in await leaving.messages(group)] == [1, 2, 3, 4, 5]  # nothing after removal
    assert (await leaving.sync(token))["entries"] == []  # and none of it reaches them
    refused = await leaving.http.post(
        f"/v1/conversations/{group}/messages", json={"text": "hey", "client_msg_id": "x"}, headers=leaving.headers
    )
    assert refused.status_code == 404
    receipt = await leaving.http.post(
        f"/v1/conversations/{group}/receipts", json={"kind": "read", "up_to_seq": 6}, headers=leaving.headers
    )
    assert receipt.status_code == 422  # message 6 is not theirs to read


async def test_unread_counts_others_messages_after_the_read_mark_that_the_member_may_read(stack: Stack) -> None:
    owner, early, late = await members(stack, 3)
    created = await owner.http.post(
        "/v1/groups", json={"name": "crew", "member_ids": [early.id]}, headers=owner.headers
    )
    group = created.json()["id"]

    async def unread(member: Member) -> tuple[int, int]:
        [listed] = (await member.http.get("/v1/conversations", headers=member.headers)).json()["items"]
        one = (await member.http.get(f"/v1/conversations/{group}", headers=member.headers)).json()
        assert (one["read_seq"], one["unread"]) == (listed["read_seq"], listed["unread"])  # the same in both views
        return listed["read_seq"], listed["unread"]

    for text in ("one", "two", "three"):
        await owner.send(group, text)
    await early.send(group, "four")  # their own: never unread to them
    added = await owner.http.post(f"/v1/groups/{group}/members", json={"member_id": late.id}, headers=owner.headers)
    assert added.status_code in (200, 201), added.text
    await owner.send(group, "five")
    await owner.http.delete(f"/v1/conversations/{group}/messages/2", headers=owner.headers)  # gone for everyone
    assert await unread(owner) == (0, 1)  # "four"
    assert await unread(early) == (0, 3)  # one, three, five
    assert await unread(late) == (0, 1)  # five: what came before they joined is not theirs to read
    marked = await early.http.post(
        f"/v1/conversations/{group}/receipts", json={"kind": "read", "up_to_seq": 3}, headers=early.headers
    )
    assert marked.status_code == 200, marked.text
    assert await unread(early) == (3, 1)


async def test_search_finds_what_the_member_may_read_the_newest_first(stack: Stack) -> None:
    alice, bob, carol = await members(stack, 3)
    direct = await start_direct(alice, bob, "The Deploy went fine")
    created = await alice.http.post("/v1/groups", json={"name": "ops", "member_ids": [bob.id]}, headers=alice.headers)
    group = created.json()["id"]
    await alice.send(group, "deploy at 5 (100% sure)")
    gone = await alice.send(group, "deploy secrets: do not")
    await alice.http.delete(f"/v1/conversations/{group}/messages/{gone['seq']}", headers=alice.headers)
    await alice.http.delete(f"/v1/groups/{group}/members/{bob.id}", headers=alice.headers)
    await alice.send(group, "deploy postponed")  # after bob left: not his to read
    await start_direct(alice, carol, "no deploy talk with carol")

    async def found(member: Member, text: str, **params: Any) -> list[str]:
        answer = await member.http.get(
            "/v1/conversations/search", params={"text": text, **params}, headers=member.headers
        )
        assert answer.status_code == 200, answer.text
        return [m["text"] for m in answer.json()["items"]]

    assert await found(bob, "DEPLOY") == ["deploy at 5 (100% sure)", "The Deploy went fine"]
    assert await found(bob, "deploy", conversation_id=direct) == ["The Deploy went fine"]
    assert await found(bob, "100%") == ["deploy at 5 (100% sure)"]  # a percent sign, not a pattern
    assert await found(bob, "_") == []
    assert await found(alice, "deploy", limit=2) == ["no deploy talk with carol", "deploy postponed"]
    assert await found(carol, "deploy") == ["no deploy talk with carol"]
    theirs = await carol.http.get(
        "/v1/conversations/search", params={"text": "deploy", "conversation_id": direct}, headers=carol.headers
    )
    assert theirs.status_code == 404  # alice and bob's: as if it did not exist
    page = await alice.http.get(
        "/v1/conversations/search", params={"text": "deploy", "limit": 2}, headers=alice.headers
    )
    assert page.json()["more"] is True
    empty = await alice.http.get("/v1/conversations/search", params={"text": ""}, headers=alice.headers)
    assert empty.status_code == 422


async def test_roles_leaving_and_handing_over(stack: Stack) -> None:
    owner, admin, member, newcomer = await members(stack, 4)
    group = (
        await owner.http.post(
            "/v1/groups", json={"name": "g", "member_ids": [admin.id, member.id]}, headers=owner.headers
        )
    ).json()["id"]
    promoted = await owner.http.put(
        f"/v1/groups/{group}/members/{admin.id}/role", json={"role": "admin"}, headers=owner.headers
    )
    assert promoted.status_code == 200, promoted.text
    add = {"member_id": newcomer.id}
    assert (await member.http.post(f"/v1/groups/{group}/members", json=add, headers=member.headers)).status_code == 403
    assert (await admin.http.post(f"/v1/groups/{group}/members", json=add, headers=admin.headers)).status_code == 200
    await owner.send(group, "welcome")
    assert [m["text"] for m in await newcomer.messages(group)] == ["welcome"]
    leave = await owner.http.delete(f"/v1/groups/{group}/members/{owner.id}", headers=owner.headers)
    assert leave.status_code == 409
    handed = await owner.http.post(f"/v1/groups/{group}/owner", json={"member_id": member.id}, headers=owner.headers)
    roles = {m["member_id"]: m["role"] for m in handed.json()["members"]}
    assert (roles[member.id], roles[owner.id]) == ("owner", "admin")
    assert (await owner.http.delete(f"/v1/groups/{group}/members/{owner.id}", headers=owner.headers)).status_code == 204
    entries, _ = await sync_all(newcomer)
    assert [e["kind"] for e in entries] == ["member_added", "message", "role_changed", "role_changed", "member_removed"]


# -- sync ----------------------------------------------------------------------------------


async def test_an_offline_client_syncs_a_thousand_messages_without_a_gap(stack: Stack) -> None:
    http = await stack.open_gateway(**GENEROUS_LIMITS)
    alice, bob = await members(stack, 2, http=http)
    conversation = await start_direct(alice, bob, "0")
    limit = asyncio.Semaphore(8)

    async def send(index: int) -> None:
        async with limit:
            await alice.send(conversation, str(index), client_msg_id=f"m{index}")

    await asyncio.gather(*(send(index) for index in range(1, 1000)))
    entries, token = await sync_all(bob, limit=300)
    seqs = [e["message"]["seq"] for e in entries if e["kind"] == "message"]
    assert seqs == list(range(1, 1001))
    positions = [e["position"] for e in entries]
    assert positions == sorted(set(positions))
    assert (await bob.sync(token))["entries"] == []


async def test_a_client_back_after_retention_gets_a_gap_marker_and_pages_back(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob, "old 1")
    await alice.send(conversation, "old 2")
    conn = await messaging_db(stack)
    try:
        pruned_through = await store.prune_timeline(conn, older_than=datetime.now(UTC) + timedelta(seconds=1))
    finally:
        await conn.close()
    await alice.send(conversation, "new")
    page = await bob.sync()
    assert page["limited"] is True
    assert page["gap"] == {"since": "s0", "until": f"s{pruned_through}"}
    assert [e["message"]["text"] for e in page["entries"]] == ["new"]
    older = await bob.messages(conversation, before_seq=page["entries"][0]["message"]["seq"])
    assert [m["text"] for m in older] == ["old 1", "old 2"]  # the history is still there to page back


async def test_a_long_poll_returns_when_a_message_arrives(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob)
    _, token = await sync_all(bob)
    waiting = asyncio.create_task(bob.sync(token, timeout_ms=20_000))
    await alice.send(conversation, "wake up")
    page = await asyncio.wait_for(waiting, timeout=20)
    assert [e["message"]["text"] for e in page["entries"]] == ["wake up"]


async def test_a_long_poll_with_nothing_new_answers_empty_at_its_timeout(stack: Stack) -> None:
    (bob,) = await members(stack, 1)
    page = await bob.sync(None, timeout_ms=50)
    assert (page["entries"], page["limited"], page["more"]) == ([], False, False)


async def test_restarting_messaging_during_a_flood_of_sends_loses_and_duplicates_nothing(stack: Stack) -> None:
    http = await stack.open_gateway(**GENEROUS_LIMITS)
    alice, bob = await members(stack, 2, http=http)
    conversation = await start_direct(alice, bob, "0")
    stored: list[int] = []

    async def send_until_stored(index: int) -> None:
        """What a client does: retry with the same client message id until the send is answered."""
        body = {"text": str(index), "client_msg_id": f"flood-{index}"}
        while True:
            sent = await http.post(f"/v1/conversations/{conversation}/messages", json=body, headers=alice.headers)
            if sent.status_code in (200, 201):
                stored.append(index)
                return
            assert sent.status_code == 503, sent.text
            await asyncio.sleep(0.05)  # the client's retry pause

    async def sender(first: int) -> None:
        for index in range(first, 401, 4):
            await send_until_stored(index)

    flood = asyncio.gather(*(sender(first) for first in range(1, 5)))

    async def under_way() -> bool:
        return len(stored) >= 50

    await wait_until(under_way, timeout=30, what="the flood under way")
    await stack.restart_messaging()
    await flood
    messages = await bob.messages(conversation)
    assert [m["seq"] for m in messages] == list(range(1, 402))
    assert sorted(m["client_msg_id"] for m in messages[1:]) == sorted(f"flood-{index}" for index in range(1, 401))


# -- causal order --------------------------------------------------------------------------

#: written offline: the phone and the laptop each write two messages without seeing the other's,
#: then the laptop syncs and writes a third that follows all of them
OFFLINE = {
    "p1": ("phone", {"phone": 1}),
    "p2": ("phone", {"phone": 2}),
    "l1": ("laptop", {"laptop": 1}),
    "l2": ("laptop", {"laptop": 2}),
    "l3": ("laptop", {"phone": 2, "laptop": 3}),
}


async def test_offline_devices_are_ordered_deterministically_and_concurrency_is_reported(stack: Stack) -> None:
    alice, bob, carol = await members(stack, 3)
    orders = {}
    for reader, arrival in ((bob, ["p1", "p2", "l1", "l2", "l3"]), (carol, ["l1", "p1", "l2", "p2", "l3"])):
        conversation = await start_direct(reader, alice, "are you there?")
        for name in arrival:
            device, clock = OFFLINE[name]
            await alice.send(conversation, name, client_msg_id=name, device_id=device, clock=clock)
        causal = await reader.messages(conversation, order="causal")
        assert causal == await alice.messages(conversation, order="causal")  # both sides see one order
        by_seq = {m["seq"]: m["client_msg_id"] for m in causal}
        concurrent = {frozenset((m["client_msg_id"], by_seq[s])) for m in causal for s in m["concurrent_with"]}
        assert concurrent == {frozenset(pair) for pair in (("p1", "l1"), ("p1", "l2"), ("p2", "l1"), ("p2", "l2"))}
        orders[reader.id] = [m["client_msg_id"] for m in causal if m["clock"]]
    assert orders[bob.id] == orders[carol.id]  # whatever order they arrived in
    order = orders[bob.id]
    assert order.index("p1") < order.index("p2")
    assert order.index("l1") < order.index("l2") < order.index("l3")
    assert order.index("p2") < order.index("l3")


async def test_a_clock_must_count_its_own_device_up_and_not_borrow_another_members(stack: Stack) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob)
    await alice.send(conversation, "one", device_id="alice-phone", clock={"alice-phone": 2})
    url = f"/v1/conversations/{conversation}/messages"
    replayed = {"text": "two", "client_msg_id": "replay", "device_id": "alice-phone", "clock": {"alice-phone": 2}}
    assert (await alice.http.post(url, json=replayed, headers=alice.headers)).status_code == 409
    borrowed = {"text": "me", "client_msg_id": "borrow", "device_id": "alice-phone", "clock": {"alice-phone": 3}}
    assert (await bob.http.post(url, json=borrowed, headers=bob.headers)).status_code == 422
    assert [m["text"] for m in await bob.messages(conversation)] == ["hello", "one"]


# -- nodes ---------------------------------------------------------------------------------


async def test_a_node_messages_its_owner_only(stack: Stack) -> None:
    owner, stranger = await members(stack, 2, roles=["user", "provider"])
    registered = await stack.http.post(
        "/v1/nodes",
        json={"name": "edge-1", "capabilities": {"cpu_cores": 2, "memory_bytes": 1 << 30, "disk_bytes": 1 << 30,
                                                 "arch": "x86_64", "os": "Linux"}},
        headers=owner.headers,
    )  # fmt: skip
    assert registered.status_code == 201, registered.text
    node_id, credential = registered.json()["node"]["id"], registered.json()["credential"]
    node = Member(stack.http, f"node:{node_id}", stack.bearer(credential))
    conn = await messaging_db(stack)
    try:

        async def owner_known() -> bool:
            return await store.node_owner(conn, node_id) == owner.id

        await wait_until(owner_known, what="messaging knows the node's owner")
    finally:
        await conn.close()
    assert (await node.dm(stranger.id, "hi")).status_code == 403
    assert (await stranger.dm(node.id, "hi")).status_code == 404
    notice = await node.dm(owner.id, "disk almost full")
    assert notice.status_code == 201, notice.text
    conversation = notice.json()["conversation_id"]
    reply = await owner.dm(node.id, "thanks")
    assert reply.json()["conversation_id"] == conversation
    by_alias = await node.dm("owner", "it knows its owner as 'owner'")  # an agent need not know its owner's id
    assert (by_alias.status_code, by_alias.json()["conversation_id"]) == (201, conversation)
    assert (await stranger.dm("owner", "hi")).status_code == 404  # to a person, a user named so: none
    assert [m["sender_id"] for m in await owner.messages(conversation)] == [node.id, owner.id, node.id]
    seen = (await owner.http.get(f"/v1/conversations/{conversation}", headers=owner.headers)).json()
    assert {m["member_id"]: m["email"] for m in seen["members"]} == {owner.id: owner.email, node.id: None}
    elsewhere = await node.http.post(
        f"/v1/conversations/{conversation}/messages", json={"text": "x", "client_msg_id": "y"}, headers=node.headers
    )
    assert elsewhere.status_code == 403  # nodes use the direct route to their owner, nothing else


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"text": "x" * 16_385, "client_msg_id": "big"}, 422),
        ({"text": "é" * 9_000, "client_msg_id": "big-bytes"}, 422),
        ({"text": "forged", "client_msg_id": "f", "sender_id": "someone-else"}, 422),
        ({"text": "x", "client_msg_id": "c1", "device_id": "phone", "clock": {"phone": "1"}}, 422),
        ({"text": "x", "client_msg_id": "c2", "device_id": "phone", "clock": {"phone": -1}}, 422),
        ({"text": "x", "client_msg_id": "c3", "device_id": "phone", "clock": {"laptop": 1}}, 422),
        ({"text": "x", "client_msg_id": "c4", "clock": {"phone": 1}}, 422),
        ({"text": "x", "client_msg_id": "c5", "device_id": "phone", "clock": []}, 422),
        ({"text": "x", "client_msg_id": "r", "reply_to_seq": 99}, 422),
        ({"text": "x"}, 422),
    ],
)
async def test_bad_messages_are_refused_and_change_nothing(stack: Stack, body: dict[str, Any], status: int) -> None:
    alice, bob = await members(stack, 2)
    conversation = await start_direct(alice, bob)
    _, token = await sync_all(bob)
    answer = await alice.http.post(f"/v1/conversations/{conversation}/messages", json=body, headers=alice.headers)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert len(await bob.messages(conversation)) == 1
    assert (await bob.sync(token))["entries"] == []


async def test_unknown_and_other_peoples_conversations_look_the_same(stack: Stack) -> None:
    alice, bob, eve = await members(stack, 3)
    conversation = await start_direct(alice, bob)
    body = {"text": "let me in", "client_msg_id": "e"}
    for target in (conversation, str(uuid.uuid4()), "not-a-uuid"):
        sent = await eve.http.post(f"/v1/conversations/{target}/messages", json=body, headers=eve.headers)
        assert sent.status_code == 404, sent.text
        read = await eve.http.get(f"/v1/conversations/{target}/messages", headers=eve.headers)
        assert read.status_code == 404
    assert (await eve.dm(str(uuid.uuid4()), "who?")).status_code == 404
    assert (await eve.dm(eve.id, "me")).status_code == 422
    bogus = await eve.http.get("/v1/sync", params={"since": "bogus"}, headers=eve.headers)
    assert bogus.status_code == 400
    assert len(await bob.messages(conversation)) == 1
