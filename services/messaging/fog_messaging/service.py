"""Messaging use cases: send, edit, delete, read; groups; receipts; sync.

Each takes the connection it works in; state changes, the events they cause (outbox) and the
timeline entries of everyone concerned commit together. Refusals are :class:`MessagingError`
with a stable code. Someone else's conversation looks like none (``not_found``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected, Role
from fog_messaging.views import conversation_view, message_view, receipt_view, sync_entry
from fog_shared.commands import messaging as contract
from fog_shared.commands.auth import Principal
from fog_shared.commands.common import Refusal
from fog_shared.events.messaging import (
    GroupCreated,
    MemberAdded,
    MemberRemoved,
    MemberRoleChanged,
    MessageDeleted,
    MessageEdited,
    MessageSent,
    ReceiptRecorded,
)
from fog_shared.pg import outbox

SOURCE = "fog/messaging"
#: how many of a conversation's latest clocked messages a new one is compared with
CLOCK_WINDOW = 200


class MessagingError(Refusal):
    """A refusal of the messaging service (a stable ``code`` and a detail for people)."""


def refusal(rejected: Rejected) -> MessagingError:
    return MessagingError(rejected.code, rejected.detail)


def member_of(by: Principal) -> str:
    """The member id of whoever asks: a user (directly or through an API key), or a node."""
    if by.kind == "node" and by.node_id:
        return domain.node_member(by.node_id)
    if by.kind in ("user", "api_key") and by.user_id:
        return by.user_id
    raise MessagingError("forbidden", "this credential cannot take part in conversations")


def _conversation_uuid(conversation_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(conversation_id)
    except ValueError:
        raise MessagingError("not_found", "no such conversation") from None


def _no_conversation() -> MessagingError:
    return MessagingError("not_found", "no such conversation")


async def _locked(conn: asyncpg.Connection, conversation_id: uuid.UUID) -> Any:
    conv = await store.conversation(conn, conversation_id, lock=True)
    if conv is None:
        raise _no_conversation()
    return conv


# -- sending ------------------------------------------------------------------------------------


async def send(conn: asyncpg.Connection, command: contract.SendCommand, *, now: datetime) -> contract.SendReply:
    """Store a message as its conversation's next seq; the same client message id again returns it."""
    me, message = member_of(command.by), command.message
    try:
        async with conn.transaction():
            conversation_id = await _conversation_to_send_to(conn, me, command, now)
            conv = await _locked(conn, conversation_id)  # numbers messages one at a time, without gaps
            roster = await store.members(conn, conversation_id)
            if me not in roster:
                raise _no_conversation()
            existing = await store.message_by_client_id(conn, conversation_id, me, message.client_msg_id)
            if existing is not None:
                return contract.SendReply(message=message_view(existing), created=False)
            stored = await _store_message(conn, conv, me, message, now)
            event = MessageSent(
                message_id=str(stored["id"]), conversation_id=str(conversation_id), seq=stored["seq"], sender_id=me,
                reply_to_seq=message.reply_to_seq, concurrent_with=list(stored["concurrent_with"]),
                audience=list(roster), sent_at=now,
            )  # fmt: skip
            await outbox.record(conn, event, source=SOURCE)
            await store.append_timeline(conn, list(roster), conversation_id, "message", msg_seq=stored["seq"], now=now)
    except Rejected as rejected:
        raise refusal(rejected) from None
    return contract.SendReply(message=message_view(stored), created=True)


