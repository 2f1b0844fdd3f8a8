"""What every messaging use case shares: who asks, refusals, finding a conversation."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected
from fog_messaging.views import conversation_view
from fog_shared.commands import messaging as contract
from fog_shared.commands.auth import Principal
from fog_shared.commands.common import Refusal

SOURCE = "fog/messaging"


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


def conversation_uuid(conversation_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(conversation_id)
    except ValueError:
        raise MessagingError("not_found", "no such conversation") from None


def no_conversation() -> MessagingError:
    return MessagingError("not_found", "no such conversation")


async def locked(conn: asyncpg.Connection, conversation_id: uuid.UUID) -> Any:
    conv = await store.conversation(conn, conversation_id, lock=True)
    if conv is None:
        raise no_conversation()
    return conv


async def conversation_seen_by(
    conn: asyncpg.Connection, me: str, conversation_id: uuid.UUID
) -> contract.ConversationView:
    periods = await store.access(conn, conversation_id, me)
    conv = await store.conversation(conn, conversation_id)
    if conv is None or not periods:
        raise no_conversation()
    readable = domain.readable_up_to(periods, conv["last_seq"])
    roster = await store.members(conn, conversation_id)
    unread = await store.unread(conn, me, [conversation_id], contract.UNREAD_CAP)
    emails = await store.emails_of(conn, list(roster))
    return conversation_view(conv, roster, readable, emails, unread.get(conversation_id, (0, 0)))
