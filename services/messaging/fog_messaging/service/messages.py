"""Sending, editing, deleting and reading messages; the caller's conversations."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected
from fog_messaging.service.common import (
    SOURCE,
    MessagingError,
    conversation_seen_by,
    conversation_uuid,
    locked,
    member_of,
    no_conversation,
    refusal,
)
from fog_messaging.views import conversation_view, message_view
from fog_shared.commands import messaging as contract
from fog_shared.commands.auth import Principal
from fog_shared.events.messaging import MessageDeleted, MessageEdited, MessageSent
from fog_shared.pg import outbox

#: how many of a conversation's latest clocked messages a new one is compared with
CLOCK_WINDOW = 200

# -- sending ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """A send that passed every check and is stored; ``event`` is None for a retry of a stored one."""

    reply: contract.SendReply
    event: MessageSent | None = None
    #: the request's (correlation id, traceparent, tracestate), for its event
    origin: tuple[str | None, str | None, str | None] = (None, None, None)


@dataclass(frozen=True, slots=True)
class Sending:
    """One send of a batch, with the request it came from (batches run outside its context)."""

    command: contract.SendCommand
    origin: tuple[str | None, str | None, str | None] = (None, None, None)


async def send(conn: asyncpg.Connection, command: contract.SendCommand, *, now: datetime) -> contract.SendReply:
    """Store a message as its conversation's next seq; the same client message id again returns it."""
    async with conn.transaction():
        accepted = await _accept(conn, command, now)
        await _publish(conn, [accepted], now)
    return accepted.reply


async def send_many(
    conn: asyncpg.Connection, sendings: Sequence[Sending], *, now: datetime
) -> list[contract.SendReply | MessagingError]:
    """:func:`send` for each, in order, in one transaction (one commit for all): each in a
    savepoint of its own, so a refused send changes nothing and refuses only itself.

    The timeline head is taken once, last, after every conversation the batch locks: the same
    lock order as a single send, so batches and other changes do not deadlock."""
    outcomes: list[contract.SendReply | MessagingError] = []
    accepted: list[Accepted] = []
    async with conn.transaction():
        for sending in sendings:
            try:
                one = await _accept_alone(conn, sending, now)
            except MessagingError as refused:
                outcomes.append(refused)
                continue
            outcomes.append(one.reply)
            accepted.append(one)
        await _publish(conn, accepted, now)
    return outcomes


async def _accept_alone(conn: asyncpg.Connection, sending: Sending, now: datetime) -> Accepted:
    """:func:`_accept`, changing nothing when it refuses. A send to a conversation refuses before
    it writes anything; a first message to a recipient may make their conversation first, so it
    runs in a savepoint of its own."""
    if sending.command.to is None:
        return await _accept(conn, sending.command, now, origin=sending.origin)
    async with conn.transaction():
        return await _accept(conn, sending.command, now, origin=sending.origin)


async def _accept(
    conn: asyncpg.Connection,
    command: contract.SendCommand,
    now: datetime,
    *,
    origin: tuple[str | None, str | None, str | None] = (None, None, None),
) -> Accepted:
    """Check the send and store its message: every refusal comes before the message is written."""
    me, message = member_of(command.by), command.message
    try:
        conversation_id = await _conversation_to_send_to(conn, me, command, now)
        # One statement: the conversation's row locked (it numbers messages one at a time,
        # without gaps), its roster, the sender's access, an earlier send with this client id.
        context = await store.send_context(conn, conversation_id, me, message.client_msg_id)
        if context is None or me not in context["roster"]:
            raise no_conversation()
        if context["existing_seq"] is not None:
            existing = await store.message(conn, conversation_id, context["existing_seq"])
            assert existing is not None
            return Accepted(contract.SendReply(message=message_view(existing), created=False))
        stored = await _store_message(conn, context, me, message, now)
    except Rejected as rejected:
        raise refusal(rejected) from None
    event = MessageSent(
        message_id=str(stored["id"]), conversation_id=str(conversation_id), seq=stored["seq"], sender_id=me,
        reply_to_seq=message.reply_to_seq, concurrent_with=list(stored["concurrent_with"]),
        audience=list(context["roster"]), sent_at=now,
    )  # fmt: skip
    return Accepted(contract.SendReply(message=message_view(stored), created=True), event, origin)


async def _publish(conn: asyncpg.Connection, accepted: Sequence[Accepted], now: datetime) -> None:
    """The new messages' events and timeline entries; call it last in the transaction (it takes
    the timeline head)."""
    new = [(one, one.event) for one in accepted if one.event is not None]
    if not new:
        return
    single = len(new) == 1 and new[0][0].origin == (None, None, None)  # a send in its request's own context
    await outbox.record_many(
        conn, [event for _, event in new], source=SOURCE,
        causes=None if single else [(one.origin[0], None) for one, _ in new],
        traces=None if single else [(one.origin[1], one.origin[2]) for one, _ in new],
    )  # fmt: skip
    await store.append_timelines(
        conn, [(list(event.audience), uuid.UUID(event.conversation_id), event.seq) for _, event in new],
        "message", now=now,
    )  # fmt: skip