async def _store_message(
    conn: asyncpg.Connection, conv: Any, me: str, message: contract.SendRequest, now: datetime
) -> asyncpg.Record:
    domain.check_text(message.text)
    periods = await store.access(conn, conv["id"], me)
    readable = domain.readable_up_to(periods, conv["last_seq"])
    if message.reply_to_seq is not None and not (
        message.reply_to_seq <= readable and domain.may_read(periods, message.reply_to_seq)
    ):
        raise Rejected("invalid_reply_to", f"no message {message.reply_to_seq} to reply to in this conversation")
    seq = domain.next_seq(conv["last_seq"])
    clock, concurrent = None, list[int]()
    if message.clock is not None:
        clock = domain.check_clock(message.clock, message.device_id)
        weight = domain.clock_weight(clock)
        concurrent = domain.concurrent_with(clock, await store.recent_clocks(conn, conv["id"], CLOCK_WINDOW))
    else:
        weight = conv["max_weight"] + 1  # after everything the service has seen so far
    return await store.insert_message(
        conn,
        {
            "conversation_id": conv["id"], "seq": seq, "id": uuid.uuid4(), "sender_id": me,
            "client_msg_id": message.client_msg_id, "device_id": message.device_id, "text": message.text,
            "reply_to_seq": message.reply_to_seq, "clock": clock, "weight": weight, "concurrent_with": concurrent,
            "sent_at": now,
        },
    )  # fmt: skip


async def _conversation_to_send_to(
    conn: asyncpg.Connection, me: str, command: contract.SendCommand, now: datetime
) -> uuid.UUID:
    if (command.conversation_id is None) == (command.to is None):
        raise MessagingError("invalid", "name either the conversation or the recipient")
    if command.to is None:
        if command.by.kind == "node":
            raise MessagingError("forbidden", "a node messages its owner only")
        assert command.conversation_id is not None
        return _conversation_uuid(command.conversation_id)
    await _check_direct_recipient(conn, me, command.by, command.to)
    key = domain.direct_key(me, command.to)
    existing = await store.direct_conversation_id(conn, key)
    if existing is not None:
        return existing
    return await store.create_direct(conn, key, [me, command.to], now)


async def _check_direct_recipient(conn: asyncpg.Connection, me: str, by: Principal, to: str) -> None:
    if by.kind == "node":
        owner = await store.node_owner(conn, by.node_id or "")
        if owner is None or to != owner:
            raise MessagingError("forbidden", "a node messages its owner only")
        return
    if domain.is_node(to):
        if await store.node_owner(conn, to.removeprefix(domain.NODE_PREFIX)) != me:
            raise MessagingError("not_found", "no such member")  # only a node's owner talks to it
        return
    if not await store.known_users(conn, [to]):
        raise MessagingError("not_found", "no such user")


# -- editing and deleting ---------------------------------------------------------------------


async def _readable_message(conn: asyncpg.Connection, me: str, conversation_id: uuid.UUID, seq: int) -> Any:
    found = await store.message(conn, conversation_id, seq)
    if found is None or not domain.may_read(await store.access(conn, conversation_id, me), seq):
        raise MessagingError("not_found", "no such message")
    return found


async def edit(conn: asyncpg.Connection, command: contract.EditCommand, *, now: datetime) -> contract.MessageView:
    me, conversation_id = member_of(command.by), _conversation_uuid(command.conversation_id)
    try:
        async with conn.transaction():
            await _locked(conn, conversation_id)
            if me not in await store.members(conn, conversation_id):
                raise _no_conversation()
            found = await _readable_message(conn, me, conversation_id, command.seq)
            domain.check_edit(me, found["sender_id"], found["deleted_at"] is not None)
            domain.check_text(command.edit.text)
            edited = await store.edit_message(conn, conversation_id, command.seq, command.edit.text, now)
            audience = await store.readers(conn, conversation_id, command.seq)
            event = MessageEdited(message_id=str(found["id"]), conversation_id=str(conversation_id), seq=command.seq,
                                  sender_id=me, audience=audience, edited_at=now)  # fmt: skip
            await outbox.record(conn, event, source=SOURCE)
            await store.append_timeline(conn, audience, conversation_id, "edited", msg_seq=command.seq, now=now)
    except Rejected as rejected:
        raise refusal(rejected) from None
    return message_view(edited)


