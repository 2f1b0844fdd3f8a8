"""Receipts: delivered and read marks, per member."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected
from fog_messaging.service.common import (
    SOURCE,
    conversation_uuid,
    member_of,
    no_conversation,
    refusal,
)
from fog_messaging.views import receipt_view
from fog_shared.commands import messaging as contract
from fog_shared.events.messaging import (
    ReceiptRecorded,
)
from fog_shared.pg import outbox

# -- receipts ---------------------------------------------------------------------------------


async def record_receipt(
    conn: asyncpg.Connection, command: contract.ReceiptCommand, *, now: datetime
) -> contract.ReceiptView:
    """Move the caller's delivered or read mark forward; a mark that would not move changes nothing."""
    me, conversation_id, asked = member_of(command.by), conversation_uuid(command.conversation_id), command.receipt
    async with conn.transaction():
        conv = await store.conversation(conn, conversation_id)
        periods = await store.access(conn, conversation_id, me)
        if conv is None or not periods:
            raise no_conversation()
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
    me, conversation_id = member_of(query.by), conversation_uuid(query.conversation_id)
    if not await store.access(conn, conversation_id, me):
        raise no_conversation()
    recorded = {r["member_id"]: domain.Receipt(r["delivered_seq"], r["read_seq"]) for r in await store.receipts(
        conn, conversation_id)}  # fmt: skip
    members = await store.members(conn, conversation_id)
    return contract.ReceiptList(
        items=[receipt_view(member, recorded.get(member, domain.Receipt())) for member in sorted(members)]
    )