async def _store_message(
    conn: asyncpg.Connection, conv: Any, me: str, message: contract.SendRequest, now: datetime
) -> asyncpg.Record:
    domain.check_text(message.text)
    periods = store.periods_in(conv)
    readable = domain.readable_up_to(periods, conv["last_seq"])
    if message.reply_to_seq is not None and not (
        message.reply_to_seq <= readable and domain.may_read(periods, message.reply_to_seq)
    ):
        raise Rejected("invalid_reply_to", f"no message {message.reply_to_seq} to reply to in this conversation")
    seq = domain.next_seq(conv["last_seq"])
    clock, concurrent = None, list[int]()
    if message.clock is not None:
        clock = domain.check_clock(message.clock, message.device_id)
        assert message.device_id is not None  # check_clock refuses a clock without one
        taken, previous = await store.device_history(conn, conv["id"], me, message.device_id)
        domain.check_device_counter(clock, message.device_id, used_by_another=taken, previous=previous)
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
        return conversation_uuid(command.conversation_id)
    to = await _direct_recipient(conn, me, command.by, command.to)
    key = domain.direct_key(me, to)
    existing = await store.direct_conversation_id(conn, key)
    if existing is not None:
        return existing
    return await store.create_direct(conn, key, [me, to], now)


async def _direct_recipient(conn: asyncpg.Connection, me: str, by: Principal, to: str) -> str:
    """Whom a direct message goes to, if the sender may write to them: a node, to its owner alone, whom it may
    name ``owner`` (an agent need not know its owner's id)."""
    if by.kind == "node":
        owner = await store.node_owner(conn, by.node_id or "")
        if owner is None or to not in (owner, domain.OWNER_ALIAS):
            raise MessagingError("forbidden", "a node messages its owner only")
        return owner
    if domain.is_node(to):
        if await store.node_owner(conn, to.removeprefix(domain.NODE_PREFIX)) != me:
            raise MessagingError("not_found", "no such member")  # only a node's owner talks to it
        return to
    if not await store.known_users(conn, [to]):
        raise MessagingError("not_found", "no such user")
    return to


# -- editing and deleting ---------------------------------------------------------------------


async def _readable_message(conn: asyncpg.Connection, me: str, conversation_id: uuid.UUID, seq: int) -> Any:
    found = await store.message(conn, conversation_id, seq)
    if found is None or not domain.may_read(await store.access(conn, conversation_id, me), seq):
        raise MessagingError("not_found", "no such message")
    return found


async def edit(conn: asyncpg.Connection, command: contract.EditCommand, *, now: datetime) -> contract.MessageView:
    me, conversation_id = member_of(command.by), conversation_uuid(command.conversation_id)
    try:
        async with conn.transaction():
            await locked(conn, conversation_id)
            if me not in await store.members(conn, conversation_id):
                raise no_conversation()
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
    me, conversation_id = member_of(command.by), conversation_uuid(command.conversation_id)
    async with conn.transaction():
        await locked(conn, conversation_id)
        roster = await store.members(conn, conversation_id)
        if me not in roster:
            raise no_conversation()
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
    me, conversation_id = member_of(query.by), conversation_uuid(query.conversation_id)
    if not await store.access(conn, conversation_id, me):
        raise no_conversation()
    rows = await store.list_messages(
        conn, conversation_id, me, after_seq=query.after_seq, before_seq=query.before_seq, limit=query.limit + 1,
        causal=query.order == "causal",
    )  # fmt: skip
    more, rows = len(rows) > query.limit, rows[: query.limit]
    if query.order == "seq" and query.before_seq is not None and query.after_seq is None:
        rows = rows[::-1]  # paged back newest first; pages read oldest first
    return contract.MessagePage(items=[message_view(r) for r in rows], more=more)


async def search_messages(conn: asyncpg.Connection, query: contract.SearchMessagesQuery) -> contract.MessagePage:
    """The newest messages holding ``text`` across the caller's conversations (or in one of them)."""
    me = member_of(query.by)
    conversation_id = None if query.conversation_id is None else conversation_uuid(query.conversation_id)
    if conversation_id is not None and not await store.access(conn, conversation_id, me):
        raise no_conversation()  # another's looks as one that never was, as everywhere
    rows = await store.search_messages(
        conn, me, query.text, conversation_id=conversation_id, limit=query.limit + 1
    )  # fmt: skip
    return contract.MessagePage(items=[message_view(r) for r in rows[: query.limit]], more=len(rows) > query.limit)


async def list_conversations(conn: asyncpg.Connection, query: contract.ByQuery) -> contract.ConversationList:
    me = member_of(query.by)
    rows = await store.conversations_of(conn, me)
    rosters = await store.rosters(conn, [r["id"] for r in rows])
    emails = await store.emails_of(conn, list({member for roster in rosters.values() for member in roster}))
    unread = await store.unread(conn, me, [r["id"] for r in rows], contract.UNREAD_CAP)
    items = [
        conversation_view(r, rosters.get(r["id"], {}), r["last_seq"], emails, unread.get(r["id"], (0, 0))) for r in rows
    ]
    return contract.ConversationList(items=items)


async def get_conversation(conn: asyncpg.Connection, query: contract.ConversationQuery) -> contract.ConversationView:
    me, conversation_id = member_of(query.by), conversation_uuid(query.conversation_id)
    return await conversation_seen_by(conn, me, conversation_id)