async def delete(conn: asyncpg.Connection, command: contract.MessageCommand, *, now: datetime) -> contract.MessageView:
    """The text goes; the seq stays as a tombstone. Deleting a deleted message changes nothing."""
    me, conversation_id = member_of(command.by), _conversation_uuid(command.conversation_id)
    async with conn.transaction():
        await _locked(conn, conversation_id)
        roster = await store.members(conn, conversation_id)
        if me not in roster:
            raise _no_conversation()
        found = await _readable_message(conn, me, conversation_id, command.seq)
        if not domain.may_delete(me, roster[me], found["sender_id"]):
            raise MessagingError("forbidden", "only the sender, or a group's owner or admins, delete a message")
        if found["deleted_at"] is None:
            await store.delete_message(conn, conversation_id, command.seq, now)
            audience = await store.readers(conn, conversation_id, command.seq)
            event = MessageDeleted(message_id=str(found["id"]), conversation_id=str(conversation_id), seq=command.seq,
                                   deleted_by=me, audience=audience, deleted_at=now)  # fmt: skip
            await outbox.record(conn, event, source=SOURCE)
            await store.append_timeline(conn, audience, conversation_id, "deleted", msg_seq=command.seq, now=now)
        deleted = await store.message(conn, conversation_id, command.seq)
    assert deleted is not None
    return message_view(deleted)


# -- reading ----------------------------------------------------------------------------------


async def list_messages(conn: asyncpg.Connection, query: contract.ListMessagesQuery) -> contract.MessagePage:
    me, conversation_id = member_of(query.by), _conversation_uuid(query.conversation_id)
    if not await store.access(conn, conversation_id, me):
        raise _no_conversation()
    rows = await store.list_messages(
        conn, conversation_id, me, after_seq=query.after_seq, before_seq=query.before_seq, limit=query.limit + 1,
        causal=query.order == "causal",
    )  # fmt: skip
    more, rows = len(rows) > query.limit, rows[: query.limit]
    if query.order == "seq" and query.before_seq is not None and query.after_seq is None:
        rows = rows[::-1]  # paged back newest first; pages read oldest first
    return contract.MessagePage(items=[message_view(r) for r in rows], more=more)


async def list_conversations(conn: asyncpg.Connection, query: contract.ByQuery) -> contract.ConversationList:
    me = member_of(query.by)
    rows = await store.conversations_of(conn, me)
    rosters = await store.rosters(conn, [r["id"] for r in rows])
    items = [conversation_view(r, rosters.get(r["id"], {}), r["last_seq"]) for r in rows]
    return contract.ConversationList(items=items)


async def get_conversation(conn: asyncpg.Connection, query: contract.ConversationQuery) -> contract.ConversationView:
    me, conversation_id = member_of(query.by), _conversation_uuid(query.conversation_id)
    return await _conversation_seen_by(conn, me, conversation_id)


async def _conversation_seen_by(
    conn: asyncpg.Connection, me: str, conversation_id: uuid.UUID
) -> contract.ConversationView:
    periods = await store.access(conn, conversation_id, me)
    conv = await store.conversation(conn, conversation_id)
    if conv is None or not periods:
        raise _no_conversation()
    readable = domain.readable_up_to(periods, conv["last_seq"])
    return conversation_view(conv, await store.members(conn, conversation_id), readable)


# -- groups -----------------------------------------------------------------------------------


async def create_group(
    conn: asyncpg.Connection, command: contract.CreateGroupCommand, *, now: datetime
) -> contract.ConversationView:
    me = member_of(command.by)
    try:
        roster = domain.group_roster(me, command.group.member_ids)
    except Rejected as rejected:
        raise refusal(rejected) from None
    others = [m for m in roster if m != me]
    unknown = set(others) - await store.known_users(conn, others)
    if unknown:
        raise MessagingError("not_found", f"no such user: {', '.join(sorted(unknown))}")
    conversation_id = uuid.uuid4()
    async with conn.transaction():
        await store.create_group(conn, conversation_id, command.group.name, now)
        for member, role in roster.items():
            await store.add_member(conn, conversation_id, member, role, after_seq=0, now=now)
        event = GroupCreated(conversation_id=str(conversation_id), name=command.group.name, owner_id=me,
                             member_ids=list(roster), created_at=now)  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
        payload = {"member_id": me, "role": "owner", "by": me}
        await store.append_timeline(conn, list(roster), conversation_id, "group_created", payload=payload, now=now)
        return await _conversation_seen_by(conn, me, conversation_id)


async def _group_roster(conn: asyncpg.Connection, conversation_id: uuid.UUID) -> tuple[Any, dict[str, Role]]:
    conv = await _locked(conn, conversation_id)
    if conv["kind"] != "group":
        raise MessagingError("not_found", "no such group")
    return conv, await store.members(conn, conversation_id)


async def add_member(
    conn: asyncpg.Connection, command: contract.AddMemberCommand, *, now: datetime
) -> contract.ConversationView:
    """Add a member, who reads what is sent from now on. Adding a member again changes nothing."""
    me, conversation_id, new = member_of(command.by), _conversation_uuid(command.conversation_id), command.member
    async with conn.transaction():
        conv, roster = await _group_roster(conn, conversation_id)
        try:
            domain.check_add(roster.get(me), new.member_id, len(roster), new.member_id in roster)
        except Rejected as rejected:
            raise refusal(rejected) from None
        if new.member_id not in roster:
            if not await store.known_users(conn, [new.member_id]):
                raise MessagingError("not_found", "no such user")
            await store.add_member(conn, conversation_id, new.member_id, new.role, after_seq=conv["last_seq"], now=now)
            audience = [*roster, new.member_id]
            event = MemberAdded(conversation_id=str(conversation_id), member_id=new.member_id, role=new.role,
                                added_by=me, after_seq=conv["last_seq"], audience=audience, added_at=now)  # fmt: skip
            await outbox.record(conn, event, source=SOURCE)
            payload = {"member_id": new.member_id, "role": new.role, "by": me}
            await store.append_timeline(conn, audience, conversation_id, "member_added", payload=payload, now=now)
        return await _conversation_seen_by(conn, me, conversation_id)


async def remove_member(conn: asyncpg.Connection, command: contract.RemoveMemberCommand, *, now: datetime) -> None:
    """Remove a member, or leave (``member_id`` is the caller): they read nothing sent afterwards."""
    me, conversation_id, target = member_of(command.by), _conversation_uuid(command.conversation_id), command.member_id
    async with conn.transaction():
        conv, roster = await _group_roster(conn, conversation_id)
        try:
            domain.check_remove(me, roster.get(me), target, roster.get(target))
        except Rejected as rejected:
            raise refusal(rejected) from None
        await store.remove_member(conn, conversation_id, target, until_seq=conv["last_seq"])
        audience = list(roster)  # the removed member learns it too
        event = MemberRemoved(conversation_id=str(conversation_id), member_id=target, removed_by=me,
                              until_seq=conv["last_seq"], audience=audience, removed_at=now)  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
        payload = {"member_id": target, "role": None, "by": me}
        await store.append_timeline(conn, audience, conversation_id, "member_removed", payload=payload, now=now)


async def set_role(
    conn: asyncpg.Connection, command: contract.SetRoleCommand, *, now: datetime
) -> contract.ConversationView:
    me, conversation_id = member_of(command.by), _conversation_uuid(command.conversation_id)
    async with conn.transaction():
        _, roster = await _group_roster(conn, conversation_id)
        try:
            domain.check_set_role(roster.get(me), roster.get(command.member_id), command.change.role)
        except Rejected as rejected:
            raise refusal(rejected) from None
        await _change_roles(conn, conversation_id, roster, {command.member_id: command.change.role}, me, now)
        return await _conversation_seen_by(conn, me, conversation_id)


async def transfer(
    conn: asyncpg.Connection, command: contract.TransferCommand, *, now: datetime
) -> contract.ConversationView:
    """The owner hands the group to another member and stays on as an admin."""
    me, conversation_id, target = member_of(command.by), _conversation_uuid(command.conversation_id), command.transfer
    async with conn.transaction():
        _, roster = await _group_roster(conn, conversation_id)
        try:
            changes = domain.transfer(me, roster.get(me), target.member_id, roster.get(target.member_id))
        except Rejected as rejected:
            raise refusal(rejected) from None
        await _change_roles(conn, conversation_id, roster, changes, me, now)
        return await _conversation_seen_by(conn, me, conversation_id)


async def _change_roles(
    conn: asyncpg.Connection,
    conversation_id: uuid.UUID,
    roster: Mapping[str, Role],
    changes: Mapping[str, Role],
    me: str,
    now: datetime,
) -> None:
    audience = list(roster)
    for member, role in changes.items():
        if roster[member] == role:
            continue
        await store.set_role(conn, conversation_id, member, role)
        event = MemberRoleChanged(conversation_id=str(conversation_id), member_id=member, role=role,
                                  previous_role=roster[member], changed_by=me, audience=audience,
                                  changed_at=now)  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
        payload = {"member_id": member, "role": role, "by": me}
        await store.append_timeline(conn, audience, conversation_id, "role_changed", payload=payload, now=now)


# -- receipts ---------------------------------------------------------------------------------


async def record_receipt(
    conn: asyncpg.Connection, command: contract.ReceiptCommand, *, now: datetime
) -> contract.ReceiptView:
    """Move the caller's delivered or read mark forward; a mark that would not move changes nothing."""
    me, conversation_id, asked = member_of(command.by), _conversation_uuid(command.conversation_id), command.receipt
    async with conn.transaction():
        conv = await store.conversation(conn, conversation_id)
        periods = await store.access(conn, conversation_id, me)
        if conv is None or not periods:
            raise _no_conversation()
        current = await store.receipt(conn, conversation_id, me)
        readable = domain.readable_up_to(periods, conv["last_seq"])
        try:
            advanced = current.advance(asked.kind, asked.up_to_seq, readable)
        except Rejected as rejected:
            raise refusal(rejected) from None
        if advanced is None:
            return receipt_view(me, current)
        await store.save_receipt(conn, conversation_id, me, advanced, now)
        audience = list(await store.members(conn, conversation_id))
        event = ReceiptRecorded(conversation_id=str(conversation_id), member_id=me, kind=asked.kind,
                                up_to_seq=asked.up_to_seq, audience=audience, recorded_at=now)  # fmt: skip
        await outbox.record(conn, event, source=SOURCE)
        payload = {"member_id": me, "delivered_seq": advanced.delivered_seq, "read_seq": advanced.read_seq}
        await store.append_timeline(conn, audience, conversation_id, "receipt", payload=payload, now=now)
    return receipt_view(me, advanced)


async def list_receipts(conn: asyncpg.Connection, query: contract.ConversationQuery) -> contract.ReceiptList:
    """Every current member's marks (0 where they have none yet)."""
    me, conversation_id = member_of(query.by), _conversation_uuid(query.conversation_id)
    if not await store.access(conn, conversation_id, me):
        raise _no_conversation()
    recorded = {r["member_id"]: domain.Receipt(r["delivered_seq"], r["read_seq"]) for r in await store.receipts(
        conn, conversation_id)}  # fmt: skip
    members = await store.members(conn, conversation_id)
    return contract.ReceiptList(
        items=[receipt_view(member, recorded.get(member, domain.Receipt())) for member in sorted(members)]
    )


# -- sync -------------------------------------------------------------------------------------


async def sync(conn: asyncpg.Connection, query: contract.SyncQuery, *, catch_up_max: int) -> contract.SyncReply:
    """Everything new for the caller across conversations, in timeline order, and the next token."""
    me = member_of(query.by)
    try:
        since = domain.parse_sync_token(query.since)
        # One snapshot: the head and the entries agree, so the next token skips nothing.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            head, pruned_through = await store.timeline_bounds(conn)
            missed = await store.missed(conn, me, since, catch_up_max + 1)
            window = domain.sync_window(since, head, pruned_through, missed, catch_up_max)
            start = window.start
            if start is None:
                start = await store.position_before_latest(conn, me, query.limit)
            rows = await store.read_timeline(conn, me, start, query.limit + 1)
    except Rejected as rejected:
        raise refusal(rejected) from None
    more, rows = len(rows) > query.limit, rows[: query.limit]
    next_position = rows[-1]["position"] if more else head
    gap = contract.Gap(since=domain.sync_token(since), until=domain.sync_token(start)) if window.limited else None
    return contract.SyncReply(
        entries=[sync_entry(r) for r in rows], next=domain.sync_token(next_position), limited=window.limited,
        gap=gap, more=more,
    )  # fmt: skip
